// Tests src/core/detect/box_coder.cpp: anchors, box coding, matching and sampling: hand-computed
// cases, naive loops, round trips and torchvision.models.detection's own AnchorGenerator / BoxCoder /
// Matcher.
#include <cmath>
#include <set>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cspn/core/detect/box_coder.hpp"
#include "common.hpp"
#include "tensor_exchange.hpp"

namespace {

using namespace cspn::detect;

std::vector<int64_t> to_vector(const torch::Tensor& t) {
  const auto c = t.to(torch::kCPU, torch::kLong).contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

double max_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

TEST(DetectBoxes, CellAnchorsAreRoundedRatioMajorBoxes) {
  const AnchorGenerator gen({32, 64}, {0.5f, 1.f, 2.f});
  EXPECT_EQ(gen.num_anchors_per_location(), 6);
  const auto cell = gen.cell_anchors(torch::kFloat);
  ASSERT_EQ(cell.sizes(), (std::vector<int64_t>{6, 4}));
  EXPECT_EQ(cell[2].sub(torch::tensor({-16.f, -16.f, 16.f, 16.f})).abs().max().item<float>(), 0.f);
  // ratio 0.5, size 32: w = 32/sqrt(.5) = 45.25, h = 22.63 -> half sizes rounded: 23, 11.
  EXPECT_EQ(cell[0].sub(torch::tensor({-23.f, -11.f, 23.f, 11.f})).abs().max().item<float>(), 0.f);
  int a = 0;
  for (float r : {0.5f, 1.f, 2.f})
    for (float s : {32.f, 64.f}) {
      const float h = s * std::sqrt(r), w = s / std::sqrt(r);
      const auto expected = torch::tensor({-w / 2, -h / 2, w / 2, h / 2}).round();
      EXPECT_EQ(max_diff(cell[a++], expected), 0.0) << "ratio " << r << " size " << s;
    }
}

TEST(DetectBoxes, GridAnchorsFollowLocationMajorOrder) {
  const AnchorGenerator gen({16, 40}, {1.f, 2.f});
  const auto cell = gen.cell_anchors(torch::kFloat);
  const auto grid = gen.grid_anchors(3, 5, 16, 8, torch::kFloat);
  ASSERT_EQ(grid.sizes(), (std::vector<int64_t>{3 * 5 * 4, 4}));
  for (int64_t y = 0; y < 3; ++y)
    for (int64_t x = 0; x < 5; ++x)
      for (int64_t a = 0; a < 4; ++a) {
        const auto shift = torch::tensor({x * 8.f, y * 16.f, x * 8.f, y * 16.f});
        EXPECT_EQ(max_diff(grid[(y * 5 + x) * 4 + a], cell[a] + shift), 0.0);
      }
}

TEST(DetectBoxes, EncodeDecodeRoundTrip) {
  for (auto weights : {std::array<double, 4>{1, 1, 1, 1}, std::array<double, 4>{10, 10, 5, 5}}) {
    const BoxCoder coder(weights);
    const auto xy = torch::rand({50, 2}, torch::kDouble) * 300;
    const auto ref = torch::cat({xy, xy + torch::rand({50, 2}, torch::kDouble) * 100 + 4}, 1);
    const auto xy2 = xy + torch::randn({50, 2}, torch::kDouble) * 20;
    const auto boxes = torch::cat({xy2, xy2 + torch::rand({50, 2}, torch::kDouble) * 150 + 2}, 1);
    const auto deltas = coder.encode(boxes, ref);
    ASSERT_EQ(deltas.sizes(), (std::vector<int64_t>{50, 4}));
    const auto back = coder.decode(deltas, ref);
    ASSERT_EQ(back.sizes(), (std::vector<int64_t>{50, 1, 4}));
    EXPECT_LT(max_diff(back.squeeze(1), boxes), 1e-9);
  }
  // Hand case: reference [0,0,10,20] (centre 5,10), box [2,4,22,24] (centre 12,14, 20x20).
  const BoxCoder coder({10, 10, 5, 5});
  const auto d = coder.encode(torch::tensor({{2., 4., 22., 24.}}), torch::tensor({{0., 0., 10., 20.}}));
  EXPECT_LT(max_diff(d, torch::tensor({{10 * 7. / 10, 10 * 4. / 20, 5 * std::log(2.), 0.}})), 1e-12);
}

TEST(DetectBoxes, DecodeClampsLogScaleAndDecodesPerClass) {
  const BoxCoder coder({1, 1, 1, 1});
  const auto ref = torch::tensor({{0.f, 0.f, 16.f, 16.f}});
  // Two "classes": a huge dw is clamped to log(1000/16) (width 16 -> 1000); zero deltas keep ref.
  const auto out = coder.decode(torch::tensor({{0.f, 0.f, 50.f, 0.f, 0.f, 0.f, 0.f, 0.f}}), ref);
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{1, 2, 4}));
  EXPECT_NEAR((out[0][0][2] - out[0][0][0]).item<float>(), 1000.f, 1e-2);
  EXPECT_LT(max_diff(out[0][1], ref[0]), 1e-6);
  EXPECT_THROW(coder.decode(torch::zeros({1, 6}), ref), std::invalid_argument);
}

