// Tests src/engine/crop.cpp: the crop window around a box, its affine against warped pixels, flips
// that swap left/right partners, and the affine's inverse.
#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "cspn/engine/crop.hpp"
#include "garments.hpp"

using namespace cspn;
using cspn::test::upper_garment;

TEST(Crop, FitBoxKeepsCentreAndTargetAspect) {
  const auto win = fit_box({10, 20, 110, 60}, 1.25f, 96, 128);
  EXPECT_FLOAT_EQ(win.cx, 60);
  EXPECT_FLOAT_EQ(win.cy, 40);
  EXPECT_FLOAT_EQ(win.w, 125);               // the long side is expanded by 1.25
  EXPECT_NEAR(win.w / win.h, 96.0 / 128.0, 1e-6);
}

TEST(Crop, AffineAgreesWithWarpedPixels) {
  // A single bright pixel at each keypoint must land where the affine sends the keypoint.
  const Garment g = upper_garment();
  CropWindow win = fit_box(g.box, 1.25f, 96, 128);
  win.rotation = 17;
  for (bool flip : {false, true}) {
    win.flip = flip;
    const auto m = window_to_crop(win, 96, 128);
    const auto kps = crop_keypoints(g, m, flip, LandmarkSchema::deepfashion().flip, 96, 128);
    for (int slot : {0, 2, 7}) {
      cv::Mat img(200, 180, CV_8UC3, cv::Scalar::all(0));
      const Keypoint& src = g.keypoints[flip ? LandmarkSchema::deepfashion().flip[slot] : slot];
      cv::circle(img, cv::Point(static_cast<int>(src.x), static_cast<int>(src.y)), 2, cv::Scalar::all(255), cv::FILLED);
      cv::Mat crop = warp_crop(img, m, 96, 128), gray;
      cv::cvtColor(crop, gray, cv::COLOR_BGR2GRAY);
      const cv::Moments mo = cv::moments(gray);
      ASSERT_GT(mo.m00, 0) << "slot " << slot << " fell outside the crop";
      EXPECT_NEAR(mo.m10 / mo.m00, kps[slot][0].item<float>(), 0.6) << "slot " << slot << " flip " << flip;
      EXPECT_NEAR(mo.m01 / mo.m00, kps[slot][1].item<float>(), 0.6) << "slot " << slot << " flip " << flip;
    }
  }
}

TEST(Crop, FlipMirrorsAndSwapsPartners) {
  const Garment g = upper_garment();
  CropWindow win = fit_box(g.box, 1.25f, 96, 128);
  const auto plain = crop_keypoints(g, window_to_crop(win, 96, 128), false, LandmarkSchema::deepfashion().flip, 96, 128);
  win.flip = true;
  const auto mirrored = crop_keypoints(g, window_to_crop(win, 96, 128), true, LandmarkSchema::deepfashion().flip, 96, 128);
  const auto& flip = LandmarkSchema::deepfashion().flip;
  for (int k = 0; k < 8; ++k) {
    EXPECT_NEAR(mirrored[k][0].item<float>(), 95 - plain[flip[k]][0].item<float>(), 1e-3);
    EXPECT_NEAR(mirrored[k][1].item<float>(), plain[flip[k]][1].item<float>(), 1e-3);
    EXPECT_EQ(mirrored[k][2].item<float>(), plain[flip[k]][2].item<float>());
  }
  EXPECT_EQ(plain[4][2].item<float>(), 0.0f);  // absent landmarks are not supervised
}

TEST(Crop, InverseAffineTensorMapsBack) {
  CropWindow win = fit_box({5, 5, 50, 90}, 1.25f, 64, 64);
  win.rotation = -30;
  const auto m = window_to_crop(win, 64, 64);
  const auto inv = crop_to_image_tensor(m);
  const double x = 20, y = 33;
  const double cx = m(0, 0) * x + m(0, 1) * y + m(0, 2), cy = m(1, 0) * x + m(1, 1) * y + m(1, 2);
  EXPECT_NEAR(inv[0][0].item<float>() * cx + inv[0][1].item<float>() * cy + inv[0][2].item<float>(), x, 1e-3);
  EXPECT_NEAR(inv[1][0].item<float>() * cx + inv[1][1].item<float>() * cy + inv[1][2].item<float>(), y, 1e-3);
}
