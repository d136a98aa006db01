// Tests src/api/pipeline.cpp: Pipeline's per-image options give what separate calls give.
#include <cmath>
#include <vector>

#include <opencv2/core.hpp>

#include "cspn/core/io/model_file.hpp"
#include "cspn/cspn.hpp"
#include "common.hpp"

using namespace cspn;

TEST(PipelineOptions, PerImageOptionsMatchSeparateCalls) {
  CSPN_REQUIRE_TINY_MODEL();
  const ModelFile model = load_model_file(test::tiny_model().string());
  Pipeline pipeline(model, torch::kCPU);
  const cv::Mat a = read_image((test::tiny_scenes() / "img" / "000001.jpg").string());
  const cv::Mat b = read_image((test::tiny_scenes() / "img" / "000002.jpg").string());
  PredictOptions flipped, plain, two;
  flipped.min_score = plain.min_score = two.min_score = 0;
  flipped.flip = true;
  plain.flip = false;
  two.max_garments = 2;
  PredictTimings timings;
  const auto together = pipeline.predict({a, b, a}, {flipped, plain, two}, &timings);
  const auto alone_a = pipeline.predict({a}, {flipped}).front();
  const auto alone_b = pipeline.predict({b}, {plain}).front();
  ASSERT_EQ(together.size(), 3u);
  ASSERT_EQ(together[0].size(), 4u) << "min_score 0: the fixture detector's 4 boxes";
  ASSERT_EQ(together[1].size(), alone_b.size());
  EXPECT_EQ(together[2].size(), 2u) << "max_garments";
  EXPECT_EQ(timings.crops, 4 + static_cast<int>(alone_b.size()) + 2);
  EXPECT_GT(timings.detector_ms, 0);
  EXPECT_GT(timings.landmarks_ms, 0);
  const auto same = [&](const std::vector<GarmentPrediction>& x, const std::vector<GarmentPrediction>& y) {
    ASSERT_EQ(x.size(), y.size());
    for (size_t g = 0; g < x.size(); ++g) {
      EXPECT_EQ(x[g].category, y[g].category);
      // Batches of other sizes take other kernels: boxes agree to float rounding (hundreds of
      // pixels, through exp of the box deltas).
      EXPECT_NEAR(x[g].box.x1, y[g].box.x1, 0.01);
      EXPECT_NEAR(x[g].box.y1, y[g].box.y1, 0.01);
      EXPECT_NEAR(x[g].box.x2, y[g].box.x2, 0.01);
      EXPECT_NEAR(x[g].box.y2, y[g].box.y2, 0.01);
      // The crop is resampled by OpenCV's fixed-point bilinear warp (1/32 px steps), so a box that
      // moved by rounding can shift the crop's samples, and this barely trained model's flat peaks
      // turn that into landmark moves of up to 0.07 px (seen in a clang build; 2e-5 px with GCC).
      // An option applied to the wrong image moves landmarks by pixels (the flip: up to 10 px).
      for (size_t k = 0; k < x[g].landmarks.size(); ++k) {
        EXPECT_NEAR(x[g].landmarks[k].x, y[g].landmarks[k].x, 0.25);
        EXPECT_NEAR(x[g].landmarks[k].y, y[g].landmarks[k].y, 0.25);
      }
    }
  };
  same(together[0], alone_a);
  same(together[1], alone_b);
  // The flip test changes the answer (it averages two views), so the groups really differ.
  PredictOptions a_plain = plain;
  const auto unflipped = pipeline.predict({a}, {a_plain}).front();
  float moved = 0;
  for (size_t k = 0; k < unflipped[0].landmarks.size(); ++k)
    moved += std::abs(unflipped[0].landmarks[k].x - alone_a[0].landmarks[k].x);
  EXPECT_GT(moved, 0.0f);
  EXPECT_THROW(pipeline.predict({a, b}, {plain, plain, plain}), std::invalid_argument);
}

// Each garment's uncertainty with the flip test: positive for the fixture model, which was never
// trained to be mirror-consistent, and in predict's JSON; absent (JSON null) without the flip test.
TEST(PipelineUncertainty, SetWithTheFlipTestOnly) {
  CSPN_REQUIRE_TINY_MODEL();
  const ModelFile model = load_model_file(test::tiny_model().string());
  Pipeline pipeline(model, torch::kCPU);
  const cv::Mat a = read_image((test::tiny_scenes() / "img" / "000001.jpg").string());
  PredictOptions flipped, plain;
  flipped.min_score = plain.min_score = 0;
  flipped.flip = true;
  plain.flip = false;
  const auto with = pipeline.predict({a}, {flipped}).front(), without = pipeline.predict({a}, {plain}).front();
  ASSERT_FALSE(with.empty());
  for (const auto& g : with) {
    ASSERT_TRUE(g.uncertainty.has_value());
    EXPECT_GT(*g.uncertainty, 0.0f);
    EXPECT_LT(*g.uncertainty, 1.5f) << "ne_image units: at most the image's diagonal over its sides";
    EXPECT_FLOAT_EQ(garment_json(g, pipeline.schema())["uncertainty"].get<float>(), *g.uncertainty);
    EXPECT_FLOAT_EQ(*garment_from_json(garment_json(g, pipeline.schema()), pipeline.schema()).uncertainty,
                    *g.uncertainty);
  }
  for (const auto& g : without) {
    EXPECT_FALSE(g.uncertainty.has_value());
    EXPECT_TRUE(garment_json(g, pipeline.schema())["uncertainty"].is_null());
  }
}
