#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "common.hpp"
#include "cspn/engine/crop.hpp"
#include "cspn/engine/landmarks_model.hpp"
#include "cspn/engine/loader.hpp"

using namespace cspn;

namespace {

Garment upper_garment() {
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

}  // namespace

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

TEST(BatchLoader, DeliversInOrderWithAnyThreadCount) {
  auto make = [](size_t i) {
    KeypointBatch b;
    b.images = torch::full({1}, static_cast<float>(i));
    b.jobs = {i};
    return b;
  };
  for (int workers : {0, 1, 3}) {
    BatchLoader<KeypointBatch> loader(make, 17, workers, 2);
    size_t expected = 0;
    while (auto batch = loader.next()) EXPECT_EQ(batch->jobs[0], expected++);
    EXPECT_EQ(expected, 17u);
  }
}

TEST(BatchLoader, RethrowsWorkerErrors) {
  BatchLoader<KeypointBatch> loader(
      [](size_t i) -> KeypointBatch {
        if (i == 3) throw std::runtime_error("image 3 is corrupt");
        return {};
      },
      10, 2, 2);
  EXPECT_THROW(
      {
        while (loader.next()) {
        }
      },
      std::runtime_error);
}

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

TEST(CropBatcher, DecodedTargetsMapBackToTheGroundTruth) {
  // Encode a garment's landmarks into the training targets of a crop, decode them and map them back
  // to the image: the result must be the annotation (within the codec's quarter-pixel precision).
  Dataset data{LandmarkSchema::deepfashion(), {}, {}};
  const auto dir = test::scratch_dir("batcher-roundtrip");
  cv::imwrite((dir / "a.png").string(), cv::Mat(200, 180, CV_8UC3, cv::Scalar::all(90)));
  Sample s;
  s.image = (dir / "a.png").string();
  s.width = 180;
  s.height = 200;
  s.garments.push_back(upper_garment());
  data.samples.push_back(s);
  Config cfg;
  cfg.set("model.keypoints.input_size=[128, 96]");
  cfg.data.workers = 0;
  const CropBatcher batcher(data, CropBatcher::ground_truth_jobs(data), cfg, false);
  const auto batch = batcher.make({0}, 0);
  const HeatmapCodec codec(cfg.model.keypoints);
  const auto xy = HeatmapCodec::to_image(codec.decode(batch.targets.at(0)).first, batch.crop_to_image);
  const float stride_in_image = 4.0f * fit_box(upper_garment().box, 1.25f, 96, 128).w / 96;
  for (int k : {0, 1, 2, 3, 6, 7}) {
    EXPECT_EQ(batch.weights[0][k].item<float>(), 1.0f) << k;
    EXPECT_NEAR(xy[0][k][0].item<float>(), upper_garment().keypoints[k].x, 0.3f * stride_in_image) << k;
    EXPECT_NEAR(xy[0][k][1].item<float>(), upper_garment().keypoints[k].y, 0.3f * stride_in_image) << k;
  }
  EXPECT_EQ(batch.weights[0][4].item<float>(), 0.0f);
}
