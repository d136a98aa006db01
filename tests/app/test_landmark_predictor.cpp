// Tests src/engine/landmark_predictor.cpp: the inference path's optimisations (channels-last,
// inference mode, bfloat16) against the plain network, on the fixture model.
#include <cmath>
#include <cstdio>
#include <vector>

#include <opencv2/core.hpp>

#include "cspn/core/io/model_file.hpp"
#include "cspn/core/io/weights.hpp"
#include "cspn/core/model/cspn_net.hpp"
#include "cspn/cspn.hpp"
#include "cspn/engine/landmark_predictor.hpp"
#include "common.hpp"
#include "tensors.hpp"

using namespace cspn;
using cspn::test::max_relative_difference;

// Channels-last weights and inputs and inference mode (LandmarkPredictor::from_model_file) give the
// heatmaps of the network as built and loaded, run in the default layout under NoGradGuard.
TEST(InferencePath, ChannelsLastAndInferenceModeMatchThePlainNetwork) {
  CSPN_REQUIRE_TINY_MODEL();
  const ModelFile file = load_model_file(test::tiny_model().string());
  LandmarkPredictor predictor = LandmarkPredictor::from_model_file(file, torch::kCPU);
  CSPNNet plain(file.config.model.keypoints, file.schema.num_landmarks());
  load_state_dict(*plain, file.tensors, "keypoints.");
  plain->eval();
  torch::manual_seed(3);
  const auto& size = file.config.model.keypoints.input_size;
  const auto x = torch::randn({3, 3, size[0], size[1]});
  torch::NoGradGuard no_grad;
  const auto expected = plain->forward(x).stages;
  const auto got = predictor.run_network(x);
  ASSERT_EQ(got.size(), expected.size());
  for (size_t s = 0; s < got.size(); ++s) {
    EXPECT_TRUE(predictor.network_input(x).is_contiguous(torch::MemoryFormat::ChannelsLast));
    EXPECT_LT(max_relative_difference(got[s], expected[s]), 1e-4) << "stage " << s + 1;
  }
}

// bfloat16 moves the heatmaps a little and the landmarks hardly at all; float16 needs a GPU.
TEST(InferencePath, Bfloat16KeepsTheLandmarks) {
  CSPN_REQUIRE_TINY_MODEL();
  ModelFile file = load_model_file(test::tiny_model().string());
  Pipeline f32(file, torch::kCPU);
  file.config.test.precision = "bfloat16";
  Pipeline bf16(file, torch::kCPU);
  file.config.test.precision = "float16";
  EXPECT_THROW(Pipeline(file, torch::kCPU), std::invalid_argument);

  std::vector<cv::Mat> images;
  for (int i = 1; i <= 6; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "img/%06d.jpg", i);
    images.push_back(read_image((test::tiny_scenes() / name).string()));
  }
  const std::vector<PredictOptions> one_garment{PredictOptions{0.0f, 1, std::nullopt}};
  const auto a = f32.predict(images, one_garment), b = bf16.predict(images, one_garment);
  double moved = 0, count = 0;
  for (size_t i = 0; i < images.size(); ++i) {
    ASSERT_EQ(a[i].size(), 1u);
    ASSERT_EQ(b[i].size(), 1u);
    EXPECT_FLOAT_EQ(a[i][0].box.x1, b[i][0].box.x1) << "the detector stays in float32";
    EXPECT_FLOAT_EQ(a[i][0].box.y2, b[i][0].box.y2);
    for (size_t k = 0; k < a[i][0].landmarks.size(); ++k) {
      const auto &p = a[i][0].landmarks[k], &q = b[i][0].landmarks[k];
      moved += std::hypot(p.x - q.x, p.y - q.y);
      ++count;
    }
  }
  const float box_width = a[0][0].box.width();
  EXPECT_LT(moved / count, 0.02 * box_width) << "mean landmark shift in bfloat16, px";
}

// The flip test's offsets between the plain and mirrored passes: exactly 0 for a network whose
// passes agree (all weights 0: flat heatmaps, decoded to the same place either way), not 0 for a
// randomly initialised one, and not computed without the flip test.
TEST(FlipOffsets, ZeroWhereThePassesAgree) {
  Config cfg;
  cfg.load_yaml_string("model: {keypoints: {backbone: resnet18, stages: 2, channels: 32, input_size: [64, 64]}}\n"
                       "test: {decode: argmax}\n", "test config");
  const LandmarkSchema schema = LandmarkSchema::deepfashion();
  torch::manual_seed(1);
  const auto crops = torch::randn({2, 3, 64, 64});
  CSPNNet random(cfg.model.keypoints, schema.num_landmarks());
  LandmarkPredictor varied(random, cfg, schema, torch::kCPU);
  const auto offsets = varied.predict_crops(crops, false, true).flip_offsets;
  ASSERT_TRUE(offsets.defined());
  EXPECT_EQ(offsets.sizes(), torch::IntArrayRef({2, schema.num_landmarks(), 2}));
  EXPECT_GT(offsets.abs().max().item<float>(), 0.0f);
  EXPECT_FALSE(varied.predict_crops(crops, false, false).flip_offsets.defined());

  CSPNNet flat(cfg.model.keypoints, schema.num_landmarks());
  {
    torch::NoGradGuard no_grad;
    for (auto& p : flat->parameters()) p.zero_();
  }
  LandmarkPredictor agreeing(flat, cfg, schema, torch::kCPU);
  EXPECT_EQ(agreeing.predict_crops(crops, false, true).flip_offsets.abs().max().item<float>(), 0.0f);
}
