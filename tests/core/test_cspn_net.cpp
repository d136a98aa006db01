// Tests src/core/model/cspn_net.cpp: CSPNNet shapes, gradient flow and parameter names, and the
// same forward and backward pass on CUDA as on the CPU.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cspn/core/io/weights.hpp"
#include "cspn/core/model/cspn_net.hpp"
#include "cspn/core/model/losses.hpp"
#include "cspn/core/model/resnet.hpp"
#include "cspn_config.hpp"
#include "cuda.hpp"

namespace {

using cspn::test::kLandmarks;
using cspn::test::max_diff;
using cspn::test::small_config;

// Zeroes the last conv of stage i's correction head (0-based, i > 0): the stage then hands on the
// previous answer, upsampled where it answers at a finer stride.
void zero_correction(cspn::CSPNNet& net, int i) {
  torch::NoGradGuard no_grad;
  for (auto& p : net->stage(i).named_parameters())
    if (p.key().rfind("head.3.", 0) == 0) p.value().zero_();
}

// stage [B,K,h,w] -> [B,K,size], bilinear, pixel centres kept (align_corners false).
torch::Tensor upsampled(const torch::Tensor& stage, std::vector<int64_t> size) {
  return torch::nn::functional::interpolate(
      stage, torch::nn::functional::InterpolateFuncOptions().size(size).mode(torch::kBilinear).align_corners(false));
}

// In training mode, every parameter that inference uses gets a gradient from the last answer.
void expect_every_parameter_learns(cspn::CSPNNet& net, const torch::Tensor& x) {
  net->train();
  net->forward(x).stages.back().pow(2).sum().backward();
  for (const auto& p : net->named_parameters()) {
    if (!cspn::CSPNNetImpl::training_only(p.key())) {
      EXPECT_TRUE(p.value().grad().defined()) << p.key() << " has no gradient";
    }
  }
}

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

}  // namespace

TEST(CSPNNet, OutputShapesForEveryStageCountAndTwoInputSizes) {
  torch::NoGradGuard no_grad;
  for (int stages = 1; stages <= 4; ++stages) {
    cspn::CSPNNet net(small_config(stages), kLandmarks);
    net->eval();
    EXPECT_EQ(net->num_stages(), stages);
    for (auto [h, w] : {std::pair<int64_t, int64_t>{64, 32}, {128, 96}}) {
      const auto out = net->forward(torch::randn({2, 3, h, w}));
      ASSERT_EQ(out.stages.size(), static_cast<size_t>(stages));
      for (int s = 0; s < stages; ++s) {
        const int stride = s == 0 ? 4 : s == 1 ? 2 : 1;  // refine_stride's default: each stage halves the stride to 1
        EXPECT_EQ(net->stage_stride(s), stride);
        EXPECT_EQ(out.stages[s].sizes(), (std::vector<int64_t>{2, kLandmarks, h / stride, w / stride}));
      }
      EXPECT_TRUE(out.global.empty()) << "the GlobalNet heads run only in training";
    }
    net->train();
    torch::GradMode::set_enabled(true);
    const auto out = net->forward(torch::randn({2, 3, 64, 32}));
    torch::GradMode::set_enabled(false);
    ASSERT_EQ(out.global.size(), 4u);
    for (const auto& g : out.global) EXPECT_EQ(g.sizes(), (std::vector<int64_t>{2, kLandmarks, 16, 8}));
  }
}

TEST(CSPNNet, StrideTwoStagesAnswerOnFinerMapsStartingFromTheUpsampledAnswer) {
  auto cfg = small_config(3);
  cfg.refine_stride = 2;
  cspn::CSPNNet net(cfg, kLandmarks);
  EXPECT_EQ(net->stage_stride(0), 4);
  EXPECT_EQ(net->stage_stride(2), 2);
  const auto x = torch::randn({2, 3, 64, 32});
  {
    torch::NoGradGuard no_grad;
    net->eval();
    const auto out = net->forward(x);
    ASSERT_EQ(out.stages.size(), 3u);
    EXPECT_EQ(out.stages[0].sizes(), (std::vector<int64_t>{2, kLandmarks, 16, 8}));
    for (int s = 1; s < 3; ++s) EXPECT_EQ(out.stages[s].sizes(), (std::vector<int64_t>{2, kLandmarks, 32, 16}));
    // With their correction heads at zero, stage 2 hands on stage 1's answer upsampled (bilinear, pixel
    // centres kept) and stage 3 stage 2's unchanged.
    for (int s = 1; s < net->num_stages(); ++s) zero_correction(net, s);
    const auto zeroed = net->forward(x);
    EXPECT_TRUE(torch::allclose(zeroed.stages[1], upsampled(zeroed.stages[0], {32, 16}), 1e-5, 1e-6));
    EXPECT_TRUE(torch::equal(zeroed.stages[2], zeroed.stages[1]));
  }
  // Every parameter, the stem included, takes part and gets a gradient from the last answer.
  expect_every_parameter_learns(net, x);
  EXPECT_TRUE(net->named_parameters().contains("stage2.stem.0.weight"));
  EXPECT_FALSE(net->named_parameters().contains("stage3.stem.0.weight")) << "the stem is computed once";
}

