// Tests src/core/model/losses.cpp: heatmap losses against naive loops and hand-computed values.
#include <cmath>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cspn/core/model/losses.hpp"

namespace {

// [B,K,h,w] maps whose per-landmark MSE against zeros is exactly loss[b][k] (constant maps of
// value sqrt(loss)).
torch::Tensor maps_with_losses(const std::vector<std::vector<float>>& loss, int64_t h = 3,
                               int64_t w = 4) {
  const auto b = static_cast<int64_t>(loss.size()), k = static_cast<int64_t>(loss[0].size());
  auto values = torch::empty({b, k});
  for (int64_t i = 0; i < b; ++i)
    for (int64_t j = 0; j < k; ++j) values[i][j] = std::sqrt(loss[i][j]);
  return values.view({b, k, 1, 1}).expand({b, k, h, w}).contiguous();
}

}  // namespace

TEST(Losses, LandmarkL2MatchesLoops) {
  const auto pred = torch::randn({2, 3, 4, 5}, torch::kFloat64);
  const auto target = torch::randn({2, 3, 4, 5}, torch::kFloat64);
  const auto got = cspn::landmark_l2(pred, target);
  ASSERT_EQ(got.sizes(), (std::vector<int64_t>{2, 3}));
  auto p = pred.accessor<double, 4>();
  auto t = target.accessor<double, 4>();
  for (int b = 0; b < 2; ++b)
    for (int k = 0; k < 3; ++k) {
      double sum = 0;
      for (int y = 0; y < 4; ++y)
        for (int x = 0; x < 5; ++x) sum += (p[b][k][y][x] - t[b][k][y][x]) * (p[b][k][y][x] - t[b][k][y][x]);
      EXPECT_NEAR(got[b][k].item<double>(), sum / 20.0, 1e-12);
    }
}

TEST(Losses, HeatmapL2AveragesPresentLandmarksOnly) {
  const auto pred = maps_with_losses({{1, 4, 100}, {9, 16, 100}});
  const auto target = torch::zeros_like(pred);
  const auto weight = torch::tensor({{1.f, 1.f, 0.f}, {1.f, 1.f, 0.f}});  // the 100s are absent
  EXPECT_NEAR(cspn::heatmap_l2(pred, target, weight).item<float>(), (1 + 4 + 9 + 16) / 4.0, 1e-5);
  // No present landmark: zero, and still differentiable.
  auto p = pred.clone().requires_grad_();
  auto none = cspn::heatmap_l2(p, target, torch::zeros({2, 3}));
  EXPECT_EQ(none.item<float>(), 0.f);
  none.backward();
  EXPECT_EQ(p.grad().abs().sum().item<float>(), 0.f);
}

TEST(Losses, OhkmPicksTheHardestPresentLandmarks) {
  // Sample 0: landmark 4 (loss 25) absent -> top 2 are 16 and 9. Sample 1: one present landmark
  // (4). Sample 2: none present, left out of the batch mean.
  const auto pred = maps_with_losses({{1, 9, 4, 16, 25}, {1, 9, 4, 16, 25}, {1, 1, 1, 1, 1}})
                        .requires_grad_();
  const auto target = torch::zeros_like(pred);
  const auto weight = torch::tensor({{1.f, 1.f, 1.f, 1.f, 0.f},
                                     {0.f, 0.f, 1.f, 0.f, 0.f},
                                     {0.f, 0.f, 0.f, 0.f, 0.f}});
  auto loss = cspn::ohkm_l2(pred, target, weight, /*top_k=*/2);
  EXPECT_NEAR(loss.item<float>(), ((16 + 9) / 2.0 + 4) / 2.0, 1e-5);

  // Exactly the chosen landmarks receive gradient.
  loss.backward();
  const auto has_grad = (pred.grad().abs().sum({2, 3}) > 0).to(torch::kFloat);
  const auto expected = torch::tensor({{0.f, 1.f, 0.f, 1.f, 0.f},
                                       {0.f, 0.f, 1.f, 0.f, 0.f},
                                       {0.f, 0.f, 0.f, 0.f, 0.f}});
  EXPECT_TRUE(torch::equal(has_grad, expected)) << has_grad;
}

