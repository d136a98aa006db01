// Tests src/core/detect/ap.cpp: COCO-style detection AP on hand-computed cases.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cspn/core/detect/ap.hpp"

namespace {

using cspn::detect::DetectionAP;

torch::Tensor boxes(std::initializer_list<std::array<float, 4>> list) {
  auto t = torch::zeros({static_cast<int64_t>(list.size()), 4});
  int64_t i = 0;
  for (const auto& b : list) t[i++] = torch::tensor({b[0], b[1], b[2], b[3]});
  return t;
}

torch::Tensor longs(std::initializer_list<int64_t> v) { return torch::tensor(std::vector<int64_t>(v)); }
torch::Tensor floats(std::initializer_list<float> v) { return torch::tensor(std::vector<float>(v)); }

TEST(DetectionAP, TwoGroundTruthsThreeDetections) {
  // gts A, B; detections by score: d1 = A (IoU 1), d2 far from both, d3 on B.
  const auto gt = boxes({{0, 0, 10, 10}, {100, 100, 110, 110}});
  const auto scores = floats({0.9f, 0.8f, 0.7f});
  DetectionAP loose({"background", "shirt"});  // d3 has IoU 0.72 with B
  loose.add(boxes({{0, 0, 10, 10}, {50, 50, 60, 60}, {100, 100, 110, 107.2f}}), scores,
            longs({1, 1, 1}), gt, longs({1, 1}));
  const auto r = loose.result();
  // IoU <= 0.70: TP, FP, TP -> precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1; envelope 1, 2/3, 2/3:
  // 51 recall points (0..0.50) read 1, 50 read 2/3 -> AP = (51 + 100/3) / 101 = 253/303.
  // IoU >= 0.75: TP, FP, FP -> recall stops at 1/2: AP = 51/101 = 153/303.
  EXPECT_NEAR(r["det_ap50"].get<double>(), 253.0 / 303.0, 1e-12);
  EXPECT_NEAR(r["det_ap"].get<double>(), (5 * 253.0 / 303.0 + 5 * 153.0 / 303.0) / 10, 1e-12);
  EXPECT_NEAR(r["per_category"]["shirt"]["ap50"].get<double>(), 253.0 / 303.0, 1e-12);
  EXPECT_EQ(r["per_category"]["shirt"]["gt"].get<int64_t>(), 2);
  EXPECT_EQ(r["per_category"]["shirt"]["detections"].get<int64_t>(), 3);

  DetectionAP exact({"background", "shirt"});  // d3 = B: 253/303 at every IoU threshold
  exact.add(boxes({{0, 0, 10, 10}, {50, 50, 60, 60}, {100, 100, 110, 110}}), scores,
            longs({1, 1, 1}), gt, longs({1, 1}));
  EXPECT_NEAR(exact.result()["det_ap"].get<double>(), 253.0 / 303.0, 1e-12);
}

TEST(DetectionAP, DuplicatesCategoriesAndMissingGroundTruth) {
  DetectionAP ap({"background", "upper", "lower", "full"});
  // upper: gt A; d_a (IoU 0.92, score 0.8) then d_b (IoU 1, score 0.6) on the same gt.
  // lower: a gt, no detection. full: a detection, no gt.
  ap.add(boxes({{0, 0, 10, 9.2f}, {0, 0, 10, 10}, {20, 20, 30, 30}}), floats({0.8f, 0.6f, 0.9f}),
         longs({1, 1, 3}), boxes({{0, 0, 10, 10}, {20, 20, 30, 30}}), longs({1, 2}));
  const auto r = ap.result();
  // upper, IoU <= 0.90: TP then duplicate FP: precision 1 up to recall 1 -> AP 1.
  // IoU 0.95: d_a FP, d_b TP -> precision 0, 1/2 at recall 0, 1; envelope 1/2 -> AP 1/2.
  EXPECT_NEAR(r["per_category"]["upper"]["ap50"].get<double>(), 1.0, 1e-12);
  EXPECT_NEAR(r["per_category"]["upper"]["ap"].get<double>(), 0.95, 1e-12);
  EXPECT_EQ(r["per_category"]["lower"]["ap"].get<double>(), 0.0);
  EXPECT_TRUE(r["per_category"]["full"]["ap"].is_null());  // no ground truth: not scored
  EXPECT_NEAR(r["det_ap50"].get<double>(), 0.5, 1e-12);
  EXPECT_NEAR(r["det_ap"].get<double>(), 0.475, 1e-12);
}

TEST(DetectionAP, MergesImagesByScore) {
  DetectionAP ap({"background", "shirt"});
  // Image 1: gt A, a TP at score 0.5. Image 2: gt B, a FP at 0.9 and a TP at 0.4.
  ap.add(boxes({{0, 0, 10, 10}}), floats({0.5f}), longs({1}), boxes({{0, 0, 10, 10}}), longs({1}));
  ap.add(boxes({{40, 40, 50, 50}, {0, 0, 10, 10}}), floats({0.9f, 0.4f}), longs({1, 1}),
         boxes({{0, 0, 10, 10}}), longs({1}));
  // Ranked FP, TP, TP: precision 0, 1/2, 2/3 at recall 0, 1/2, 1; envelope 2/3 everywhere.
  const auto r = ap.result();
  EXPECT_NEAR(r["det_ap"].get<double>(), 2.0 / 3.0, 1e-12);
  EXPECT_EQ(r["images"].get<int64_t>(), 2);
}

TEST(DetectionAP, KeepsOnlyTheTopDetectionsPerImage) {
  DetectionAP ap({"background", "shirt"}, /*max_detections=*/1);
  // The TP has the lower score and is cut: no true positive at all.
  ap.add(boxes({{40, 40, 50, 50}, {0, 0, 10, 10}}), floats({0.9f, 0.4f}), longs({1, 1}),
         boxes({{0, 0, 10, 10}}), longs({1}));
  EXPECT_EQ(ap.result()["det_ap"].get<double>(), 0.0);
}

TEST(DetectionAP, RejectsBadInput) {
  DetectionAP ap({"background", "shirt"});
  EXPECT_THROW(ap.add(boxes({{0, 0, 1, 1}}), floats({0.5f}), longs({2}), boxes({}), longs({})),
               std::invalid_argument);  // label 2 of 1 category
  EXPECT_THROW(ap.add(torch::zeros({1, 5}), floats({0.5f}), longs({1}), boxes({}), longs({})),
               std::invalid_argument);
  EXPECT_TRUE(ap.result()["det_ap"].is_null());
}

}  // namespace
