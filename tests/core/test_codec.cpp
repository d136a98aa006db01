// Tests src/core/codec.cpp: HeatmapCodec's targets against a naive per-pixel loop, encode -> decode
// round trips (argmax, quarter shift, Taylor step), the quarter shift on hand-made maps, flip
// consistency and the crop -> image affine, and the same results on CUDA.
#include <cmath>
#include <stdexcept>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cspn/core/codec.hpp"
#include "cspn/core/config.hpp"
#include "cspn/core/schema.hpp"
#include "cuda.hpp"

namespace cspn {
namespace {

using test::max_diff;

constexpr int kH = 64, kW = 48, kStride = 4;  // input 256x192, heatmap 64x48
constexpr float kSigma = 2.0f;

HeatmapCodec make_codec() { return HeatmapCodec(kH * kStride, kW * kStride, kStride, kSigma); }

// Input pixel whose heatmap coordinate is u: the inverse of u = (x + 0.5) / s - 0.5.
double to_input(double u) { return (u + 0.5) * kStride - 0.5; }

// K random points, supervised, with heatmap coordinates uniform in [lo, hi_x] x [lo, hi_y].
torch::Tensor random_keypoints(int k, double lo, double hi_x, double hi_y) {
  auto u = torch::rand({k}, torch::kFloat64) * (hi_x - lo) + lo;
  auto v = torch::rand({k}, torch::kFloat64) * (hi_y - lo) + lo;
  return torch::stack({(u + 0.5) * kStride - 0.5, (v + 0.5) * kStride - 0.5, torch::ones({k}, torch::kFloat64)}, 1)
      .to(torch::kFloat32);
}

TEST(HeatmapCodec, SizesFromConfigAndInvalidArguments) {
  KeypointModelConfig cfg;  // 256x192, stride 4
  HeatmapCodec codec(cfg);
  EXPECT_EQ(codec.heatmap_h(), 64);
  EXPECT_EQ(codec.heatmap_w(), 48);
  EXPECT_EQ(codec.input_h(), 256);
  EXPECT_EQ(codec.input_w(), 192);
  EXPECT_THROW(HeatmapCodec(256, 190, 4, 2.0f), std::invalid_argument);  // 190 not divisible by 4
  EXPECT_THROW(HeatmapCodec(256, 192, 0, 2.0f), std::invalid_argument);
  EXPECT_THROW(HeatmapCodec(256, 192, 4, 0.0f), std::invalid_argument);
  cfg.input_size = {256};
  EXPECT_THROW(HeatmapCodec{cfg}, std::invalid_argument);
}

// One codec per distinct stage stride, coarsest first, and each stage decoded by its own.
TEST(HeatmapCodec, OneCodecPerStageStride) {
  KeypointModelConfig cfg;  // 256x192
  const auto sizes = [](const std::vector<HeatmapCodec>& codecs) {
    std::vector<int> h;
    for (const auto& c : codecs) h.push_back(c.heatmap_h());
    return h;
  };
  for (const auto& [refine, stages, expected] :
       {std::tuple<int, int, std::vector<int>>{4, 4, {64}}, {2, 1, {64}}, {2, 4, {64, 128}}, {1, 2, {64, 128}},
        {1, 4, {64, 128, 256}}}) {
    cfg.refine_stride = refine;
    cfg.stages = stages;
    EXPECT_EQ(sizes(HeatmapCodec::for_network(cfg)), expected) << "refine_stride " << refine << ", " << stages << " stages";
  }
  EXPECT_EQ(HeatmapCodec::for_stage(cfg, 3).heatmap_w(), 192);  // refine_stride 1, stage 4: the input's pixels
  EXPECT_EQ(HeatmapCodec::for_stage(cfg, 1).heatmap_w(), 96);
}

TEST(HeatmapCodec, EncodeMatchesNaiveLoop) {
  const auto codec = make_codec();
  auto kp = torch::tensor({{10.3f, 20.7f, 1.0f}, {0.0f, 0.0f, 1.0f}, {191.0f, 255.0f, 1.0f}, {100.9f, 3.1f, 0.0f}});
  auto [target, weight] = codec.encode(kp);
  ASSERT_EQ(target.sizes(), torch::IntArrayRef({4, kH, kW}));
  ASSERT_EQ(weight.sizes(), torch::IntArrayRef({4}));
  EXPECT_TRUE(torch::equal(weight, torch::tensor({1.0f, 1.0f, 1.0f, 0.0f})));
  auto t = target.accessor<float, 3>();
  auto p = kp.accessor<float, 2>();
  double worst = 0;
  for (int k = 0; k < 3; ++k) {
    const double u = (p[k][0] + 0.5) / kStride - 0.5, v = (p[k][1] + 0.5) / kStride - 0.5;
    for (int y = 0; y < kH; ++y)
      for (int x = 0; x < kW; ++x) {
        const double expected = std::exp(-((x - u) * (x - u) + (y - v) * (y - v)) / (2.0 * kSigma * kSigma));
        worst = std::max(worst, std::abs(t[k][y][x] - expected));
      }
  }
  EXPECT_LT(worst, 1e-6);
  EXPECT_EQ(target[3].abs().max().item<float>(), 0.0f) << "an ignored point must have an all-zero target";
}

TEST(HeatmapCodec, RoundTripArgmaxWithinHalfPixel) {
  const auto codec = make_codec();
  // Anywhere on the heatmap area, including its outer half pixel.
  auto kp = random_keypoints(2000, -0.49, kW - 0.51, kH - 0.51);
  auto [target, weight] = codec.encode(kp);
  auto [coords, scores] = codec.decode(target.unsqueeze(0), "argmax");
  auto err = (coords[0] - kp.narrow(1, 0, 2)).abs() / kStride;  // [K,2] heatmap pixels
  EXPECT_LE(err.max().item<float>(), 0.5f + 1e-4f);
  EXPECT_TRUE((scores > 0.88f).all().item<bool>()) << "peak of a Gaussian at most half a pixel off a centre";
}

TEST(HeatmapCodec, RoundTripQuarterWithinQuarterPixelAndBetterThanArgmax) {
  const auto codec = make_codec();
  // The shift needs both neighbours, so keep the points off the outermost pixels.
  auto kp = random_keypoints(2000, 1.0, kW - 2.0, kH - 2.0);
  auto [target, weight] = codec.encode(kp);
  auto quarter = codec.decode(target.unsqueeze(0), "quarter").first[0];
  auto argmax = codec.decode(target.unsqueeze(0), "argmax").first[0];
  auto xy = kp.narrow(1, 0, 2);
  auto err_q = (quarter - xy).abs() / kStride, err_a = (argmax - xy).abs() / kStride;
  EXPECT_LE(err_q.max().item<float>(), 0.25f + 1e-4f);
  // Offsets uniform in [-0.5, 0.5]: the mean error is 0.125 with the shift, 0.25 without.
  EXPECT_NEAR(err_q.mean().item<float>(), 0.125f, 0.01f);
  EXPECT_NEAR(err_a.mean().item<float>(), 0.25f, 0.01f);
}

TEST(HeatmapCodec, RoundTripTaylorIsNearlyExact) {
  const auto codec = make_codec();
  // The log of a Gaussian is a quadratic: one step lands on its centre, wherever the argmax has
  // neighbours on every side.
  auto kp = random_keypoints(2000, 1.0, kW - 2.0, kH - 2.0);
  auto [target, weight] = codec.encode(kp);
  auto taylor = codec.decode(target.unsqueeze(0), "taylor").first[0];
  auto err = (taylor - kp.narrow(1, 0, 2)).abs() / kStride;
  EXPECT_LE(err.max().item<float>(), 1e-3f);
  // On the outermost pixels there is no neighbour on one side and the argmax stands.
  auto edge = random_keypoints(2000, -0.49, kW - 0.51, kH - 0.51);
  auto edge_target = codec.encode(edge).first.unsqueeze(0);
  auto edge_err = (codec.decode(edge_target, "taylor").first[0] - edge.narrow(1, 0, 2)).abs() / kStride;
  EXPECT_LE(edge_err.max().item<float>(), 0.5f + 1e-4f);
}

TEST(HeatmapCodec, TaylorFindsAnyGaussianAndBeatsQuarterUnderNoise) {
  const auto codec = make_codec();
  torch::manual_seed(3);
  auto kp = random_keypoints(1000, 4.0, kW - 5.0, kH - 5.0);
  auto xy = kp.narrow(1, 0, 2);
  // A network's map: a lower, wider peak than the target's, then with noise on top.
  auto wide = (0.7 * HeatmapCodec(kH * kStride, kW * kStride, kStride, 1.5f * kSigma).encode(kp).first).unsqueeze(0);
  auto err = [&](const torch::Tensor& maps, const char* mode) {
    return (codec.decode(maps, mode).first[0] - xy).square().sum(1).sqrt() / kStride;  // [K] heatmap px
  };
  EXPECT_LE(err(wide, "taylor").max().item<float>(), 1e-3f);
  auto noisy = wide + 0.01 * torch::randn_like(wide);
  const float taylor = err(noisy, "taylor").mean().item<float>(), quarter = err(noisy, "quarter").mean().item<float>();
  EXPECT_LT(taylor, 0.8f * quarter) << "taylor " << taylor << " quarter " << quarter << " (heatmap px)";
}

TEST(HeatmapCodec, TaylorLeavesAFlatMapOnItsArgmax) {
  const auto codec = make_codec();
  // No peak to step to: a constant map and a map with one positive pixel on a negative floor.
  auto hm = torch::zeros({1, 2, kH, kW});
  hm[0][1].fill_(-0.1);
  hm[0][1][9][11] = 0.5f;
  auto coords = codec.decode(hm, "taylor").first[0];
  EXPECT_TRUE(torch::isfinite(coords).all().item<bool>());
  EXPECT_FLOAT_EQ(coords[0][0].item<float>(), static_cast<float>(to_input(0.0)));
  EXPECT_NEAR(coords[1][0].item<float>(), to_input(11.0), 1e-3);
  EXPECT_NEAR(coords[1][1].item<float>(), to_input(9.0), 1e-3);
}

TEST(HeatmapCodec, IntegerCentredPointsDecodeExactly) {
  const auto codec = make_codec();
  std::vector<float> rows;
  for (auto [j, i] : std::vector<std::pair<int, int>>{{0, 0}, {5, 7}, {kW - 1, kH - 1}, {1, kH - 2}, {30, 40}})
    rows.insert(rows.end(), {static_cast<float>(to_input(j)), static_cast<float>(to_input(i)), 1.0f});
  auto kp = torch::tensor(rows).view({-1, 3});
  auto [target, weight] = codec.encode(kp);
  for (const char* mode : {"argmax", "quarter"}) {
    auto [coords, scores] = codec.decode(target.unsqueeze(0), mode);
    EXPECT_TRUE(torch::equal(coords[0], kp.narrow(1, 0, 2))) << mode << ": " << coords[0] << " vs " << kp;
    EXPECT_TRUE(torch::equal(scores[0], torch::ones({kp.size(0)}))) << mode;
  }
}

TEST(HeatmapCodec, QuarterShiftOnHandMadeMaps) {
  const auto codec = make_codec();
  auto hm = torch::zeros({1, 3, kH, kW});
  // Map 0: peak at (x=5, y=3); right neighbour above left, upper neighbour above lower -> (5.25, 2.75).
  hm[0][0][3][5] = 1.0f;
  hm[0][0][3][6] = 0.5f;
  hm[0][0][3][4] = 0.2f;
  hm[0][0][2][5] = 0.6f;
  hm[0][0][4][5] = 0.1f;
  // Map 1: peak on the left border (x=0) with a higher right neighbour: x cannot shift, y (=10)
  // has equal neighbours and stays.
  hm[0][1][10][0] = 1.0f;
  hm[0][1][10][1] = 0.9f;
  hm[0][1][9][0] = 0.3f;
  hm[0][1][11][0] = 0.3f;
  // Map 2: peak on the bottom-right corner: no shift at all.
  hm[0][2][kH - 1][kW - 1] = 0.7f;
  hm[0][2][kH - 2][kW - 1] = 0.6f;
  auto [coords, scores] = codec.decode(hm, "quarter");
  auto expected = torch::tensor({{to_input(5.25), to_input(2.75)},
                                 {to_input(0.0), to_input(10.0)},
                                 {to_input(kW - 1.0), to_input(kH - 1.0)}},
                                torch::kFloat32);
  EXPECT_TRUE(torch::allclose(coords[0], expected, 0, 1e-5)) << coords[0] << "\nexpected\n" << expected;
  EXPECT_TRUE(torch::allclose(scores[0], torch::tensor({1.0f, 1.0f, 0.7f})));
  auto [plain, unused] = codec.decode(hm, "argmax");
  EXPECT_FLOAT_EQ(plain[0][0][0].item<float>(), static_cast<float>(to_input(5.0)));
  EXPECT_FLOAT_EQ(plain[0][0][1].item<float>(), static_cast<float>(to_input(3.0)));
}

TEST(HeatmapCodec, DecodeIsBatched) {
  const auto codec = make_codec();
  auto kp = random_keypoints(2 * 8, 1.0, kW - 2.0, kH - 2.0).view({2, 8, 3});
  auto [target, weight] = codec.encode(kp);  // batched encode: [2,8,h,w], [2,8]
  ASSERT_EQ(target.sizes(), torch::IntArrayRef({2, 8, kH, kW}));
  ASSERT_EQ(weight.sizes(), torch::IntArrayRef({2, 8}));
  auto [coords, scores] = codec.decode(target);
  for (int n = 0; n < 2; ++n) {
    auto single = codec.decode(codec.encode(kp[n]).first.unsqueeze(0)).first[0];
    EXPECT_TRUE(torch::equal(coords[n], single));
  }
}

TEST(HeatmapCodec, MirroredTargetsUnflipToOriginal) {
  const auto codec = make_codec();
  const auto& flip = LandmarkSchema::deepfashion().flip;
  const int k = static_cast<int>(flip.size());
  auto kp = random_keypoints(k, -0.4, kW - 0.6, kH - 0.6);
  // Mirror the crop: x -> W-1-x, and landmark i becomes slot flip[i] (left <-> right).
  auto mirrored = torch::empty_like(kp);
  for (int i = 0; i < k; ++i) {
    mirrored[flip[i]] = kp[i];
    mirrored[flip[i]][0] = (kW * kStride - 1) - kp[i][0];
  }
  auto original = codec.encode(kp).first;
  auto back = HeatmapCodec::unflip(codec.encode(mirrored).first.unsqueeze(0), flip)[0];
  EXPECT_LT((back - original).abs().max().item<float>(), 1e-5f);
}

TEST(HeatmapCodec, UnflipMatchesNaiveIndexing) {
  const std::vector<int> flip = {1, 0, 2, 4, 3};
  auto hm = torch::rand({2, 5, 6, 7});
  auto out = HeatmapCodec::unflip(hm, flip);
  ASSERT_EQ(out.sizes(), hm.sizes());
  auto a = hm.accessor<float, 4>();
  auto b = out.accessor<float, 4>();
  for (int n = 0; n < 2; ++n)
    for (int c = 0; c < 5; ++c)
      for (int y = 0; y < 6; ++y)
        for (int x = 0; x < 7; ++x) ASSERT_EQ(b[n][c][y][x], a[n][flip[c]][y][6 - x]) << n << c << y << x;
  EXPECT_THROW(HeatmapCodec::unflip(hm, {1, 0, 2}), std::invalid_argument);
  EXPECT_THROW(HeatmapCodec::unflip(hm, {1, 0, 2, 4, 5}), std::invalid_argument);
}

TEST(HeatmapCodec, ToImageAppliesAffinePerSample) {
  // Sample 0: scale 2 and shift (10, 20). Sample 1: rotate 90 degrees counter-clockwise about the
  // origin, (x, y) -> (-y, x), then shift (100, 0).
  auto affine = torch::tensor({{{2.0f, 0.0f, 10.0f}, {0.0f, 2.0f, 20.0f}},
                               {{0.0f, -1.0f, 100.0f}, {1.0f, 0.0f, 0.0f}}});
  auto coords = torch::tensor({{{1.0f, 2.0f}, {3.5f, -4.0f}}, {{1.0f, 2.0f}, {3.5f, -4.0f}}});
  auto expected = torch::tensor({{{12.0f, 24.0f}, {17.0f, 12.0f}}, {{98.0f, 1.0f}, {104.0f, 3.5f}}});
  auto out = HeatmapCodec::to_image(coords, affine);
  EXPECT_TRUE(torch::allclose(out, expected)) << out;
  EXPECT_THROW(HeatmapCodec::to_image(coords, affine[0]), std::invalid_argument);
}

TEST(HeatmapCodec, PointsOutsideGetWeightZero) {
  const auto codec = make_codec();
  const float nan = std::nanf("");
  auto kp = torch::tensor({
      {-100.0f, 50.0f, 1.0f},   // far left: 3-sigma square misses the map
      {50.0f, 1000.0f, 1.0f},   // far below
      {-10.0f, 49.5f, 1.0f},    // u = -2.875, v = 12: outside the map, but its 3-sigma tail reaches it
      {50.0f, 50.0f, 0.0f},     // inside but not supervised
      {nan, nan, 0.0f},         // unlabelled landmark with no position
      {50.0f, 50.0f, 1.0f},
  });
  auto [target, weight] = codec.encode(kp);
  EXPECT_TRUE(torch::equal(weight, torch::tensor({0.0f, 0.0f, 1.0f, 0.0f, 0.0f, 1.0f}))) << weight;
  auto peak = target.flatten(1).amax(1);
  EXPECT_TRUE(torch::isfinite(target).all().item<bool>());
  EXPECT_EQ(peak[0].item<float>(), 0.0f);
  EXPECT_EQ(peak[1].item<float>(), 0.0f);
  // Brightest pixel: column 0, row 12, at distance 2.875 from the centre (2 sigma^2 = 8).
  EXPECT_NEAR(peak[2].item<float>(), std::exp(-2.875 * 2.875 / 8.0), 1e-6);
  EXPECT_EQ(peak[3].item<float>(), 0.0f);
  EXPECT_EQ(peak[4].item<float>(), 0.0f);
  EXPECT_GT(peak[5].item<float>(), 0.9f);
}

TEST(HeatmapCodec, RejectsBadInputs) {
  const auto codec = make_codec();
  EXPECT_THROW(codec.encode(torch::zeros({4, 2})), std::invalid_argument);
  EXPECT_THROW(codec.encode(torch::zeros({4, 3}, torch::kLong)), std::invalid_argument);
  EXPECT_THROW(codec.decode(torch::zeros({1, 8, kH, kW + 1})), std::invalid_argument);
  EXPECT_THROW(codec.decode(torch::zeros({8, kH, kW})), std::invalid_argument);
  EXPECT_THROW(codec.decode(torch::zeros({1, 8, kH, kW}), "dark"), std::invalid_argument);
}

TEST(HeatmapCodec, CudaMatchesCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device in this build/machine";
  const auto codec = make_codec();
  auto kp = random_keypoints(16, -0.4, kW - 0.6, kH - 0.6);
  auto [t_cpu, w_cpu] = codec.encode(kp);
  auto [t_gpu, w_gpu] = codec.encode(kp.cuda());
  ASSERT_TRUE(t_gpu.is_cuda());
  EXPECT_TRUE(torch::allclose(t_gpu.cpu(), t_cpu, 1e-5, 1e-6));
  EXPECT_TRUE(torch::equal(w_gpu.cpu(), w_cpu));
  auto c_cpu = codec.decode(t_cpu.unsqueeze(0)).first;
  auto c_gpu = codec.decode(t_gpu.unsqueeze(0)).first;
  ASSERT_TRUE(c_gpu.is_cuda());
  EXPECT_TRUE(torch::allclose(c_gpu.cpu(), c_cpu));
  const auto& flip = LandmarkSchema::deepfashion().flip;
  auto hm = torch::rand({2, 8, kH, kW});
  EXPECT_TRUE(torch::equal(HeatmapCodec::unflip(hm.cuda(), flip).cpu(), HeatmapCodec::unflip(hm, flip)));
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

}  // namespace
}  // namespace cspn