TEST(DetectBoxes, ClipAndRemoveSmall) {
  const auto boxes = torch::tensor({{-5.f, 3.f, 50.f, 70.f}, {10.f, -2.f, 12.f, 0.5f}});
  const auto clipped = clip_boxes(boxes, /*height=*/60, /*width=*/40);
  EXPECT_EQ(max_diff(clipped, torch::tensor({{0.f, 3.f, 40.f, 60.f}, {10.f, 0.f, 12.f, 0.5f}})), 0.0);
  EXPECT_EQ(to_vector(remove_small_boxes(clipped, 1.0)), (std::vector<int64_t>{0}));
  EXPECT_EQ(to_vector(remove_small_boxes(clipped, 0.5)), (std::vector<int64_t>{0, 1}));
}

TEST(DetectBoxes, FlipMirrorsAboutTheImageWidth) {
  const auto boxes = torch::tensor({{2.f, 3.f, 10.f, 20.f}, {0.f, 0.f, 40.f, 5.f}});
  EXPECT_EQ(max_diff(flip_boxes(boxes, 40), torch::tensor({{30.f, 3.f, 38.f, 20.f}, {0.f, 0.f, 40.f, 5.f}})), 0.0);
  EXPECT_EQ(max_diff(flip_boxes(flip_boxes(boxes, 40), 40), boxes), 0.0);
  EXPECT_THROW(flip_boxes(torch::zeros({2, 3}), 40), std::invalid_argument);
}

TEST(DetectBoxes, MatcherThresholdsAndLowQualityMatches) {
  // 2 gts x 5 boxes.
  const auto q = torch::tensor({{0.8f, 0.5f, 0.1f, 0.2f, 0.0f},
                                {0.6f, 0.1f, 0.3f, 0.45f, 0.0f}});
  const auto plain = Matcher(0.7, 0.3, false)(q);
  // box 0: 0.8 -> gt 0; box 1: 0.5 between; box 2: 0.3 between (>= low); box 3: 0.45 between;
  // box 4: 0 below.
  EXPECT_EQ(to_vector(plain), (std::vector<int64_t>{0, Matcher::kBetween, Matcher::kBetween,
                                                    Matcher::kBetween, Matcher::kBelowLow}));
  // gt 1's best box is box 0 (0.6), already gt 0's: nothing changes; gt 0's best is box 0.
  EXPECT_EQ(to_vector(Matcher(0.7, 0.3, true)(q)), to_vector(plain));
  // Make box 3 gt 1's best (0.65 > 0.6): it comes back as a match of gt 1.
  const auto q2 = q.clone();
  q2[1][3] = 0.65f;
  EXPECT_EQ(to_vector(Matcher(0.7, 0.3, true)(q2)),
            (std::vector<int64_t>{0, Matcher::kBetween, Matcher::kBetween, 1, Matcher::kBelowLow}));
  EXPECT_EQ(to_vector(Matcher(0.5, 0.5, false)(torch::zeros({0, 3}))),
            (std::vector<int64_t>(3, Matcher::kBelowLow)));
  EXPECT_THROW(Matcher(0.3, 0.7, false), std::invalid_argument);
}

