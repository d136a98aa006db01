#include "cspn/engine/evaluate.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>

#include "cspn/core/detect/ap.hpp"
#include "cspn/core/runtime.hpp"
#include "cspn/data/readers.hpp"
#include "cspn/engine/detector_ap.hpp"
#include "cspn/engine/garment_detector.hpp"
#include "cspn/engine/landmark_predictor.hpp"
#include "cspn/engine/loader.hpp"
#include "cspn/engine/mean_shape.hpp"
#include "cspn/engine/progress.hpp"

namespace cspn {

void score_jobs(const Dataset& data, const std::vector<CropJob>& jobs, const torch::Tensor& coords,
                LandmarkMetrics& metrics) {
  const int k = data.schema.num_landmarks();
  std::vector<int64_t> rows;
  for (size_t i = 0; i < jobs.size(); ++i)
    if (jobs[i].garment >= 0) rows.push_back(static_cast<int64_t>(i));
  const auto n = static_cast<int64_t>(rows.size());
  if (n == 0) return;
  auto gt = torch::empty({n, k, 2});
  auto vis = torch::empty({n, k}, torch::kInt);
  auto category = torch::empty({n}, torch::kLong);
  auto size = torch::empty({n, 2});
  auto boxes = torch::empty({n, 4});
  auto gt_a = gt.accessor<float, 3>();
  auto vis_a = vis.accessor<int, 2>();
  for (int64_t r = 0; r < n; ++r) {
    const CropJob& job = jobs[rows[r]];
    const Sample& sample = data.samples[job.sample];
    const Garment& g = sample.garments[job.garment];
    for (int j = 0; j < k; ++j) {
      gt_a[r][j][0] = g.keypoints[j].x;
      gt_a[r][j][1] = g.keypoints[j].y;
      vis_a[r][j] = static_cast<int>(g.keypoints[j].v);
    }
    category[r] = g.category;
    size[r] = torch::tensor({static_cast<float>(sample.width), static_cast<float>(sample.height)});
    boxes[r] = torch::tensor({g.box.x1, g.box.y1, g.box.x2, g.box.y2});
  }
  metrics.add(coords.index_select(0, torch::tensor(rows)), gt, vis, category, size, boxes);
}

StageMetrics::StageMetrics(const LandmarkSchema& schema, int stages) {
  if (stages < 1) throw std::invalid_argument("StageMetrics: need at least one stage, got " + std::to_string(stages));
  stages_.assign(static_cast<size_t>(stages), LandmarkMetrics(schema));
}

void StageMetrics::add(const Dataset& data, const std::vector<CropJob>& jobs,
                       const std::vector<torch::Tensor>& stage_coords) {
  if (stage_coords.size() != stages_.size())
    throw std::invalid_argument("StageMetrics::add: predictions of " + std::to_string(stage_coords.size()) +
                                " stages for a model of " + std::to_string(stages_.size()));
  for (size_t s = 0; s < stages_.size(); ++s) score_jobs(data, jobs, stage_coords[s], stages_[s]);
}

nlohmann::json StageMetrics::per_stage() const {
  nlohmann::json out = nlohmann::json::array();
  for (size_t s = 0; s < stages_.size(); ++s) {
    const auto m = stages_[s].result();
    out.push_back({{"stage", s + 1},
                   {"ne_image", {{"avg", m["ne_image"]["avg"]}}},
                   {"ne_paper", {{"avg", m["ne_paper"]["avg"]}}},
                   {"pck_0_2", m["pck_0_2"]}});
  }
  return out;
}

std::string StageMetrics::describe(const nlohmann::json& per_stage) {
  std::string text = "per stage ne_image:";
  for (const auto& s : per_stage) {
    const auto& ne = s["ne_image"]["avg"];
    char part[48];
    std::snprintf(part, sizeof part, " %s%d %.4f", text.back() == ':' ? "" : "| ", s["stage"].get<int>(),
                  ne.is_number() ? ne.get<double>() : std::nan(""));
    text += part;
  }
  return text;
}

namespace {

Box whole_image(const Sample& s) {
  return {0.0f, 0.0f, static_cast<float>(s.width), static_cast<float>(s.height)};
}

}  // namespace

EvalResult evaluate_model(const ModelFile& model, const Dataset& test, const EvalOptions& opt) {
  const torch::Device device = parse_device(opt.device);
  const Config& cfg = model.config;
  LandmarkPredictor predictor = LandmarkPredictor::from_model_file(model, device);
  StageMetrics metrics(test.schema, predictor.net()->num_stages());
  nlohmann::json facts{{"boxes", opt.boxes}};
  if (opt.boxes == "gt" || opt.boxes == "image") {
    auto jobs = CropBatcher::ground_truth_jobs(test);
    if (opt.boxes == "image")
      for (auto& job : jobs) job.box = whole_image(test.samples[job.sample]);
    CropBatcher batcher(test, jobs, cfg, false);
    Progress bar("eval", batcher.size(), "crop", opt.progress);
    const auto predictions =
        predictor.predict_jobs(batcher, [&](size_t done, size_t) { bar.update(done); }, /*all_stages=*/true);
    bar.finish();
    metrics.add(test, jobs, predictions.stage_coords);
    facts["crops"] = jobs.size();
  } else if (opt.boxes == "detector") {
    GarmentDetector detector = GarmentDetector::from_model_file(model, device);
    std::vector<std::string> names{"background"};
    for (const auto& c : test.schema.categories) names.push_back(c.name);
    detect::DetectionAP ap(names);
    long matched = 0, missed = 0, false_positives = 0, crops = 0;
    Progress bar("eval", test.samples.size(), "img", opt.progress);
    detect_dataset(detector, test, cfg, 4 * cfg.test.detector_batch_size,
                   [&](int first, const std::vector<cv::Mat>& images,
                       const std::vector<std::vector<DetectedGarment>>& detections) {
                     std::map<int, cv::Mat> decoded;
                     std::vector<CropJob> jobs;
                     for (size_t i = 0; i < images.size(); ++i) {
                       const int s = first + static_cast<int>(i);
                       const Sample& sample = test.samples[s];
                       decoded.emplace(s, images[i]);
                       add_to_ap(ap, detections[i], sample);
                       const auto match = match_detections(detections[i], sample.garments);
                       std::vector<bool> found(sample.garments.size(), false);
                       for (size_t d = 0; d < match.size(); ++d) {
                         if (match[d] < 0) {
                           ++false_positives;
                           continue;
                         }
                         found[match[d]] = true;
                         ++matched;
                         if (has_landmarks(sample.garments[match[d]]))
                           jobs.push_back({s, match[d], detections[i][d].category, detections[i][d].box});
                       }
                       // The documented rule for a missed garment: its landmarks are predicted on
                       // the whole image, as NCSPN would, so a miss costs accuracy instead of
                       // leaving the average.
                       for (size_t g = 0; g < found.size(); ++g) {
                         if (found[g]) continue;
                         ++missed;
                         if (has_landmarks(sample.garments[g]))
                           jobs.push_back({s, static_cast<int>(g), sample.garments[g].category, whole_image(sample)});
                       }
                     }
                     CropBatcher batcher(test, jobs, cfg, false, std::move(decoded));
                     metrics.add(test, jobs, predictor.predict_jobs(batcher, {}, /*all_stages=*/true).stage_coords);
                     crops += static_cast<long>(jobs.size());
                     bar.update(static_cast<size_t>(first) + images.size());
                   });
    bar.finish();
    const auto det = ap.result();
    facts.update({{"crops", crops}, {"matched", matched}, {"missed", missed}, {"false_positives", false_positives},
                  {"det_ap50", det["det_ap50"]}, {"det_ap", det["det_ap"]}, {"detection", det}});
  } else {
    throw std::invalid_argument("--boxes " + opt.boxes + ": expected gt, detector or image");
  }
  EvalResult result{metrics.last().result(), metrics.last().table()};
  result.metrics.update(facts);
  result.metrics["per_stage"] = metrics.per_stage();
  result.table += StageMetrics::describe(result.metrics["per_stage"]) + "\n";
  if (opt.boxes == "detector") {
    char line[256];
    std::snprintf(line, sizeof line,
                  "detector: AP50 %.4f, AP %.4f; %ld garments matched (IoU >= 0.5, same category), %ld missed "
                  "(scored on the whole image), %ld false positives\n",
                  metric_value(facts["det_ap50"]), metric_value(facts["det_ap"]),
                  facts["matched"].get<long>(), facts["missed"].get<long>(), facts["false_positives"].get<long>());
    result.table += line;
  }
  return result;
}

EvalResult evaluate_mean_shape(const Dataset& train, const Dataset& test) {
  MeanShape baseline(train);
  const auto jobs = CropBatcher::ground_truth_jobs(test);
  LandmarkMetrics metrics(test.schema);
  score_jobs(test, jobs, baseline.predict(jobs), metrics);
  EvalResult result{metrics.result(), metrics.table()};
  result.metrics["boxes"] = "gt";
  result.metrics["crops"] = jobs.size();
  return result;
}

}  // namespace cspn
