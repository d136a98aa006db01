#include "cspn/engine/detector_ap.hpp"

#include <algorithm>

namespace cspn {
namespace {

std::vector<std::string> class_names(const LandmarkSchema& schema) {
  std::vector<std::string> names{"background"};
  for (const auto& c : schema.categories) names.push_back(c.name);
  return names;
}

}  // namespace

void add_to_ap(detect::DetectionAP& ap, const std::vector<DetectedGarment>& detections, const Sample& truth) {
  const auto d = static_cast<int64_t>(detections.size()), g = static_cast<int64_t>(truth.garments.size());
  auto det_boxes = torch::empty({d, 4}), det_scores = torch::empty({d});
  auto det_labels = torch::empty({d}, torch::kLong);
  for (int64_t i = 0; i < d; ++i) {
    const Box& b = detections[i].box;
    det_boxes[i] = torch::tensor({b.x1, b.y1, b.x2, b.y2});
    det_scores[i] = detections[i].score;
    det_labels[i] = detections[i].category + 1;
  }
  auto gt_boxes = torch::empty({g, 4});
  auto gt_labels = torch::empty({g}, torch::kLong);
  for (int64_t i = 0; i < g; ++i) {
    const Box& b = truth.garments[i].box;
    gt_boxes[i] = torch::tensor({b.x1, b.y1, b.x2, b.y2});
    gt_labels[i] = truth.garments[i].category + 1;
  }
  ap.add(det_boxes, det_scores, det_labels, gt_boxes, gt_labels);
}

nlohmann::json detector_ap(GarmentDetector& detector, const Dataset& data, const Config& cfg,
                           const std::function<void(size_t, size_t)>& progress) {
  detect::DetectionAP ap(class_names(data.schema));
  size_t done = 0;
  detect_dataset(detector, data, cfg, cfg.test.detector_batch_size * 4,
                 [&](int first, const std::vector<cv::Mat>&, const std::vector<std::vector<DetectedGarment>>& dets) {
                   for (size_t i = 0; i < dets.size(); ++i) add_to_ap(ap, dets[i], data.samples[first + i]);
                   done += dets.size();
                   if (progress) progress(done, data.samples.size());
                 });
  return ap.result();
}

std::vector<int> match_detections(const std::vector<DetectedGarment>& detections,
                                  const std::vector<Garment>& truth, float min_iou) {
  std::vector<size_t> order(detections.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return detections[a].score > detections[b].score; });
  std::vector<int> match(detections.size(), -1);
  std::vector<bool> taken(truth.size(), false);
  for (size_t d : order) {
    const Box& a = detections[d].box;
    float best = min_iou;
    for (size_t g = 0; g < truth.size(); ++g) {
      if (taken[g] || truth[g].category != detections[d].category) continue;
      const float overlap = iou(a, truth[g].box);
      if (overlap >= best) {
        best = overlap;
        match[d] = static_cast<int>(g);
      }
    }
    if (match[d] >= 0) taken[match[d]] = true;
  }
  return match;
}

}  // namespace cspn