TEST(DetectBoxes, SamplerBalancesAndIsSeeded) {
  auto labels = torch::zeros({200}, torch::kLong);
  labels.narrow(0, 0, 10).fill_(2);    // 10 positives (class 2)
  labels.narrow(0, 10, 30).fill_(-1);  // 30 ignored
  const BalancedPositiveNegativeSampler sampler(32, 0.25);
  torch::manual_seed(7);
  const auto s1 = sampler(labels);
  EXPECT_EQ(s1.positive.numel(), 8);
  EXPECT_EQ(s1.negative.numel(), 24);
  for (int64_t i : to_vector(s1.positive)) EXPECT_GE(labels[i].item<int64_t>(), 1);
  for (int64_t i : to_vector(s1.negative)) EXPECT_EQ(labels[i].item<int64_t>(), 0);
  const auto neg = to_vector(s1.negative);
  EXPECT_EQ(std::set<int64_t>(neg.begin(), neg.end()).size(), neg.size());
  torch::manual_seed(7);
  const auto s2 = sampler(labels);
  EXPECT_EQ(to_vector(s2.positive), to_vector(s1.positive));
  EXPECT_EQ(to_vector(s2.negative), to_vector(s1.negative));
  torch::manual_seed(8);
  EXPECT_NE(to_vector(sampler(labels).negative), neg);
  // Too few positives: the negatives fill the batch.
  const auto few = BalancedPositiveNegativeSampler(32, 0.5)(labels.narrow(0, 5, 195));
  EXPECT_EQ(few.positive.numel(), 5);
  EXPECT_EQ(few.negative.numel(), 27);
}

TEST(DetectBoxes, MatchTorchvisionDetectionUtils) {
  CSPN_REQUIRE_TORCHVISION();
  const auto dir = cspn::test::scratch_dir("detect_boxes_torchvision");
  std::map<std::string, torch::Tensor> in;
  const auto xy = torch::rand({40, 2}) * 200;
  in["ref"] = torch::cat({xy, xy + torch::rand({40, 2}) * 80 + 2}, 1);
  const auto xy2 = xy + torch::randn({40, 2}) * 10;
  in["boxes"] = torch::cat({xy2, xy2 + torch::rand({40, 2}) * 80 + 2}, 1);
  in["deltas"] = torch::randn({40, 12}) * 2;  // 3 classes, some dw beyond the clamp
  in["quality"] = torch::rand({4, 60}).pow(2);
  const nlohmann::json cases = nlohmann::json::array({
      {{"name", "anchors"}, {"op", "anchors"}, {"sizes", {32, 64, 128}}, {"ratios", {0.5, 1.0, 2.0}},
       {"image_size", {320, 256}}, {"feature_size", {20, 16}}},
      {{"name", "enc_rpn"}, {"op", "encode"}, {"weights", {1, 1, 1, 1}}, {"boxes", "boxes"},
       {"reference", "ref"}},
      {{"name", "enc_box"}, {"op", "encode"}, {"weights", {10, 10, 5, 5}}, {"boxes", "boxes"},
       {"reference", "ref"}},
      {{"name", "dec_box"}, {"op", "decode"}, {"weights", {10, 10, 5, 5}}, {"deltas", "deltas"},
       {"reference", "ref"}},
      {{"name", "match_rpn"}, {"op", "matcher"}, {"quality", "quality"}, {"high", 0.7},
       {"low", 0.3}, {"allow_low_quality", true}},
      {{"name", "match_box"}, {"op", "matcher"}, {"quality", "quality"}, {"high", 0.5},
       {"low", 0.5}, {"allow_low_quality", false}},
  });
  cspn::test::write_tensors(dir, "inputs.json", in, {{"cases", cases}});
  cspn::test::run_reference_script("torchvision_ops_reference.py", "boxes '" + dir.string() + "'",
                                   dir);
  const auto ref = cspn::test::read_tensors(dir, "outputs.json");

  const auto anchors = AnchorGenerator({32, 64, 128}, {0.5f, 1.f, 2.f})
                           .grid_anchors(20, 16, 16, 16, torch::kFloat);
  ASSERT_EQ(anchors.sizes(), ref.at("anchors").sizes());
  EXPECT_EQ(max_diff(anchors, ref.at("anchors")), 0.0);
  EXPECT_LT(max_diff(BoxCoder({1, 1, 1, 1}).encode(in["boxes"], in["ref"]), ref.at("enc_rpn")), 1e-5);
  EXPECT_LT(max_diff(BoxCoder({10, 10, 5, 5}).encode(in["boxes"], in["ref"]), ref.at("enc_box")),
            1e-4);
  // torchvision returns [N,4K]; ours is [N,K,4].
  EXPECT_LT(max_diff(BoxCoder({10, 10, 5, 5}).decode(in["deltas"], in["ref"]).reshape({40, 12}),
                     ref.at("dec_box")),
            1e-3);
  EXPECT_EQ(to_vector(Matcher(0.7, 0.3, true)(in["quality"])), to_vector(ref.at("match_rpn")));
  EXPECT_EQ(to_vector(Matcher(0.5, 0.5, false)(in["quality"])), to_vector(ref.at("match_box")));
}

}  // namespace
