#pragma once
// Comparing heatmaps with those of the plain network, for the app tests (test_landmark_predictor.cpp,
// test_bench_pipeline.cpp).
#include <algorithm>

#include <torch/torch.h>

namespace cspn::test {

// The largest difference of a and b, relative to the largest magnitude of b.
inline double max_relative_difference(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>() / std::max(1e-12, b.abs().max().item<double>());
}

}  // namespace cspn::test
