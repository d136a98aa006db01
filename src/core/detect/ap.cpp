#include "cspn/core/detect/ap.hpp"
#include "cspn/core/util.hpp"

#include <algorithm>
#include <limits>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <utility>

#include <torch/torch.h>

#include "cspn/core/detect/ops.hpp"

namespace cspn::detect {
namespace {

constexpr int kRecallPoints = 101;

// Labels [N] as a CPU int64 vector, checked in [1, categories).
std::vector<int64_t> checked_labels(const torch::Tensor& labels, int64_t n, size_t categories,
                                    const char* name) {
  if (!labels.defined() || labels.dim() != 1 || labels.size(0) != n)
    throw std::invalid_argument(std::string("cspn::detect::DetectionAP::add: ") + name +
                                " should be [" + std::to_string(n) + "], got " +
                                (labels.defined() ? shape_of(labels) : std::string("undefined")));
  const auto cpu = labels.to(torch::kCPU, torch::kLong).contiguous();
  std::vector<int64_t> out(cpu.data_ptr<int64_t>(), cpu.data_ptr<int64_t>() + n);
  for (int64_t l : out)
    if (l < 1 || l >= static_cast<int64_t>(categories))
      throw std::invalid_argument(std::string("cspn::detect::DetectionAP::add: ") + name +
                                  " should be in [1, " + std::to_string(categories - 1) +
                                  "], got " + std::to_string(l));
  return out;
}

torch::Tensor checked_boxes(const torch::Tensor& boxes, const char* name) {
  check_boxes("cspn::detect::DetectionAP::add", name, boxes);
  return boxes.to(torch::kCPU, torch::kDouble).contiguous();
}

}  // namespace

DetectionAP::DetectionAP(std::vector<std::string> category_names, int64_t max_detections)
    : names_(std::move(category_names)), max_detections_(max_detections) {
  if (names_.size() < 2)
    throw std::invalid_argument("cspn::detect::DetectionAP: expected the background and at least "
                                "one category name, got " + std::to_string(names_.size()));
  if (max_detections_ <= 0)
    throw std::invalid_argument("cspn::detect::DetectionAP: max_detections should be > 0, got " +
                                std::to_string(max_detections_));
  // numpy.linspace(.5, .95, 10) as COCOeval builds it: i * step + start, the last one exact.
  const double step = (0.95 - 0.5) / (kIouThresholds - 1);
  for (int i = 0; i < kIouThresholds; ++i) iou_thresholds_[i] = i * step + 0.5;
  iou_thresholds_.back() = 0.95;
  detections_.resize(names_.size());
  gt_count_.assign(names_.size(), 0);
}

void DetectionAP::add(const torch::Tensor& det_boxes, const torch::Tensor& det_scores,
                      const torch::Tensor& det_labels, const torch::Tensor& gt_boxes,
                      const torch::Tensor& gt_labels) {
  const auto db = checked_boxes(det_boxes, "det_boxes");
  const auto gb = checked_boxes(gt_boxes, "gt_boxes");
  const int64_t D = db.size(0), G = gb.size(0);
  if (!det_scores.defined() || det_scores.dim() != 1 || det_scores.size(0) != D)
    throw std::invalid_argument("cspn::detect::DetectionAP::add: det_scores should be [" +
                                std::to_string(D) + "], got " +
                                (det_scores.defined() ? shape_of(det_scores) : "undefined"));
  const auto dl = checked_labels(det_labels, D, names_.size(), "det_labels");
  const auto gl = checked_labels(gt_labels, G, names_.size(), "gt_labels");
  const auto scores = det_scores.to(torch::kCPU, torch::kDouble).contiguous();
  const double* score = scores.data_ptr<double>();
  const auto iou_t = box_iou(db, gb);  // [D,G] double
  const auto iou = iou_t.accessor<double, 2>();
  ++images_;
  for (int64_t g : gl) ++gt_count_[g];

  for (size_t c = 1; c < names_.size(); ++c) {
    std::vector<int64_t> dets, gts;
    for (int64_t d = 0; d < D; ++d)
      if (dl[d] == static_cast<int64_t>(c)) dets.push_back(d);
    for (int64_t g = 0; g < G; ++g)
      if (gl[g] == static_cast<int64_t>(c)) gts.push_back(g);
    if (dets.empty()) continue;
    std::stable_sort(dets.begin(), dets.end(),
                     [&](int64_t a, int64_t b) { return score[a] > score[b]; });
    if (static_cast<int64_t>(dets.size()) > max_detections_) dets.resize(max_detections_);
    std::vector<Scored> scored(dets.size());
    for (size_t i = 0; i < dets.size(); ++i) scored[i].score = score[dets[i]];
    for (int t = 0; t < kIouThresholds; ++t) {
      std::vector<char> taken(gts.size(), 0);
      for (size_t i = 0; i < dets.size(); ++i) {
        // The unmatched gt of highest IoU >= threshold; on equal IoU the later one (COCOeval).
        double best = std::min(iou_thresholds_[t], 1 - 1e-10);
        int64_t match = -1;
        for (size_t j = 0; j < gts.size(); ++j) {
          if (taken[j] || iou[dets[i]][gts[j]] < best) continue;
          best = iou[dets[i]][gts[j]];
          match = static_cast<int64_t>(j);
        }
        if (match >= 0) taken[match] = 1;
        scored[i].true_positive[t] = match >= 0;
      }
    }
    detections_[c].insert(detections_[c].end(), scored.begin(), scored.end());
  }
}

double DetectionAP::average_precision(size_t category, int t) const {
  std::vector<Scored> dets = detections_[category];
  // Merge the images' lists by decreasing score, ties in image order (a stable sort, as COCOeval).
  std::stable_sort(dets.begin(), dets.end(),
                   [](const Scored& a, const Scored& b) { return a.score > b.score; });
  const auto n_gt = static_cast<double>(gt_count_[category]);
  std::vector<double> recall(dets.size()), precision(dets.size());
  double tp = 0, fp = 0;
  for (size_t i = 0; i < dets.size(); ++i) {
    (dets[i].true_positive[t] ? tp : fp) += 1;
    recall[i] = tp / n_gt;
    precision[i] = tp / (tp + fp + std::numeric_limits<double>::epsilon());
  }
  // Precision envelope: the best precision at this or any higher recall.
  for (size_t i = dets.size(); i-- > 1;) precision[i - 1] = std::max(precision[i - 1], precision[i]);
  double sum = 0;
  for (int r = 0; r < kRecallPoints; ++r) {
    const double level = r * (1.0 / (kRecallPoints - 1));  // numpy.linspace(0, 1, 101)
    const auto it = std::lower_bound(recall.begin(), recall.end(), level);
    if (it == recall.end()) break;  // recall never reaches this level: precision 0 from here on
    sum += precision[it - recall.begin()];
  }
  return sum / kRecallPoints;
}

nlohmann::json DetectionAP::result() const {
  nlohmann::json per_category = nlohmann::json::object();
  double sum50 = 0, sum = 0;
  int scored = 0;
  for (size_t c = 1; c < names_.size(); ++c) {
    nlohmann::json entry = {{"gt", gt_count_[c]},
                            {"detections", detections_[c].size()},
                            {"ap50", nullptr},
                            {"ap", nullptr}};
    if (gt_count_[c] > 0) {
      double mean = 0;
      for (int t = 0; t < kIouThresholds; ++t) mean += average_precision(c, t);
      mean /= kIouThresholds;
      const double ap50 = average_precision(c, 0);
      entry["ap50"] = ap50;
      entry["ap"] = mean;
      sum50 += ap50;
      sum += mean;
      ++scored;
    }
    per_category[names_[c]] = std::move(entry);
  }
  nlohmann::json out = {{"images", images_}, {"per_category", std::move(per_category)}};
  out["det_ap50"] = scored > 0 ? nlohmann::json(sum50 / scored) : nlohmann::json(nullptr);
  out["det_ap"] = scored > 0 ? nlohmann::json(sum / scored) : nlohmann::json(nullptr);
  return out;
}

}  // namespace cspn::detect