// refine_stride 1: each later stage halves the stride before it, down to the input's pixels
// (4, 2, 1, 1); the first stage at a stride builds that stride's stem, the next one reuses it.
TEST(CSPNNet, StrideOneStagesHalveTheStrideDownToTheInputPixels) {
  auto cfg = small_config(4);
  cfg.refine_stride = 1;
  cspn::CSPNNet net(cfg, kLandmarks);
  const std::vector<int> strides{4, 2, 1, 1};
  for (int s = 0; s < 4; ++s) {
    EXPECT_EQ(net->stage_stride(s), strides[s]);
    EXPECT_EQ(cfg.stage_stride(s), strides[s]);
  }
  const auto x = torch::randn({2, 3, 64, 32});
  {
    torch::NoGradGuard no_grad;
    net->eval();
    for (int s = 1; s < net->num_stages(); ++s) zero_correction(net, s);
    const auto out = net->forward(x);
    for (int s = 0; s < 4; ++s)
      EXPECT_EQ(out.stages[s].sizes(), (std::vector<int64_t>{2, kLandmarks, 64 / strides[s], 32 / strides[s]}));
    // Zeroed heads: stage 3 hands on stage 2's answer upsampled to the input's pixels, stage 4 stage 3's.
    EXPECT_TRUE(torch::allclose(out.stages[2], upsampled(out.stages[1], {64, 32}), 1e-5, 1e-6));
    EXPECT_TRUE(torch::equal(out.stages[3], out.stages[2]));
  }
  expect_every_parameter_learns(net, x);
  const auto params = net->named_parameters();
  EXPECT_TRUE(params.contains("stage2.stem.0.weight"));
  EXPECT_TRUE(params.contains("stage3.stem.0.weight"));
  EXPECT_FALSE(params.contains("stage4.stem.0.weight")) << "stage 4 reuses stage 3's stride-1 stem";
  EXPECT_EQ(params["stage3.stem.0.weight"].sizes(), (std::vector<int64_t>{8, 3, 3, 3}));  // 32 channels / 4, at least 8
  EXPECT_EQ(params["stage3.fine_cross.0.weight"].sizes(), (std::vector<int64_t>{8, 16, 1, 1}));  // stride-2 level in
}

TEST(CSPNNet, LaterStagesCorrectThePreviousAnswer) {
  auto cfg = small_config(3);
  cfg.refine_stride = 4;  // every stage on stage 1's maps (the stride-2 case has its own test)
  cspn::CSPNNet net(cfg, kLandmarks);
  net->train();
  const auto x = torch::randn({2, 3, 64, 64});
  // With its correction head at zero, a stage hands on the previous answer unchanged.
  {
    torch::NoGradGuard no_grad;
    zero_correction(net, 1);
    const auto out = net->forward(x);
    EXPECT_TRUE(torch::equal(out.stages[1], out.stages[0]));
    EXPECT_FALSE(torch::equal(out.stages[2], out.stages[1]));
  }
  // The answer is a sum that keeps its gradient: stage 3's loss alone trains stage 1's head too.
  net->zero_grad();
  net->forward(x).stages[2].pow(2).sum().backward();
  const auto params = net->named_parameters();
  for (const auto* key : {"stage1.head.weight", "stage1.fuse.conv1.weight", "stage2.head.3.weight"})
    EXPECT_GT(params[key].grad().abs().sum().item<double>(), 0) << key;
}

TEST(CSPNNet, StagewiseRunEqualsForward) {
  torch::NoGradGuard no_grad;
  cspn::CSPNNet net(small_config(3), kLandmarks);
  net->eval();
  const auto x = torch::randn({1, 3, 64, 64});
  const auto out = net->forward(x);
  cspn::StageOutput cur = net->trunk(x);
  for (int i = 0; i < net->num_stages(); ++i) {
    cur = net->stage_forward(i, cur);
    EXPECT_TRUE(torch::equal(cur.heatmaps, out.stages[i])) << "stage " << i + 1;
  }
  EXPECT_THROW(net->stage_forward(3, cur), std::out_of_range);
}

