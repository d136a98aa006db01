// Tests src/core/io/weights.cpp: state dicts in PyTorch's order, and loading them into a module with
// a LoadReport of what was missing, unexpected or mismatched.
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cspn/core/io/weights.hpp"

TEST(LoadStateDict, ReportsMissingUnexpectedAndMismatched) {
  torch::nn::Sequential module(torch::nn::Conv2d(torch::nn::Conv2dOptions(2, 3, 1)), torch::nn::BatchNorm2d(3));
  std::vector<std::string> names;
  for (const auto& kv : cspn::state_dict(*module)) names.push_back(kv.first);
  // PyTorch's state_dict order: per module, parameters then buffers.
  EXPECT_EQ(names, (std::vector<std::string>{"0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean",
                                             "1.running_var", "1.num_batches_tracked"}));

  const auto w = torch::randn({3, 2, 1, 1}, torch::kFloat64);  // converted to float on load
  const cspn::StateDict file{{"0.weight", w},
                             {"0.bias", torch::zeros({4})},
                             {"1.bias", torch::full({3}, 0.5)},
                             {"1.running_mean", torch::ones({3})},
                             {"1.running_var", torch::full({3}, 2.0)},
                             {"1.num_batches_tracked", torch::tensor(int64_t{42})},
                             {"extra.key", torch::zeros({1})}};
  const auto report = cspn::load_state_dict(*module, file);
  EXPECT_FALSE(report.ok());
  EXPECT_EQ(report.loaded, 5u);
  EXPECT_EQ(report.missing, std::vector<std::string>{"1.weight"});
  EXPECT_EQ(report.unexpected, std::vector<std::string>{"extra.key"});
  EXPECT_EQ(report.mismatched, std::vector<std::string>{"0.bias: file [4] vs module [3]"});
  EXPECT_NE(report.summary().find("missing: 1.weight"), std::string::npos) << report.summary();
  const auto now = cspn::state_dict(*module);
  EXPECT_TRUE(torch::allclose(now[0].second, w.to(torch::kFloat32)));
  EXPECT_EQ(now[0].second.scalar_type(), torch::kFloat32);
  EXPECT_EQ(now[6].second.item<int64_t>(), 42);

  // Prefix stripping (keys without it are another part's) and skipped keys.
  cspn::StateDict prefixed;
  for (const auto& [k, t] : file)
    if (k != "0.bias") prefixed.emplace_back("net." + k, t);
  prefixed.emplace_back("other.weight", torch::zeros({9}));
  const auto ok = cspn::load_state_dict(*module, prefixed, "net.", {"0.bias", "1.weight", "extra."});
  EXPECT_TRUE(ok.ok()) << ok.summary();
  EXPECT_EQ(ok.loaded, 5u);
}
