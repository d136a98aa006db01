#pragma once
// The backbone parity tests' reference (test_backbone.cpp, test_resnet.cpp): the seeded torchvision
// weights and outputs that scripts/torchvision_reference.py writes, and the comparison with them.
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cspn/core/io/weights.hpp"
#include "cspn/core/model/backbone.hpp"
#include "common.hpp"
#include "tensor_exchange.hpp"

namespace cspn::test {

// Runs scripts/torchvision_reference.py, which writes weights.pth, weights.safetensors and
// io.safetensors into `dir`; returns its exit status.
inline int make_reference(const std::string& arch, const std::filesystem::path& dir) {
  const auto script = std::filesystem::path(kSourceDir) / "scripts" / "torchvision_reference.py";
  const std::string cmd = std::string(kReferencePython) + " " + script.string() + " --arch " + arch +
                          " --out " + dir.string();
  return std::system(cmd.c_str());
}

inline std::map<std::string, torch::Tensor> by_name(const cspn::StateDict& sd) {
  return {sd.begin(), sd.end()};
}

inline double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  return (a - b).abs().max().item<double>();
}

// The four levels of `net` on the reference input against torchvision's ("c2".."c5"), within 1e-4
// of each level's largest value.
inline void expect_reference_levels(cspn::BackboneImpl& net, const std::map<std::string, torch::Tensor>& io) {
  net.eval();
  torch::NoGradGuard no_grad;
  const auto features = net.features(io.at("input"));
  ASSERT_EQ(features.size(), 4u);
  for (int l = 0; l < 4; ++l) {
    const auto& ref = io.at("c" + std::to_string(l + 2));
    EXPECT_EQ(features[l].size(1), net.channels()[l]);
    EXPECT_LE(max_abs_diff(features[l], ref), 1e-4 * std::max(1.0, ref.abs().max().item<double>())) << "level " << l;
  }
}

}  // namespace cspn::test

#define REQUIRE_TORCHVISION() CSPN_REQUIRE_TORCHVISION()
