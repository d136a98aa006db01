// Tests src/api/json.cpp: garment_json's keys and COCO visibilities, and garment_from_json reading
// them back.
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cspn/api/json.hpp"

namespace cspn {
namespace {

GarmentPrediction upper_garment(const LandmarkSchema& schema) {
  GarmentPrediction g;
  g.category = schema.category_index("upper");
  g.score = 0.75f;
  g.box = {10, 20, 110, 220};
  g.landmarks.resize(schema.num_landmarks());
  for (int k : schema.categories[g.category].landmarks)
    g.landmarks[k] = {20.0f + k, 30.5f + k, 0.1f * k, k % 2 == 0};
  return g;
}

TEST(GarmentJson, RoundTripsThroughGarmentFromJson) {
  const LandmarkSchema& schema = LandmarkSchema::deepfashion();
  const GarmentPrediction g = upper_garment(schema);
  const nlohmann::json j = garment_json(g, schema);
  EXPECT_EQ(j["category"], "upper");
  EXPECT_EQ(j["bbox"], nlohmann::json({10.0f, 20.0f, 100.0f, 200.0f}));
  const GarmentPrediction back = garment_from_json(j, schema);
  EXPECT_EQ(back.category, g.category);
  EXPECT_FLOAT_EQ(back.score, g.score);
  EXPECT_FLOAT_EQ(back.box.x2, g.box.x2);
  EXPECT_FLOAT_EQ(back.box.y2, g.box.y2);
  for (int k : schema.categories[g.category].landmarks) {
    EXPECT_FLOAT_EQ(back.landmarks[k].x, g.landmarks[k].x) << k;
    EXPECT_FLOAT_EQ(back.landmarks[k].y, g.landmarks[k].y) << k;
    EXPECT_FLOAT_EQ(back.landmarks[k].score, g.landmarks[k].score) << k;
    EXPECT_EQ(back.landmarks[k].visible, g.landmarks[k].visible) << k;
  }
  // Slots outside the category come back empty (COCO v 0).
  const int waist = schema.landmark_index("left_waistline");
  EXPECT_EQ(j["keypoints"][3 * waist + 2], 0);
  EXPECT_FLOAT_EQ(back.landmarks[waist].score, 0.0f);
}

TEST(GarmentJson, MalformedGarmentsNameTheKey) {
  const LandmarkSchema& schema = LandmarkSchema::deepfashion();
  nlohmann::json j = garment_json(upper_garment(schema), schema);
  const auto error_of = [&](nlohmann::json bad) {
    try {
      garment_from_json(bad, schema);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  nlohmann::json no_bbox = j;
  no_bbox.erase("bbox");
  EXPECT_NE(error_of(no_bbox).find("bbox"), std::string::npos);
  nlohmann::json short_keypoints = j;
  short_keypoints["keypoints"] = {1, 2, 2};
  EXPECT_NE(error_of(short_keypoints).find("keypoints"), std::string::npos);
  nlohmann::json bad_category = j;
  bad_category["category_id"] = 9;
  EXPECT_NE(error_of(bad_category).find("category_id 9"), std::string::npos);
}

}  // namespace
}  // namespace cspn
