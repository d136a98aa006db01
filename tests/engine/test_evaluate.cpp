// Tests src/engine/evaluate.cpp: evaluation scores every stage, the last being the model's answer,
// and the mean-shape baseline places the training garments' average layout in each test box.
#include <cmath>
#include <functional>

#include "cspn/core/io/weights.hpp"
#include "cspn/core/model/cspn_net.hpp"
#include "cspn/data/readers.hpp"
#include "cspn/engine/evaluate.hpp"
#include "common.hpp"
#include "train_fixtures.hpp"

using namespace cspn;
using cspn::test::small_config;
using cspn::test::synthetic_set;

TEST(Evaluate, ScoresEveryStageAndTheLastIsTheModelsAnswer) {
  Config cfg = small_config();
  cfg.model.keypoints.stages = 3;
  const Dataset test_set = read_split(synthetic_set(), "fld", "test", cfg, false);
  ModelFile model{cfg, test_set.schema, {}, {}};
  torch::manual_seed(5);
  CSPNNet net(cfg.model.keypoints, test_set.schema.num_landmarks());
  for (auto& [name, tensor] : state_dict(*net)) model.tensors.emplace_back("keypoints." + name, tensor);
  const auto result = evaluate_model(model, test_set, EvalOptions{"gt", "cpu", false});
  const auto& m = result.metrics;
  ASSERT_EQ(m["per_stage"].size(), 3u);
  for (int s = 0; s < 3; ++s) {
    EXPECT_EQ(m["per_stage"][s]["stage"], s + 1);
    EXPECT_TRUE(m["per_stage"][s]["ne_image"]["avg"].is_number());
  }
  const auto& last = m["per_stage"].back();
  EXPECT_EQ(last["ne_image"]["avg"], m["ne_image"]["avg"]);
  EXPECT_EQ(last["ne_paper"]["avg"], m["ne_paper"]["avg"]);
  EXPECT_EQ(last["pck_0_2"], m["pck_0_2"]);
  // Untrained correction heads are not zero: the stages' answers differ.
  EXPECT_NE(m["per_stage"][0]["ne_image"]["avg"], last["ne_image"]["avg"]);
  EXPECT_NE(result.table.find("per stage ne_image: 1 "), std::string::npos) << result.table;
}

// The baseline by hand: the training garments' landmarks in box units, averaged, placed in the
// test box. Every test landmark is 3 px right and 4 px below that: 5 px off each.
TEST(Evaluate, MeanShapeIsTheAverageLayoutInTheTestBox) {
  const LandmarkSchema schema = LandmarkSchema::deepfashion();
  const int upper = schema.category_index("upper");
  const auto& slots = schema.categories[upper].landmarks;  // collars, sleeves, hems
  const auto garment = [&](Box box, const std::function<Keypoint(size_t)>& at) {
    Garment g;
    g.category = upper;
    g.box = box;
    g.keypoints.assign(schema.num_landmarks(), Keypoint{});
    for (size_t i = 0; i < slots.size(); ++i) g.keypoints[slots[i]] = at(i);
    return g;
  };
  const auto sample = [](Garment g, int width, int height) {
    Sample s;
    s.image = "unused.jpg";
    s.width = width;
    s.height = height;
    s.garments.push_back(std::move(g));
    return s;
  };
  Dataset train, test;
  train.schema = test.schema = schema;
  // Box units (0.1 + 0.1 i, 0.2) and (0.3 + 0.1 i, 0.4): mean (0.2 + 0.1 i, 0.3).
  train.samples.push_back(sample(garment({0, 0, 100, 100}, [](size_t i) {
    return Keypoint{float(100 * (0.1 + 0.1 * i)), 20, Visibility::Visible};
  }), 100, 100));
  train.samples.push_back(sample(garment({0, 0, 200, 100}, [](size_t i) {
    return Keypoint{float(200 * (0.3 + 0.1 * i)), 40, Visibility::Occluded};
  }), 200, 100));
  // Test box 200 x 200 at (100, 50): the mean shape puts landmark i at (140 + 20 i, 110).
  test.samples.push_back(sample(garment({100, 50, 300, 250}, [](size_t i) {
    return Keypoint{float(140 + 20 * i + 3), 110 + 4, Visibility::Visible};
  }), 400, 300));

  const nlohmann::json m = evaluate_mean_shape(train, test).metrics;
  EXPECT_EQ(m["crops"], 1);
  EXPECT_NEAR(m["epe_px"].get<double>(), 5.0, 1e-4);
  // Sleeves (slots 2 and 3 of the category) are 20 px apart: ne_paper 5 / 20.
  EXPECT_NEAR(m["ne_paper"]["avg"].get<double>(), 0.25, 1e-5);
  EXPECT_NEAR(m["ne_image"]["avg"].get<double>(), std::hypot(3.0 / 400, 4.0 / 300), 1e-6);
  EXPECT_EQ(m["pck_0_2"].get<double>(), 1.0);
  EXPECT_THROW(evaluate_mean_shape(Dataset{schema, {}, {}}, test), std::invalid_argument);
}
