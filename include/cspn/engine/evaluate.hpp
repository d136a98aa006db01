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

}  // namespace cspn
