#pragma once
// The small landmark network that the tests of CSPNNet, its costs and BatchNorm folding build
// (test_cspn_net.cpp, test_info.cpp, test_batch_norm.cpp).
#include "cspn/core/config.hpp"

namespace cspn::test {

inline constexpr int kLandmarks = 8;

inline cspn::KeypointModelConfig small_config(int stages) {
  cspn::KeypointModelConfig cfg;
  cfg.backbone = "resnet18";
  cfg.stages = stages;
  cfg.channels = 32;
  return cfg;
}

}  // namespace cspn::test
