// Tests src/engine/detector_ap.cpp: detections are matched to garments greedily, by category and IoU.
#include <vector>

#include <gtest/gtest.h>

#include "cspn/engine/detector_ap.hpp"
#include "cspn/engine/garment_detector.hpp"
#include "garments.hpp"

using namespace cspn;
using cspn::test::garment;

namespace {

DetectedGarment detection(int category, Box box, float score) { return {box, score, category}; }

}  // namespace

TEST(Detection, MatchingIsGreedyBySameCategoryAndIoU) {
  const std::vector<Garment> truth{garment(0, {0, 0, 100, 100}), garment(0, {50, 0, 150, 100}),
                                   garment(1, {0, 200, 100, 300})};
  const std::vector<DetectedGarment> dets{
      detection(0, {10, 0, 110, 100}, 0.6f),   // IoU 0.82 with truth 0, 0.43 with truth 1
      detection(0, {5, 0, 105, 100}, 0.9f),    // IoU 0.90 with truth 0: first, takes it
      detection(2, {0, 200, 100, 300}, 0.8f),  // right place, wrong category
      detection(1, {0, 260, 100, 360}, 0.7f),  // IoU 0.25: too little overlap
      detection(0, {48, 0, 148, 100}, 0.5f),   // truth 1
  };
  EXPECT_EQ(match_detections(dets, truth), (std::vector<int>{-1, 0, -1, -1, 1}));
  EXPECT_EQ(match_detections({}, truth), std::vector<int>{});
  EXPECT_EQ(match_detections(dets, {}), (std::vector<int>(5, -1)));
}
