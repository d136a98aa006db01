// Tests src/core/model/batch_norm.cpp: folding BatchNorm into the convolutions before it.
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cspn/core/io/weights.hpp"
#include "cspn/core/model/batch_norm.hpp"
#include "cspn/core/model/cspn_net.hpp"
#include "cspn_config.hpp"

using cspn::test::kLandmarks;
using cspn::test::small_config;

// Folding BatchNorm into the convolutions before it changes the heatmaps by rounding only, for each
// backbone family and every kind of stage (strides 4, 2, 1), and reaches every BatchNorm of the net.
TEST(BatchNormFolding, KeepsEveryStagesHeatmapsAndFollowsTheDtype) {
  torch::NoGradGuard no_grad;
  for (const std::string backbone : {"resnet18", "resnet50", "mobilenet_v2"}) {
    SCOPED_TRACE(backbone);
    torch::manual_seed(5);
    auto cfg = small_config(4);
    cfg.backbone = backbone;
    cfg.input_size = {64, 32};
    cspn::CSPNNet net(cfg, kLandmarks), folded(cfg, kLandmarks);
    int batch_norms = 0;
    for (const auto& m : net->modules())  // statistics and affines far from the identity
      if (auto bn = std::dynamic_pointer_cast<cspn::BatchNormImpl>(m)) {
        ++batch_norms;
        bn->running_mean.normal_(0, 0.5);
        bn->running_var.uniform_(0.3, 3);
        bn->weight.uniform_(0.5, 1.5);
        bn->bias.normal_(0, 0.5);
      }
    cspn::load_state_dict(*folded, cspn::state_dict(*net));
    net->eval();
    folded->eval();
    EXPECT_EQ(cspn::fold_batch_norm(*folded), batch_norms);
    const auto x = torch::randn({2, 3, 64, 32});
    const auto want = net->forward(x).stages, got = folded->forward(x).stages;
    ASSERT_EQ(got.size(), want.size());
    for (size_t s = 0; s < want.size(); ++s) {
      const double scale = want[s].abs().max().item<double>();
      ASSERT_GT(scale, 0);
      EXPECT_LT((got[s] - want[s]).abs().max().item<double>() / scale, 1e-4) << "stage " << s + 1;
    }
    // The new biases are registered through their BatchNorms, so `to` converts them with the weights.
    folded->to(torch::kDouble);
    const auto in_double = folded->forward(x.to(torch::kDouble)).stages.back();
    EXPECT_LT((in_double.to(torch::kFloat) - want.back()).abs().max().item<double>() /
                  want.back().abs().max().item<double>(), 1e-4);
    folded->train();
    EXPECT_THROW(folded->forward(x.to(torch::kDouble)), c10::Error);
  }
}
