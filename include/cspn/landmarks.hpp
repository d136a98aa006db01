#pragma once
// Landmark metadata as data: slot names, left/right flip partners, per-category landmark sets and
// the pair of landmarks whose distance normalises the paper's NE (eq. 3).
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

namespace cspn {

// Visibility of one landmark, in raw DeepFashion terms.
enum class Visibility : std::int8_t { Visible = 0, Occluded = 1, Absent = 2 };

struct Category {
  std::string name;             // "upper", "lower", "full"
  std::vector<int> landmarks;   // slots this category has, in the dataset's listing order
  std::array<int, 2> norm_pair; // slots whose distance is s_k of the paper's NE
};

struct LandmarkSchema {
  std::string name;
  std::vector<std::string> landmarks;  // one name per slot ("left_collar", ...)
  std::vector<int> flip;               // flip[i]: the slot that i becomes in a mirrored image
  std::vector<Category> categories;

  int num_landmarks() const { return static_cast<int>(landmarks.size()); }
  int num_categories() const { return static_cast<int>(categories.size()); }
  // Throws std::invalid_argument naming the unknown value and the known ones.
  int category_index(const std::string& name) const;
  int landmark_index(const std::string& name) const;
  // [N] int64 category indices -> [N, K] float, 1 where the category has the slot.
  torch::Tensor category_mask(const torch::Tensor& categories) const;

  nlohmann::json to_json() const;
  // Validates (flip is an involution, indices in range) and throws on inconsistent data.
  static LandmarkSchema from_json(const nlohmann::json& j);

  // DeepFashion FLD: 8 slots (collars, sleeves, waistlines, hems); upper 6, lower 4, full 8.
  // "left" is the image left of a front-facing garment (the viewer's left).
  static const LandmarkSchema& deepfashion();
};

}  // namespace cspn
