#pragma once
// Landmark metadata as data: slot names, left/right flip partners, per-category landmark sets and
// the pair of landmarks whose distance normalises the paper's NE (eq. 3). Schemas are YAML files
// (schemas/*.yaml, compiled into the library; see from_yaml for the layout); a model file stores
// the schema it was trained with as JSON.
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
  int id = 0;                   // the data set's own code for it (clothes_type, category_id); 0: none
};

struct LandmarkSchema {
  std::string name;
  std::vector<std::string> landmarks;  // one name per slot ("left_collar", ...)
  std::vector<std::string> labels;     // one short table heading per slot ("L.Collar", ...)
  std::vector<int> flip;               // flip[i]: the slot that i becomes in a mirrored image
  std::vector<Category> categories;

  int num_landmarks() const { return static_cast<int>(landmarks.size()); }
  int num_categories() const { return static_cast<int>(categories.size()); }
  // Throws std::invalid_argument naming the unknown value and the known ones.
  int category_index(const std::string& name) const;
  int landmark_index(const std::string& name) const;
  // The category whose id is `id`, or -1.
  int category_with_id(int id) const;
  // [N] int64 category indices -> [N, K] float, 1 where the category has the slot.
  torch::Tensor category_mask(const torch::Tensor& categories) const;

  nlohmann::json to_json() const;
  // Validates (flip is an involution, indices in range) and throws on inconsistent data.
  static LandmarkSchema from_json(const nlohmann::json& j);

  // A schema file's text; `source` names it in errors, which give its line. Layout:
  //   name: NAME
  //   landmarks: [slot names]      (optional: else the categories' landmarks in order of appearance)
  //   labels: [table headings]     (optional, one per slot: else the names)
  //   flip_pairs: [[a, b], ...]    (slots that swap in a mirrored image; others map to themselves)
  //   categories: [{name, id (optional), landmarks: [slot names], norm: [slot, slot]}, ...]
  // Throws std::invalid_argument "SOURCE:LINE: what is wrong".
  static LandmarkSchema from_yaml(const std::string& text, const std::string& source);
  // A built-in schema (deepfashion, deepfashion2, fashionai) by name, or a YAML file by path.
  static LandmarkSchema load(const std::string& name_or_path);
  static std::vector<std::string> builtin_names();

  // DeepFashion FLD: 8 slots (collars, sleeves, waistlines, hems); upper 6, lower 4, full 8.
  // "left" is the image left of a front-facing garment (the viewer's left).
  static const LandmarkSchema& deepfashion();
};

}  // namespace cspn