TEST(Losses, OhkmWithLargeTopKIsTheMeanOverPresent) {
  const auto pred = torch::rand({3, 4, 5, 6});
  const auto target = torch::rand({3, 4, 5, 6});
  const auto weight = torch::ones({3, 4});
  const auto per = cspn::landmark_l2(pred, target);
  EXPECT_NEAR(cspn::ohkm_l2(pred, target, weight, 4).item<float>(), per.mean().item<float>(), 1e-6);
  EXPECT_NEAR(cspn::ohkm_l2(pred, target, weight, 10).item<float>(), per.mean().item<float>(), 1e-6);
  // top_k = 1: mean over samples of each sample's largest loss.
  EXPECT_NEAR(cspn::ohkm_l2(pred, target, weight, 1).item<float>(),
              std::get<0>(per.max(1)).mean().item<float>(), 1e-6);
}

TEST(Losses, CspnLossCombinesStages) {
  // K = 2, target zero (so widening changes nothing). GlobalNet levels lose 1 each (4 levels),
  // stage 1 loses 4, stage 2's hardest landmark loses 9 (the other 1).
  cspn::CSPNOutput out;
  for (int l = 0; l < 4; ++l) out.global.push_back(maps_with_losses({{1, 1}}));
  out.stages.push_back(maps_with_losses({{4, 4}}));
  out.stages.push_back(maps_with_losses({{9, 1}}));
  const auto target = torch::zeros_like(out.stages[0]);
  cspn::LossConfig cfg;
  cfg.ohkm_topk = 1;
  cfg.global_weight = 0.5f;
  const auto parts = cspn::cspn_loss(out, {target}, torch::ones({1, 2}), cfg, 2.0);
  EXPECT_NEAR(parts.global, 4.0, 1e-5);
  ASSERT_EQ(parts.stages.size(), 2u);
  EXPECT_NEAR(parts.stages[0], 4.0, 1e-5);
  EXPECT_NEAR(parts.stages[1], 9.0, 1e-5);
  EXPECT_NEAR(parts.total.item<float>(), 0.5 * 4 + 4 + 9, 1e-5);
  // In eval mode there are no GlobalNet heatmaps: the answers alone.
  out.global.clear();
  EXPECT_NEAR(cspn::cspn_loss(out, {target}, torch::ones({1, 2}), cfg, 2.0).total.item<float>(), 4 + 9, 1e-5);
}

TEST(Losses, EachOutputLearnsTheTargetOfItsSize) {
  // Stage 1 answers at 4x4, stage 2 at 8x8 (refine_stride 2): each is scored against the zero
  // target of its own size, in whichever order the targets come.
  cspn::CSPNOutput out;
  out.stages = {torch::rand({1, 2, 4, 4}), torch::rand({1, 2, 8, 8})};
  cspn::LossConfig cfg;
  cfg.ohkm_topk = 2;
  const auto expected = [&](int s) { return cspn::landmark_l2(out.stages[s], torch::zeros_like(out.stages[s])).mean().item<double>(); };
  for (const auto& targets : {std::vector<torch::Tensor>{torch::zeros({1, 2, 4, 4}), torch::zeros({1, 2, 8, 8})},
                              std::vector<torch::Tensor>{torch::zeros({1, 2, 8, 8}), torch::zeros({1, 2, 4, 4})}}) {
    const auto parts = cspn::cspn_loss(out, targets, torch::ones({1, 2}), cfg, 2.0);
    EXPECT_NEAR(parts.stages[0], expected(0), 1e-6);
    EXPECT_NEAR(parts.stages[1], expected(1), 1e-6);
  }
  EXPECT_THROW(cspn::cspn_loss(out, {torch::zeros({1, 2, 4, 4})}, torch::ones({1, 2}), cfg, 2.0), std::invalid_argument);
}

TEST(Losses, EveryStageAnswerGetsAGradient) {
  cspn::CSPNOutput out;
  for (int s = 0; s < 4; ++s) out.stages.push_back(torch::rand({2, 8, 4, 4}).requires_grad_(true));
  const auto target = torch::zeros({2, 8, 4, 4});
  cspn::cspn_loss(out, {target}, torch::ones({2, 8}), cspn::LossConfig{}, 2.0).total.backward();
  for (int s = 0; s < 4; ++s) {
    ASSERT_TRUE(out.stages[s].grad().defined()) << "stage " << s + 1;
    // Stage 1 (L2) moves all 8 landmarks; later stages (OHKM, top 4) exactly 4 per sample.
    const auto moved = (out.stages[s].grad().abs().sum({2, 3}) > 0).sum(1);
    EXPECT_TRUE(torch::equal(moved, torch::full({2}, s == 0 ? 8 : 4, torch::kLong))) << "stage " << s + 1;
  }
}

