// Tests src/core/model/info.cpp: FLOP counting against hand formulas, the landmark network's
// per-part costs and its description, and the memory estimate against what the network builds.
#include <algorithm>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cspn/core/config.hpp"
#include "cspn/core/model/cspn_net.hpp"
#include "cspn/core/model/info.hpp"
#include "cspn/core/model/resnet.hpp"
#include "cspn/core/schema.hpp"
#include "cspn_config.hpp"

using cspn::test::kLandmarks;
using cspn::test::small_config;

TEST(CountFlops, ConvolutionsMatchTheHandFormula) {
  torch::nn::Conv2d conv(torch::nn::Conv2dOptions(4, 8, 3).stride(2).padding(1));
  torch::nn::Conv2d grouped(torch::nn::Conv2dOptions(4, 6, {3, 5}).groups(2).dilation(2).bias(false));
  const auto x = torch::randn({2, 4, 17, 20});
  // 2 * Cout * Hout * Wout * (Cin/groups) * kh * kw * B, Hout = (H + 2p - d(k-1) - 1)/s + 1.
  EXPECT_EQ(cspn::count_flops([&] { conv(x); }), 2.0 * 8 * 9 * 10 * 4 * 3 * 3 * 2);
  EXPECT_EQ(cspn::count_flops([&] { grouped(x); }), 2.0 * 6 * 13 * 12 * 2 * 3 * 5 * 2);
  // With autograd recording, each convolution still counts once.
  conv->weight.requires_grad_(true);
  EXPECT_EQ(cspn::count_flops([&] { conv(x).sum().backward(); }), 2.0 * 8 * 9 * 10 * 4 * 3 * 3 * 2);
}

TEST(CountFlops, LinearAndMatmul) {
  torch::nn::Linear fc(10, 6);
  EXPECT_EQ(cspn::count_flops([&] { fc(torch::randn({4, 10})); }), 2.0 * 4 * 10 * 6);
  EXPECT_EQ(cspn::count_flops([&] { torch::matmul(torch::randn({2, 3, 4}), torch::randn({2, 4, 5})); }),
            2.0 * 2 * 3 * 4 * 5);
  // Elementwise work is not counted; a nested count also adds to the enclosing one.
  double inner = 0;
  const double outer = cspn::count_flops([&] {
    torch::relu(torch::randn({100}));
    inner = cspn::count_flops([&] { fc(torch::randn({1, 10})); });
  });
  EXPECT_EQ(inner, 2.0 * 10 * 6);
  EXPECT_EQ(outer, inner);
  EXPECT_EQ(cspn::count_flops([] {}), 0.0);
}

TEST(CountFlops, ResNet50Is8Point2GFlopsAt224) {
  cspn::BackboneOptions with_fc;
  with_fc.classifier = true;
  cspn::ResNet net(50, with_fc);
  net->eval();
  torch::NoGradGuard no_grad;
  // Known figure: 4.1 G multiply-adds for torchvision's ResNet-50 at 224x224.
  const double flops = cspn::count_flops([&] { net->forward(torch::zeros({1, 3, 224, 224})); });
  EXPECT_NEAR(flops / 8.2e9, 1.0, 0.03) << flops;
}

TEST(CspnCosts, PartsAddUpAndMatchKnownCounts) {
  auto cfg = small_config(4);
  cfg.refine_stride = 2;  // the hand counts below are of stride-2 stages
  cspn::CSPNNet net(cfg, kLandmarks);
  net->train();
  const auto costs = cspn::cspn_costs(net, 64, 64);
  EXPECT_TRUE(net->is_training());  // the mode is restored
  ASSERT_EQ(costs.size(), 5u);
  const std::vector<std::string> names{"backbone", "stage1", "stage2", "stage3", "stage4"};
  int64_t params = 0;
  double gflops = 0;
  for (size_t i = 0; i < costs.size(); ++i) {
    EXPECT_EQ(costs[i].name, names[i]);
    EXPECT_GT(costs[i].gflops, 0);
    params += costs[i].params;
    gflops += costs[i].gflops;
  }
  // torchvision resnet18: 11,689,512 parameters, 513,000 of them in fc.
  EXPECT_EQ(costs[0].params, 11689512 - 513000);
  // A cascade stage (C = 32, K = 8; its stride-2 level F = 16 wide), by hand: conv weights plus
  // BN weight and bias.
  const int64_t c = 32, k = kLandmarks, f = 16;
  const auto conv_bn = [](int64_t in, int64_t out, int64_t kernel) { return in * out * kernel * kernel + 2 * out; };
  const auto bottleneck = [&](int64_t n) { return conv_bn(n, n / 2, 1) + conv_bn(n / 2, n / 2, 3) + conv_bn(n / 2, n, 1); };
  const auto head = [&](int64_t n) { return conv_bn(n, n, 1) + (n * k * 9 + k); };  // 1x1 + BN, 3x3 -> K
  const int64_t shared = 8 * conv_bn(c, c, 1)                    // cross-stage projections (encoder, decoder)
                         + (k * c + c)                           // heatmap input projection (with bias)
                         + 4 * bottleneck(c) + 3 * conv_bn(c, c, 1)  // encoder (3 strided, projected)
                         + 4 * conv_bn(c, c, 1);                 // decoder laterals
  const int64_t fine = conv_bn(c, f, 1)                          // upsampled P2 -> F
                       + (k * f + f)                             // previous answer -> F (with bias)
                       + conv_bn(f, f, 3) + bottleneck(f)        // the stride-2 block
                       + head(f);                                // the correction head
  const int64_t stem = (3 * f * 9 + 2 * f) + conv_bn(f, f, 3);   // stage 2 computes the image's stride-2 features
  const int64_t cross = conv_bn(f, f, 1);                        // stages 3, 4 take the previous stride-2 level
  EXPECT_EQ(costs[2].params, shared + fine + stem);
  for (int s = 3; s <= 4; ++s) EXPECT_EQ(costs[s].params, shared + fine + cross) << "stage" << s;

  // Inference leaves out stage 1's 4 GlobalNet heads.
  int64_t all = 0;
  for (const auto& p : net->parameters()) all += p.numel();
  EXPECT_EQ(params, all - 4 * head(c));
  torch::NoGradGuard no_grad;
  net->eval();
  const double whole = cspn::count_flops([&] { net->forward(torch::zeros({1, 3, 64, 64})); });
  EXPECT_NEAR(gflops * 1e9, whole, whole * 1e-9);
  EXPECT_THROW(cspn::cspn_costs(net, 60, 64), std::invalid_argument);
}