TEST(CSPNNet, GradientsReachEveryStage) {
  cspn::CSPNNet net(small_config(4), kLandmarks);
  net->train();
  const auto out = net->forward(torch::randn({2, 3, 64, 64}));
  cspn::LossConfig loss_cfg;
  // One target per heatmap size: stage 1's (stride 4), stage 2's (2), stages 3 and 4's (1).
  cspn::cspn_loss(out, {torch::rand_like(out.stages[0]), torch::rand_like(out.stages[1]), torch::rand_like(out.stages[3])},
                  torch::ones({2, kLandmarks}), loss_cfg, 2.0)
      .total.backward();
  // Every parameter takes part in the forward pass and gets a gradient.
  for (const auto& p : net->named_parameters())
    EXPECT_TRUE(p.value().grad().defined()) << p.key() << " has no gradient";
  for (int i = 0; i < net->num_stages(); ++i) {
    double norm = 0;
    for (const auto& p : net->stage(i).parameters()) norm += p.grad().abs().sum().item<double>();
    EXPECT_GT(norm, 0) << "stage " << i + 1;
  }
  EXPECT_GT(net->backbone->named_parameters()["conv1.weight"].grad().abs().sum().item<double>(), 0);
}

// Training runs in channels-last (cspn train, as inference does). Its loss and gradients stay within
// float32 rounding of a float64 reference, as the default layout's do (a wrong layout anywhere
// would be off by O(1)).
TEST(CSPNNet, ChannelsLastTrainingStepIsWithinRoundingOfFloat64) {
  torch::manual_seed(5);
  cspn::CSPNNet plain(small_config(3), kLandmarks), last(small_config(3), kLandmarks), exact(small_config(3), kLandmarks);
  cspn::load_state_dict(*last, cspn::state_dict(*plain));
  cspn::load_state_dict(*exact, cspn::state_dict(*plain));
  cspn::use_channels_last(*last);
  exact->to(torch::kDouble);
  const auto x = torch::randn({4, 3, 64, 96});
  // Stage 1's target (stride 4), stage 2's (2), stage 3's (1).
  const std::vector<torch::Tensor> targets{torch::rand({4, kLandmarks, 16, 24}), torch::rand({4, kLandmarks, 32, 48}),
                                           torch::rand({4, kLandmarks, 64, 96})};
  std::vector<double> losses;
  for (auto* net : {&exact, &plain, &last}) {
    (*net)->train();
    const bool in_double = net == &exact;
    auto input = in_double ? x.to(torch::kDouble) : x;
    if (net == &last) input = input.contiguous(torch::MemoryFormat::ChannelsLast);
    std::vector<torch::Tensor> t;
    for (const auto& target : targets) t.push_back(in_double ? target.to(torch::kDouble) : target);
    auto loss = cspn::cspn_loss((*net)->forward(input), t, torch::ones({4, kLandmarks}, input.options()),
                                cspn::LossConfig{}, 2.0)
                    .total;
    loss.backward();
    losses.push_back(loss.item<double>());
  }
  EXPECT_TRUE(last->backbone->named_parameters()["conv1.weight"].is_contiguous(torch::MemoryFormat::ChannelsLast));
  EXPECT_NEAR(losses[1], losses[0], 1e-5 * losses[0]);
  EXPECT_NEAR(losses[2], losses[0], 1e-5 * losses[0]);
  // Relative distance from the float64 gradients, over every parameter: float32 itself is ~1e-3 away.
  const auto reference = exact->named_parameters(), theirs = last->named_parameters();
  double truth = 0, default_error = 0, channels_last_error = 0;
  for (const auto& p : plain->named_parameters()) {
    const auto g = reference[p.key()].grad();
    truth += g.pow(2).sum().item<double>();
    default_error += (p.value().grad() - g).pow(2).sum().item<double>();
    channels_last_error += (theirs[p.key()].grad() - g).pow(2).sum().item<double>();
  }
  default_error = std::sqrt(default_error / truth);
  channels_last_error = std::sqrt(channels_last_error / truth);
  EXPECT_LT(default_error, 1e-3);  // measured 1.3e-4
  EXPECT_LT(channels_last_error, 2e-3);  // measured 5.6e-4: oneDNN and the channels-last kernels sum in other orders
}

