// Tests src/engine/mean_shape.cpp: the mean-shape baseline averages box-normalised layouts.
#include "cspn/engine/mean_shape.hpp"

#include <gtest/gtest.h>

using namespace cspn;

TEST(MeanShape, AveragesBoxNormalisedLayouts) {
  Dataset data{LandmarkSchema::deepfashion(), {}, {}};
  for (float scale : {1.0f, 2.0f}) {
    Sample s;
    Garment g;
    g.category = 1;  // lower: waistlines and hems
    g.box = {0, 0, 100 * scale, 200 * scale};
    g.keypoints.resize(8);
    g.keypoints[4] = {10 * scale, 0, Visibility::Visible};
    g.keypoints[5] = {90 * scale, 0, Visibility::Visible};
    g.keypoints[6] = {scale == 1 ? 20.0f : 60.0f, 200 * scale, Visibility::Occluded};
    g.keypoints[7] = {80 * scale, 200 * scale, Visibility::Visible};
    s.garments.push_back(g);
    data.samples.push_back(s);
  }
  MeanShape mean(data);
  CropJob job;
  job.category = 1;
  job.box = {100, 100, 150, 200};
  const auto p = mean.predict({job});
  EXPECT_NEAR(p[0][4][0].item<float>(), 100 + 0.1 * 50, 1e-4);
  // Left hem: (0.2 + 0.3) / 2 = 0.25 of the width.
  EXPECT_NEAR(p[0][6][0].item<float>(), 100 + 0.25 * 50, 1e-4);
  EXPECT_NEAR(p[0][6][1].item<float>(), 200, 1e-4);
}
