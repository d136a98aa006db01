// The same computations on CUDA and on the CPU must agree. Skipped where no CUDA device is
// available (the CPU-only CI); run on a GPU machine by scripts/gpu_check.sh.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cspn/codec.hpp"
#include "cspn/detect/faster_rcnn.hpp"
#include "cspn/detect/ops.hpp"
#include "cspn/landmarks.hpp"
#include "cspn/model/cspn_net.hpp"
#include "cspn/model/losses.hpp"

namespace {

#define CSPN_REQUIRE_CUDA() \
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device in this build or machine"

double max_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.cpu().to(torch::kDouble) - b.cpu().to(torch::kDouble)).abs().max().item<double>();
}

}  // namespace

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

TEST(Cuda, CodecDecodeMatchesCpu) {
  CSPN_REQUIRE_CUDA();
  cspn::HeatmapCodec codec(256, 192, 4, 2.0f);
  const auto maps = torch::rand({3, 8, 64, 48});
  auto [xy_c, s_c] = codec.decode(maps);
  auto [xy_g, s_g] = codec.decode(maps.cuda());
  EXPECT_TRUE(xy_g.is_cuda());
  EXPECT_LT(max_diff(xy_c, xy_g), 1e-4);
  EXPECT_LT(max_diff(s_c, s_g), 1e-6);
}

TEST(Cuda, DetectionOpsMatchCpu) {
  CSPN_REQUIRE_CUDA();
  torch::manual_seed(1);
  const auto feat = torch::randn({2, 16, 20, 24}, torch::dtype(torch::kFloat).requires_grad(true));
  auto xy = torch::rand({40, 2}) * 300;
  auto wh = torch::rand({40, 2}) * 100 + 4;
  const auto rois = torch::cat({torch::randint(0, 2, {40, 1}).to(torch::kFloat), xy, xy + wh}, 1);
  const auto a_c = cspn::detect::roi_align(feat, rois, {7, 7}, 1.0 / 16, 2, true);
  const auto a_g = cspn::detect::roi_align(feat.cuda(), rois.cuda(), {7, 7}, 1.0 / 16, 2, true);
  EXPECT_LT(max_diff(a_c, a_g), 1e-4);
  const auto p_c = cspn::detect::roi_pool(feat, rois, {7, 7}, 1.0 / 16);
  const auto p_g = cspn::detect::roi_pool(feat.cuda(), rois.cuda(), {7, 7}, 1.0 / 16);
  EXPECT_LT(max_diff(p_c, p_g), 1e-5);
  const auto boxes = rois.slice(1, 1, 5);
  const auto scores = torch::rand({40});
  const auto keep_c = cspn::detect::nms(boxes, scores, 0.5);
  const auto keep_g = cspn::detect::nms(boxes.cuda(), scores.cuda(), 0.5);
  EXPECT_TRUE(keep_g.is_cuda());
  EXPECT_TRUE(torch::equal(keep_c, keep_g.cpu()));
  // Gradients flow on the device.
  const auto feat_g = feat.detach().cuda().requires_grad_(true);
  cspn::detect::roi_align(feat_g, rois.cuda(), {7, 7}, 1.0 / 16, 2, true).sum().backward();
  (a_c.sum()).backward();
  EXPECT_LT(max_diff(feat.grad(), feat_g.grad()), 1e-4);
}

TEST(Cuda, DetectorTrainsAndDetectsOnTheDevice) {
  CSPN_REQUIRE_CUDA();
  torch::manual_seed(2);
  cspn::DetectorModelConfig cfg;
  cfg.backbone = "resnet18";
  cspn::FasterRCNN det(cfg, 4);
  det->to(torch::kCUDA);
  det->train();
  const auto images = torch::randn({2, 3, 256, 256}, torch::kCUDA);
  std::vector<cspn::DetTarget> targets(2);
  for (auto& t : targets) {
    t.boxes = torch::tensor({{30.f, 40.f, 150.f, 200.f}}, torch::kCUDA);
    t.labels = torch::tensor({1}, torch::dtype(torch::kLong).device(torch::kCUDA));
  }
  auto losses = det->losses(images, targets);
  torch::Tensor total = torch::zeros({}, torch::kCUDA);
  for (auto& [name, value] : losses) {
    EXPECT_TRUE(value.is_cuda()) << name;
    EXPECT_TRUE(std::isfinite(value.item<double>())) << name;
    total = total + value;
  }
  total.backward();
  det->eval();
  const auto dets = det->detect(images);
  ASSERT_EQ(dets.size(), 2u);
  EXPECT_TRUE(dets[0].boxes.is_cuda() || dets[0].boxes.numel() == 0);
}