TEST(CSPNNet, ParameterKeysFollowTorchvisionAndStageNames) {
  cspn::CSPNNet net(small_config(4), kLandmarks);
  const auto keys = cspn::state_dict(*net);
  ASSERT_FALSE(keys.empty());
  EXPECT_EQ(keys.front().first, "backbone.conv1.weight");
  // The backbone keys are exactly torchvision's resnet18 keys (minus fc) behind "backbone.".
  const auto resnet = cspn::state_dict(*cspn::ResNet(18));
  for (size_t i = 0; i < resnet.size(); ++i) EXPECT_EQ(keys[i].first, "backbone." + resnet[i].first);
  for (size_t i = resnet.size(); i < keys.size(); ++i)
    EXPECT_TRUE(starts_with(keys[i].first, "stage")) << keys[i].first;
  const std::vector<std::string> examples{"backbone.layer1.0.conv1.weight", "backbone.layer2.0.downsample.0.weight",
                                          "backbone.layer4.1.bn2.running_var", "stage1.lateral.0.0.weight",
                                          "stage1.refine.3.2.conv3.weight", "stage1.fuse.conv1.weight",
                                          "stage1.head.bias", "stage1.global_head.3.3.weight",
                                          "stage2.cross_encoder.3.1.running_mean", "stage2.cross_decoder.0.0.weight",
                                          "stage2.heatmap_in.weight",
                                          "stage4.encoder.1.downsample.0.weight", "stage4.head.3.weight"};
  for (const auto& k : examples)
    EXPECT_TRUE(std::any_of(keys.begin(), keys.end(), [&](const auto& kv) { return kv.first == k; })) << k;
  // A state dict with a "backbone." prefix loads into the backbone alone.
  const auto report = cspn::load_state_dict(*net->backbone, keys, "backbone.");
  EXPECT_TRUE(report.ok()) << report.summary();
}

TEST(CSPNNet, RejectsBadConfigAndInput) {
  EXPECT_THROW(cspn::CSPNNet(small_config(0), kLandmarks), std::invalid_argument);
  EXPECT_THROW(cspn::CSPNNet(small_config(5), kLandmarks), std::invalid_argument);
  auto cfg = small_config(1);
  cfg.backbone = "resnet42";
  EXPECT_THROW(cspn::CSPNNet(cfg, kLandmarks), std::invalid_argument);
  cspn::CSPNNet net(small_config(1), kLandmarks);
  EXPECT_THROW(net->forward(torch::zeros({1, 3, 100, 64})), std::invalid_argument);
  EXPECT_THROW(net->forward(torch::zeros({1, 1, 64, 64})), std::invalid_argument);
}

TEST(Cuda, CspnForwardBackwardMatchesCpu) {
  CSPN_REQUIRE_CUDA();
  // Full fp32 on the GPU: TF32 matrix products (Ampere and later) round to 10-bit mantissas, and
  // errors of that size compound over the cascade (measured 1e-2 on an H200).
  at::globalContext().setAllowTF32CuBLAS(false);
  at::globalContext().setAllowTF32CuDNN(false);
  torch::manual_seed(0);
  cspn::KeypointModelConfig cfg;
  cfg.backbone = "resnet18";
  cfg.stages = 4;
  cfg.input_size = {128, 96};
  cspn::CSPNNet cpu(cfg, 8), gpu(cfg, 8);
  {
    torch::NoGradGuard no_grad;
    auto src = cpu->named_parameters(), dst = gpu->named_parameters();
    for (auto& p : src) dst[p.key()].copy_(p.value());
    auto sb = cpu->named_buffers(), db = gpu->named_buffers();
    for (auto& b : sb) db[b.key()].copy_(b.value());
  }
  gpu->to(torch::kCUDA);
  const auto x = torch::randn({2, 3, 128, 96});
  const auto target = torch::rand({2, 8, 32, 24}), fine_target = torch::rand({2, 8, 64, 48});  // strides 4, 2
  const auto weight = torch::ones({2, 8});
  cspn::LossConfig lc;
  auto out_c = cpu->forward(x);
  auto out_g = gpu->forward(x.cuda());
  ASSERT_EQ(out_c.stages.size(), out_g.stages.size());
  for (size_t s = 0; s < out_c.stages.size(); ++s) EXPECT_LT(max_diff(out_c.stages[s], out_g.stages[s]), 1e-3);
  auto loss_c = cspn::cspn_loss(out_c, {target, fine_target}, weight, lc, 2.0).total;
  auto loss_g = cspn::cspn_loss(out_g, {target.cuda(), fine_target.cuda()}, weight.cuda(), lc, 2.0).total;
  EXPECT_NEAR(loss_c.item<double>(), loss_g.item<double>(), 1e-4 * std::abs(loss_c.item<double>()) + 1e-7);
  loss_c.backward();
  loss_g.backward();
  const auto gc = cpu->named_parameters()["backbone.conv1.weight"].grad();
  const auto gg = gpu->named_parameters()["backbone.conv1.weight"].grad();
  EXPECT_LT(max_diff(gc, gg), 1e-3 * gc.abs().max().item<double>() + 1e-6);
}
