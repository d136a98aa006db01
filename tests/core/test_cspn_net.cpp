// CSPNNet shapes, gradient flow and parameter names; FLOP counting against hand formulas.
#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cspn/io/weights.hpp"
#include "cspn/model/batch_norm.hpp"
#include "cspn/model/cspn_net.hpp"
#include "cspn/model/info.hpp"
#include "cspn/model/losses.hpp"

namespace {

constexpr int kLandmarks = 8;

cspn::KeypointModelConfig small_config(int stages) {
  cspn::KeypointModelConfig cfg;
  cfg.backbone = "resnet18";
  cfg.stages = stages;
  cfg.channels = 32;
  return cfg;
}

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
