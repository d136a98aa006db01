#include "cspn/api/json.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "cspn/core/util.hpp"

namespace cspn {

nlohmann::json garment_json(const GarmentPrediction& g, const LandmarkSchema& schema) {
  nlohmann::json keypoints = nlohmann::json::array(), named = nlohmann::json::object();
  const auto& in_category = schema.categories[g.category].landmarks;
  for (int k = 0; k < schema.num_landmarks(); ++k) {
    const LandmarkPoint& p = g.landmarks[k];
    const bool ours = std::find(in_category.begin(), in_category.end(), k) != in_category.end();
    // COCO visibility: 2 visible, 1 predicted but below test.visible_score, 0 not in the category.
    keypoints.insert(keypoints.end(), {ours ? decimal(p.x) : 0.0, ours ? decimal(p.y) : 0.0, ours ? (p.visible ? 2 : 1) : 0});
    if (ours)
      named[schema.landmarks[k]] = {
          {"x", decimal(p.x)}, {"y", decimal(p.y)}, {"score", decimal(p.score)}, {"visible", p.visible}};
  }
  return {{"category_id", g.category + 1},
          {"category", schema.categories[g.category].name},
          {"bbox", {decimal(g.box.x1), decimal(g.box.y1), decimal(g.box.width()), decimal(g.box.height())}},
          {"score", decimal(g.score)},
          {"uncertainty", g.uncertainty ? nlohmann::json(decimal(*g.uncertainty)) : nlohmann::json()},
          {"keypoints", keypoints},
          {"landmarks", named}};
}

GarmentPrediction garment_from_json(const nlohmann::json& j, const LandmarkSchema& schema) {
  const auto field = [&](const char* key) -> const nlohmann::json& {
    if (!j.is_object() || !j.contains(key)) throw std::invalid_argument(std::string("garment: no '") + key + "'");
    return j.at(key);
  };
  try {
    GarmentPrediction g;
    g.category = field("category_id").get<int>() - 1;
    if (g.category < 0 || g.category >= schema.num_categories())
      throw std::invalid_argument("category_id " + std::to_string(g.category + 1) + " is not one of schema " +
                                  schema.name + "'s 1.." + std::to_string(schema.num_categories()));
    g.score = field("score").get<float>();
    if (j.contains("uncertainty") && !j.at("uncertainty").is_null()) g.uncertainty = j.at("uncertainty").get<float>();
    const auto bbox = field("bbox").get<std::vector<float>>();
    if (bbox.size() != 4) throw std::invalid_argument("bbox should be [x, y, w, h]");
    g.box = {bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1] + bbox[3]};
    const auto keypoints = field("keypoints").get<std::vector<float>>();
    if (static_cast<int>(keypoints.size()) != 3 * schema.num_landmarks())
      throw std::invalid_argument("keypoints should hold [x, y, v] for each of schema " + schema.name + "'s " +
                                  std::to_string(schema.num_landmarks()) + " landmarks");
    const nlohmann::json& named = field("landmarks");
    g.landmarks.resize(schema.num_landmarks());
    for (int k = 0; k < schema.num_landmarks(); ++k) {
      LandmarkPoint& p = g.landmarks[k];
      p.x = keypoints[3 * k];
      p.y = keypoints[3 * k + 1];
      p.visible = keypoints[3 * k + 2] == 2;
      if (named.contains(schema.landmarks[k])) p.score = named.at(schema.landmarks[k]).value("score", 0.0f);
    }
    return g;
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(std::string("garment: ") + e.what());
  }
}

nlohmann::json categories_json(const LandmarkSchema& schema) {
  nlohmann::json categories = nlohmann::json::array();
  for (int c = 0; c < schema.num_categories(); ++c) {
    nlohmann::json names = nlohmann::json::array();
    for (int k : schema.categories[c].landmarks) names.push_back(schema.landmarks[k]);
    categories.push_back({{"id", c + 1}, {"name", schema.categories[c].name}, {"landmarks", names}});
  }
  return categories;
}

}  // namespace cspn
