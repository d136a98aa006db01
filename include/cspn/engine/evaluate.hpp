#pragma once
// Scoring landmark predictions against a dataset's ground truth (both NE protocols, PCK, EPE).
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "cspn/engine/loader.hpp"
#include "cspn/metrics.hpp"

namespace cspn {

// Adds every job that has a ground-truth garment to `metrics`; coords [J,K,2] image pixels.
void score_jobs(const Dataset& data, const std::vector<CropJob>& jobs, const torch::Tensor& coords,
                LandmarkMetrics& metrics);

// The metrics of every stage of one model, scored on the same jobs (paper Table 3 within a model).
class StageMetrics {
 public:
  StageMetrics(const LandmarkSchema& schema, int stages);
  // stage_coords: one [J,K,2] per stage, in stage order (LandmarkPredictions::stage_coords).
  void add(const Dataset& data, const std::vector<CropJob>& jobs, const std::vector<torch::Tensor>& stage_coords);
  // The last stage's metrics: the model's answer.
  const LandmarkMetrics& last() const { return stages_.back(); }
  // [{"stage": 1, "ne_image": {"avg": ..}, "ne_paper": {"avg": ..}, "pck_0_2": ..}, ...] in stage order.
  nlohmann::json per_stage() const;
  // One line for logs and tables, e.g. "per stage ne_image: 1 0.0214 | 2 0.0202" (newline-free).
  static std::string describe(const nlohmann::json& per_stage);

 private:
  std::vector<LandmarkMetrics> stages_;
};

}  // namespace cspn
