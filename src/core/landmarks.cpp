#include "cspn/landmarks.hpp"

#include <sstream>
#include <stdexcept>

#include <torch/torch.h>

namespace cspn {
namespace {

std::string join(const std::vector<std::string>& items) {
  std::ostringstream out;
  for (size_t i = 0; i < items.size(); ++i) out << (i ? ", " : "") << items[i];
  return out.str();
}

}  // namespace

int LandmarkSchema::category_index(const std::string& name) const {
  std::vector<std::string> known;
  for (size_t i = 0; i < categories.size(); ++i) {
    if (categories[i].name == name) return static_cast<int>(i);
    known.push_back(categories[i].name);
  }
  throw std::invalid_argument("unknown category '" + name + "' (schema " + this->name + " has: " +
                              join(known) + ")");
}

int LandmarkSchema::landmark_index(const std::string& name) const {
  for (size_t i = 0; i < landmarks.size(); ++i)
    if (landmarks[i] == name) return static_cast<int>(i);
  throw std::invalid_argument("unknown landmark '" + name + "' (schema " + this->name + " has: " +
                              join(landmarks) + ")");
}

torch::Tensor LandmarkSchema::category_mask(const torch::Tensor& cats) const {
  TORCH_CHECK(cats.dim() == 1, "category_mask: categories should be [N], got ", cats.sizes());
  auto table = torch::zeros({num_categories(), num_landmarks()});
  for (int c = 0; c < num_categories(); ++c)
    for (int k : categories[c].landmarks) table[c][k] = 1.0f;
  return table.to(cats.device()).index_select(0, cats.to(torch::kLong));
}

nlohmann::json LandmarkSchema::to_json() const {
  nlohmann::json cats = nlohmann::json::array();
  for (const auto& c : categories)
    cats.push_back({{"name", c.name}, {"landmarks", c.landmarks}, {"norm_pair", c.norm_pair}});
  return {{"name", name}, {"landmarks", landmarks}, {"flip", flip}, {"categories", cats}};
}

LandmarkSchema LandmarkSchema::from_json(const nlohmann::json& j) {
  LandmarkSchema s;
  try {
    s.name = j.at("name").get<std::string>();
    s.landmarks = j.at("landmarks").get<std::vector<std::string>>();
    s.flip = j.at("flip").get<std::vector<int>>();
    for (const auto& c : j.at("categories"))
      s.categories.push_back({c.at("name").get<std::string>(), c.at("landmarks").get<std::vector<int>>(),
                              c.at("norm_pair").get<std::array<int, 2>>()});
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(std::string("landmark schema: ") + e.what());
  }
  const int k = s.num_landmarks();
  auto check_slot = [&](int slot, const std::string& what) {
    if (slot < 0 || slot >= k)
      throw std::invalid_argument("landmark schema " + s.name + ": " + what + " refers to slot " +
                                  std::to_string(slot) + ", schema has " + std::to_string(k));
  };
  if (static_cast<int>(s.flip.size()) != k)
    throw std::invalid_argument("landmark schema " + s.name + ": flip has " + std::to_string(s.flip.size()) +
                                " entries, expected " + std::to_string(k));
  for (int i = 0; i < k; ++i) {
    check_slot(s.flip[i], "flip[" + std::to_string(i) + "]");
    if (s.flip[s.flip[i]] != i)
      throw std::invalid_argument("landmark schema " + s.name + ": flip is not symmetric at " + s.landmarks[i]);
  }
  for (const auto& c : s.categories) {
    for (int slot : c.landmarks) check_slot(slot, "category " + c.name);
    for (int slot : c.norm_pair) check_slot(slot, "category " + c.name + " norm_pair");
  }
  return s;
}

const LandmarkSchema& LandmarkSchema::deepfashion() {
  static const LandmarkSchema schema = from_json(nlohmann::json::parse(R"({
    "name": "deepfashion",
    "landmarks": ["left_collar", "right_collar", "left_sleeve", "right_sleeve",
                  "left_waistline", "right_waistline", "left_hem", "right_hem"],
    "flip": [1, 0, 3, 2, 5, 4, 7, 6],
    "categories": [
      {"name": "upper", "landmarks": [0, 1, 2, 3, 6, 7], "norm_pair": [2, 3]},
      {"name": "lower", "landmarks": [4, 5, 6, 7], "norm_pair": [4, 5]},
      {"name": "full", "landmarks": [0, 1, 2, 3, 4, 5, 6, 7], "norm_pair": [2, 3]}
    ]})"));
  return schema;
}

}  // namespace cspn