TEST(CspnCosts, DescribeModelPrintsTable3Rows) {
  cspn::Config cfg;
  cfg.model.keypoints = small_config(3);
  cfg.model.keypoints.input_size = {64, 64};
  cfg.model.detector.enabled = false;
  const std::string text = cspn::describe_model(cfg, cspn::LandmarkSchema::deepfashion());
  EXPECT_NE(text.find("landmark network: resnet18, 3 stages, input 64x64, 8 landmarks (deepfashion)"), std::string::npos)
      << text;
  // The cumulative rows (stages 1..3) end with the whole inference network's parameter count.
  cspn::CSPNNet net(cfg.model.keypoints, kLandmarks);
  int64_t params = 0;
  for (const auto& part : cspn::cspn_costs(net, 64, 64)) params += part.params;
  std::istringstream lines(text.substr(text.find("\nstages")));
  std::string line, last;
  int rows = 0;
  for (std::getline(lines, line), std::getline(lines, line); std::getline(lines, line) && !line.empty();)
    last = line, ++rows;
  EXPECT_EQ(rows, 3) << text;
  std::istringstream fields(last);
  int64_t stage = 0, row_params = 0;
  fields >> stage >> row_params;
  EXPECT_EQ(stage, 3);
  EXPECT_EQ(row_params, params);
  EXPECT_EQ(text.find("detector"), std::string::npos);
  EXPECT_NE(text.find("\nmemory, at least: "), std::string::npos) << text;
}

// The memory estimate (checked before a network is built) is a lower bound on what the network
// really allocates, and close to it where the pyramid's width dominates: its weights against the
// parameters of the stages built, its feature maps against the encoder and decoder maps of the
// stages alive at the end of inference.
TEST(MemoryEstimate, BoundsWhatTheNetworkBuilds) {
  for (int64_t channels : {64, 256, 512}) {
    for (int stages : {1, 4}) {
      cspn::Config cfg;
      cfg.model.detector.enabled = false;
      cfg.model.keypoints = small_config(stages);
      cfg.model.keypoints.channels = channels;
      cfg.model.keypoints.input_size = {64, 96};
      cfg.test.batch_size = 2;
      const cspn::MemoryNeed need = cspn::estimate_memory(cfg, /*training=*/false);
      cspn::CSPNNet net(cfg.model.keypoints, kLandmarks);
      int64_t stage_params = 0;
      for (int s = 0; s < stages; ++s) stage_params += cspn::cspn_costs(net, 64, 96)[s + 1].params;
      const std::string where = std::to_string(channels) + " channels, " + std::to_string(stages) + " stages";
      EXPECT_LE(need.weights_bytes, 4.0 * stage_params) << where;
      if (channels >= 256) {
        EXPECT_GE(need.weights_bytes, 0.8 * 4.0 * stage_params) << where;
      }

      torch::NoGradGuard no_grad;
      net->eval();
      std::vector<cspn::StageOutput> outputs{net->trunk(torch::zeros({2, 3, 64, 96}))};
      for (int s = 0; s < stages; ++s) outputs.push_back(net->stage_forward(s, outputs.back()));
      int64_t maps = 0;
      for (size_t s = outputs.size() - std::min<size_t>(2, stages); s < outputs.size(); ++s)
        for (const auto* level : {&outputs[s].encoder, &outputs[s].decoder})
          for (const auto& t : *level) maps += t.numel();
      EXPECT_NEAR(need.activation_bytes, 4.0 * maps, 1e-6 * maps) << where;

      const cspn::MemoryNeed training = cspn::estimate_memory(cfg, /*training=*/true);
      EXPECT_DOUBLE_EQ(training.weights_bytes, 4 * need.weights_bytes) << where;  // + gradients, Adam's moments
    }
  }
}
