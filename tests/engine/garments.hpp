#pragma once
// Garments written by hand, shared by the engine's tests (test_crop.cpp, test_loader.cpp,
// test_detector_ap.cpp).
#include "cspn/core/sample.hpp"
#include "cspn/core/schema.hpp"

namespace cspn::test {

// An upper-body garment: collars, sleeves and hems labelled, the waistline absent.
inline Garment upper_garment() {
  Garment g;
  g.category = 0;
  g.box = {40, 30, 140, 170};
  g.keypoints.resize(8);
  const float xy[8][2] = {{70, 40}, {110, 42}, {45, 90}, {135, 95}, {0, 0}, {0, 0}, {60, 160}, {120, 165}};
  for (int k = 0; k < 8; ++k) {
    g.keypoints[k] = {xy[k][0], xy[k][1], (k == 4 || k == 5) ? Visibility::Absent : Visibility::Visible};
  }
  return g;
}

// A garment of `category` in `box`, its landmarks all absent.
inline Garment garment(int category, Box box) {
  Garment g;
  g.category = category;
  g.box = box;
  g.keypoints.assign(LandmarkSchema::deepfashion().num_landmarks(), Keypoint{});
  return g;
}

}  // namespace cspn::test
