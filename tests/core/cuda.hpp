#pragma once
// For the tests that run the same computation on CUDA and on the CPU, which must agree: skipped where
// no CUDA device is available (the CPU-only CI); run on a GPU machine by scripts/gpu_check.sh.
#include <gtest/gtest.h>
#include <torch/torch.h>

#define CSPN_REQUIRE_CUDA() \
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device in this build or machine"

namespace cspn::test {

// The largest difference of two tensors (on any device), in double on the CPU.
inline double max_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.cpu().to(torch::kDouble) - b.cpu().to(torch::kDouble)).abs().max().item<double>();
}

}  // namespace cspn::test