// [1,1,h,w] Gaussian of sigma around (cx, cy), peak 1.
torch::Tensor gaussian_map(double sigma, double cx, double cy, int64_t h = 41, int64_t w = 45) {
  const auto y = torch::arange(h, torch::kDouble).view({h, 1}), x = torch::arange(w, torch::kDouble).view({1, w});
  return torch::exp(-((x - cx) * (x - cx) + (y - cy) * (y - cy)) / (2 * sigma * sigma)).view({1, 1, h, w});
}

TEST(Losses, WidenedTargetsAreWiderGaussiansWithPeakOne) {
  const auto target = gaussian_map(2.0, 21.3, 19.6);
  const auto wide = cspn::widen_targets(target, 2.0, 1.5);  // sqrt(2^2 + 1.5^2) = 2.5
  EXPECT_LT((wide - gaussian_map(2.5, 21.3, 19.6)).abs().max().item<double>(), 2e-3);
  EXPECT_TRUE(torch::equal(cspn::widen_targets(target, 2.0, 0.0), target));
  EXPECT_THROW(cspn::widen_targets(target.view({1, 41, 45}), 2.0, 1.0), std::invalid_argument);
}

TEST(Losses, CoarseToFineHoldsEarlierStagesToWiderTargets) {
  // Two stages whose answers both equal the sharp target: with coarse_to_fine the first stage is
  // scored against a wider one (loss > 0), the last against the target itself (loss 0).
  const auto target = gaussian_map(2.0, 20, 20).expand({1, 2, 41, 45}).contiguous().to(torch::kFloat);
  cspn::CSPNOutput out;
  out.stages = {target, target};
  cspn::LossConfig cfg;
  cfg.coarse_to_fine = 1.0f;
  const auto parts = cspn::cspn_loss(out, {target}, torch::ones({1, 2}), cfg, 2.0);
  const auto expected = cspn::landmark_l2(target, cspn::widen_targets(target, 2.0, 1.0)).mean().item<double>();
  EXPECT_NEAR(parts.stages[0], expected, 1e-6);
  EXPECT_GT(parts.stages[0], 1e-4);
  EXPECT_NEAR(parts.stages[1], 0.0, 1e-9);
}

TEST(Losses, SameStrideStagesLearnNarrowerGaussians) {
  // Three stages at one stride, then one at a finer stride: with same_stride_sigma 0.8 the second
  // and third learn Gaussians of 1.6 and 1.28 px, the fourth (first at its stride) of sigma again.
  const double sigma = 2.0;
  const auto coarse = gaussian_map(sigma, 20.4, 18.7).to(torch::kFloat);
  const auto fine = gaussian_map(sigma, 41.3, 37.9, 82, 90).to(torch::kFloat);
  cspn::LossConfig cfg;
  cfg.same_stride_sigma = 0.8f;
  cfg.ohkm_topk = 1;
  cspn::CSPNOutput out;
  const auto narrow = [&](double s) { return gaussian_map(s, 20.4, 18.7).to(torch::kFloat); };
  out.stages = {narrow(1.6), narrow(1.6), narrow(1.28), fine};
  const auto parts = cspn::cspn_loss(out, {coarse, fine}, torch::ones({1, 1}), cfg, sigma);
  EXPECT_NEAR(parts.stages[0], cspn::landmark_l2(narrow(1.6), coarse).item<double>(), 1e-7);
  EXPECT_GT(parts.stages[0], 1e-4);
  for (int s = 1; s < 4; ++s) EXPECT_NEAR(parts.stages[s], 0.0, 1e-9) << "stage " << s + 1;
}

TEST(Losses, RejectBadShapes) {
  const auto a = torch::zeros({2, 3, 4, 4});
  EXPECT_THROW(cspn::landmark_l2(a, torch::zeros({2, 3, 4, 5})), std::invalid_argument);
  EXPECT_THROW(cspn::heatmap_l2(a, a, torch::ones({2, 4})), std::invalid_argument);
  EXPECT_THROW(cspn::ohkm_l2(a, a, torch::ones({2, 3}), 0), std::invalid_argument);
  EXPECT_THROW(cspn::cspn_loss(cspn::CSPNOutput{}, {a}, torch::ones({2, 3}), cspn::LossConfig{}, 2.0),
               std::invalid_argument);
}
