// Tests src/core/schema.cpp: the landmark schemas built in (schemas/*.yaml) and as files, their
// errors naming the line, and the JSON that model files store.
#include <array>
#include <filesystem>
#include <fstream>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "cspn/core/schema.hpp"
#include "common.hpp"

namespace cspn {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using test::contains;

std::string argument_error(const std::function<void()>& fn) { return test::error_of<std::invalid_argument>(fn); }

TEST(LandmarkSchema, DeepFashionIsConsistentData) {
  const auto& s = cspn::LandmarkSchema::deepfashion();
  ASSERT_EQ(s.num_landmarks(), 8);
  for (int k = 0; k < 8; ++k) {
    EXPECT_EQ(s.flip[s.flip[k]], k);
    // Partners differ only in their side prefix.
    const auto a = s.landmarks[k], b = s.landmarks[s.flip[k]];
    EXPECT_EQ(a.substr(a.find('_')), b.substr(b.find('_')));
  }
  EXPECT_EQ(s.categories[s.category_index("upper")].landmarks.size(), 6u);
  EXPECT_EQ(s.categories[s.category_index("lower")].landmarks.size(), 4u);
  EXPECT_EQ(s.categories[s.category_index("full")].landmarks.size(), 8u);
  EXPECT_THROW(s.category_index("hat"), std::invalid_argument);
  auto mask = s.category_mask(torch::tensor({1, 0}, torch::kLong));
  EXPECT_EQ(mask[0].sum().item<float>(), 4.0f);
  EXPECT_EQ(mask[0][0].item<float>(), 0.0f);  // lower body has no collar
  EXPECT_EQ(mask[1][0].item<float>(), 1.0f);
  auto j = s.to_json();
  j["flip"][0] = 2;  // left collar <-> right sleeve is not an involution with the rest
  EXPECT_THROW(cspn::LandmarkSchema::from_json(j), std::invalid_argument);
}

TEST(Schema, DeepFashionFileIsThePapersDefinition) {
  const LandmarkSchema s = LandmarkSchema::load("deepfashion");
  EXPECT_EQ(s.landmarks, (std::vector<std::string>{"left_collar", "right_collar", "left_sleeve", "right_sleeve",
                                                   "left_waistline", "right_waistline", "left_hem", "right_hem"}));
  EXPECT_EQ(s.flip, (std::vector<int>{1, 0, 3, 2, 5, 4, 7, 6}));
  ASSERT_EQ(s.num_categories(), 3);
  EXPECT_EQ(s.categories[0].name, "upper");
  EXPECT_EQ(s.categories[0].landmarks, (std::vector<int>{0, 1, 2, 3, 6, 7}));
  EXPECT_EQ(s.categories[1].landmarks, (std::vector<int>{4, 5, 6, 7}));
  EXPECT_EQ(s.categories[2].landmarks.size(), 8u);
  // NE (eq. 3): sleeves for upper and full, waistlines for lower; ids are FLD's clothes_type.
  EXPECT_EQ(s.categories[0].norm_pair, (std::array<int, 2>{2, 3}));
  EXPECT_EQ(s.categories[1].norm_pair, (std::array<int, 2>{4, 5}));
  EXPECT_EQ(s.categories[2].norm_pair, (std::array<int, 2>{2, 3}));
  EXPECT_EQ(s.categories[1].id, 2);
  EXPECT_EQ(s.labels[4], "L.Waist");
}

TEST(Schema, DeepFashion2HasThirteenCategoriesOfTheirOwnSlots) {
  const LandmarkSchema s = LandmarkSchema::load("deepfashion2");
  EXPECT_EQ(s.num_landmarks(), 294);
  ASSERT_EQ(s.num_categories(), 13);
  const std::vector<size_t> counts{25, 33, 31, 39, 15, 15, 10, 14, 8, 29, 37, 19, 19};  // DeepFashion2's paper
  std::set<int> seen;
  for (int c = 0; c < 13; ++c) {
    const Category& cat = s.categories[c];
    EXPECT_EQ(cat.id, c + 1);
    EXPECT_EQ(cat.landmarks.size(), counts[c]) << cat.name;
    const std::set<int> own(cat.landmarks.begin(), cat.landmarks.end());
    for (int k : cat.landmarks) {
      EXPECT_TRUE(seen.insert(k).second) << "slot " << k << " shared";
      EXPECT_TRUE(own.count(s.flip[k])) << s.landmarks[k] << " flips out of " << cat.name;
      EXPECT_EQ(s.flip[s.flip[k]], k);
    }
    EXPECT_NE(cat.norm_pair[0], cat.norm_pair[1]);
    EXPECT_EQ(s.flip[cat.norm_pair[0]], cat.norm_pair[1]) << cat.name << ": NE by a left/right pair";
  }
  EXPECT_EQ(s.landmarks[s.categories[10].landmarks[0]], "long_sleeved_dress_1");
}

TEST(Schema, FashionAIMatchesTheChallenge) {
  const LandmarkSchema s = LandmarkSchema::load("fashionai");
  EXPECT_EQ(s.num_landmarks(), 24);
  std::vector<size_t> counts;
  for (const auto& c : s.categories) counts.push_back(c.landmarks.size());
  EXPECT_EQ(counts, (std::vector<size_t>{13, 14, 15, 4, 7}));  // blouse, outwear, dress, skirt, trousers
  const auto norm = [&](const std::string& cat) {
    const auto& p = s.categories[s.category_index(cat)].norm_pair;
    return s.landmarks[p[0]] + "/" + s.landmarks[p[1]];
  };
  EXPECT_EQ(norm("blouse"), "armpit_left/armpit_right");
  EXPECT_EQ(norm("dress"), "armpit_left/armpit_right");
  EXPECT_EQ(norm("skirt"), "waistband_left/waistband_right");
  EXPECT_EQ(norm("trousers"), "waistband_left/waistband_right");
  EXPECT_EQ(s.landmarks[s.flip[s.landmark_index("cuff_left_out")]], "cuff_right_out");
  EXPECT_EQ(s.flip[s.landmark_index("crotch")], s.landmark_index("crotch"));
}

TEST(Schema, FileErrorsNameTheLine) {
  const std::string good =
      "name: tiny\n"
      "landmarks: [a, b, c]\n"
      "flip_pairs:\n"
      "  - [a, b]\n"
      "categories:\n"
      "  - name: one\n"
      "    landmarks: [a, b, c]\n"
      "    norm: [a, b]\n";
  const LandmarkSchema s = LandmarkSchema::from_yaml(good, "tiny.yaml");
  EXPECT_EQ(s.flip, (std::vector<int>{1, 0, 2}));
  EXPECT_EQ(s.labels, s.landmarks);
  // JSON round trip (what a model file stores).
  EXPECT_EQ(LandmarkSchema::from_json(s.to_json()).to_json(), s.to_json());

  auto bad = good;
  bad.replace(bad.find("[a, b]\n"), 7, "[a, d]\n");
  EXPECT_TRUE(contains(argument_error([&] { LandmarkSchema::from_yaml(bad, "tiny.yaml"); }),
                       "tiny.yaml:4: flip_pairs: unknown landmark 'd'"));
  bad = good + "colour: red\n";
  EXPECT_TRUE(contains(argument_error([&] { LandmarkSchema::from_yaml(bad, "tiny.yaml"); }), "tiny.yaml:9: unknown key 'colour'"));
  bad = good;
  bad.replace(bad.find("norm: [a, b]"), 12, "norm: [a]");
  EXPECT_TRUE(contains(argument_error([&] { LandmarkSchema::from_yaml(bad, "tiny.yaml"); }), "tiny.yaml:8: category one norm"));
  EXPECT_TRUE(contains(argument_error([&] { LandmarkSchema::load("deepfashion3"); }), "built in: deepfashion, deepfashion2, fashionai"));

  // A file by path.
  const fs::path file = test::scratch_dir("schema_file") / "tiny.yaml";
  std::ofstream(file) << good;
  EXPECT_EQ(LandmarkSchema::load(file.string()).name, "tiny");
}

TEST(Schema, ModelFileSchemasWithoutLabelsOrIdsStillLoad) {
  // As model files stored the schema before it was a file: the built-in one fills the gaps.
  json old = LandmarkSchema::deepfashion().to_json();
  old.erase("labels");
  for (auto& c : old["categories"]) c.erase("id");
  const LandmarkSchema s = LandmarkSchema::from_json(old);
  EXPECT_EQ(s.labels, LandmarkSchema::deepfashion().labels);
  EXPECT_EQ(s.categories[2].id, 3);
  // A schema of another name keeps the names as headings and no ids.
  old["name"] = "mine";
  const LandmarkSchema mine = LandmarkSchema::from_json(old);
  EXPECT_EQ(mine.labels, mine.landmarks);
  EXPECT_EQ(mine.categories[2].id, 0);
}

}  // namespace
}  // namespace cspn
