// Tests src/engine/loader.cpp: the batch loader's order and errors with any thread count, the crop
// batcher's targets, and the detection batcher's boxes, which follow their (flipped, rescaled) pixels.
#include <cmath>
#include <cstdint>
#include <stdexcept>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "cspn/engine/crop.hpp"
#include "cspn/engine/loader.hpp"
#include "common.hpp"
#include "garments.hpp"

using namespace cspn;
using cspn::test::garment;
using cspn::test::upper_garment;

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

TEST(Detection, TrainingBoxesFollowTheirPixels) {
  // A white garment-sized rectangle on black: after any flip and rescale, the target box must
  // still frame the white pixels.
  const auto dir = test::scratch_dir("detection-batcher");
  cv::Mat image(100, 200, CV_8UC3, cv::Scalar(0, 0, 0));
  cv::rectangle(image, cv::Point(20, 30), cv::Point(59, 79), cv::Scalar(255, 255, 255), cv::FILLED);
  cv::imwrite((dir / "a.png").string(), image);
  Dataset data{LandmarkSchema::deepfashion(), {}, {}};
  Sample s;
  s.image = (dir / "a.png").string();
  s.width = 200;
  s.height = 100;
  s.garments.push_back(garment(0, {20, 30, 60, 80}));
  data.samples.push_back(s);
  Config cfg;
  cfg.model.detector.min_size = 160;
  cfg.model.detector.max_size = 400;
  cfg.data.color_aug = 0;
  cfg.data.scale_aug = 0.2f;
  DetectionBatcher batcher(data, cfg, true);
  ASSERT_EQ(batcher.size(), 1u);
  int flipped = 0;
  for (std::uint64_t seed = 0; seed < 12; ++seed) {
    const auto batch = batcher.make({0}, seed);
    const auto box = batch.targets[0].boxes[0];
    const int x1 = static_cast<int>(std::lround(box[0].item<float>())), y1 = static_cast<int>(std::lround(box[1].item<float>()));
    const int x2 = static_cast<int>(std::lround(box[2].item<float>())), y2 = static_cast<int>(std::lround(box[3].item<float>()));
    const auto red = batch.images[0][0];  // normalised: white is > 2, black < -2
    EXPECT_GT(red.slice(0, y1 + 2, y2 - 2).slice(1, x1 + 2, x2 - 2).min().item<float>(), 2.0f) << "seed " << seed;
    const float scale = box[3].sub(box[1]).item<float>() / 50.0f;
    const int w = static_cast<int>(std::lround(200 * scale)), h = static_cast<int>(std::lround(100 * scale));
    const auto picture = red.slice(0, 0, h).slice(1, 0, w);  // without the padding
    EXPECT_LT(picture.slice(1, 0, std::max(1, x1 - 2)).max().item<float>(), -1.5f) << "seed " << seed;
    EXPECT_LT(picture.slice(1, std::min(x2 + 2, w - 1), w).max().item<float>(), -1.5f) << "seed " << seed;
    EXPECT_LT(picture.slice(0, std::min(y2 + 2, h - 1), h).max().item<float>(), -1.5f) << "seed " << seed;
    EXPECT_EQ(batch.targets[0].labels[0].item<int64_t>(), 1);
    flipped += x1 > w / 2;
  }
  EXPECT_GT(flipped, 0) << "no flipped batch in 12 seeds";
  EXPECT_LT(flipped, 12) << "every batch flipped";
}
