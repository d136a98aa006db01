// Tests src/data/deepfashion2.cpp: DeepFashion2's own layout against its COCO conversion of
// ../shared/data, and broken items naming the file and field.
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cspn/data/readers.hpp"
#include "common.hpp"
#include "reader_fixtures.hpp"

namespace cspn {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace test;

const fs::path kDf2 = "mmpose_deepfashion2";

// The COCO conversion's two annotations written back into DeepFashion2's own layout.
fs::path deepfashion2_layout(const std::string& name, const std::function<void(json&)>& edit = {}) {
  const fs::path root = test::scratch_dir(name) / "validation";
  fs::create_directories(root / "image");
  fs::create_directories(root / "annos");
  std::ifstream in(test::shared_data() / kDf2 / "deepfasion2.json");
  const json coco = json::parse(in);
  const LandmarkSchema schema = LandmarkSchema::load("deepfashion2");
  for (const auto& a : coco["annotations"]) {
    json image;
    for (const auto& im : coco["images"])
      if (im["id"] == a["image_id"]) image = im;
    const std::string stem = fs::path(image["file_name"].get<std::string>()).stem().string();
    fs::copy_file(test::shared_data() / kDf2 / image["file_name"].get<std::string>(), root / "image" / (stem + ".jpg"),
                  fs::copy_options::overwrite_existing);
    const Category& cat = schema.categories[schema.category_with_id(a["category_id"].get<int>())];
    json landmarks = json::array();
    for (int k : cat.landmarks)
      for (int j = 0; j < 3; ++j) landmarks.push_back(a["keypoints"][3 * k + j]);
    const auto& b = a["bbox"];
    json item{{"category_id", a["category_id"]},
              {"category_name", cat.name},
              {"bounding_box", {b[0], b[1], b[0].get<double>() + b[2].get<double>(), b[1].get<double>() + b[3].get<double>()}},
              {"landmarks", landmarks}};
    json anno{{"source", "shop"}, {"pair_id", a["pair_id"]}, {"item1", item}};
    if (edit) edit(anno);
    std::ofstream(root / "annos" / (stem + ".json")) << anno.dump();
  }
  return root;
}

TEST(ReadDeepFashion2, CocoConversionAndOwnLayoutGiveTheSameSamples) {
  CSPN_REQUIRE_SHARED(kDf2);
  const ReadOptions opt = schema_options("deepfashion2");
  const Dataset coco = read_dataset((test::shared_data() / kDf2 / "deepfasion2.json").string(), "deepfashion2", opt);
  const Dataset own = read_dataset(deepfashion2_layout("df2_layout").string(), "deepfashion2", opt);
  ASSERT_EQ(coco.samples.size(), 2u);
  ASSERT_EQ(own.samples.size(), 2u);
  std::ifstream in(test::shared_data() / kDf2 / "deepfasion2.json");
  const json file = json::parse(in);
  for (size_t i = 0; i < 2; ++i) {
    const Garment &a = coco.samples[i].garments.at(0), &b = own.samples[i].garments.at(0);
    EXPECT_EQ(coco.schema.categories[a.category].name, "long_sleeved_dress");
    EXPECT_EQ(a.category, b.category);
    EXPECT_EQ(own.samples[i].split, "val");  // the validation/ folder
    EXPECT_FLOAT_EQ(a.box.x2, b.box.x2);
    EXPECT_FLOAT_EQ(a.box.y1, b.box.y1);
    int labelled = 0;
    for (int k = 0; k < 294; ++k) {
      EXPECT_EQ(a.keypoints[k].v, b.keypoints[k].v) << k;
      EXPECT_EQ(a.keypoints[k].x, b.keypoints[k].x) << k;
      labelled += a.keypoints[k].v != Visibility::Absent;
    }
    EXPECT_EQ(labelled, file["annotations"][i]["num_keypoints"].get<int>());  // the file's own count
  }
  EXPECT_FLOAT_EQ(coco.samples[0].garments[0].box.x2, 103 + 601);
}

TEST(ReadDeepFashion2, BrokenItemsNameFileAndField) {
  CSPN_REQUIRE_SHARED(kDf2);
  const ReadOptions opt = schema_options("deepfashion2");
  std::string msg = data_error([&] {
    read_deepfashion2(deepfashion2_layout("df2_count", [](json& a) { a["item1"]["landmarks"].erase(0); }).string(), opt);
  });
  EXPECT_TRUE(contains(msg, "000264.json:item1.landmarks: long_sleeved_dress has 37 landmarks: expected 111 values")) << msg;
  msg = data_error([&] {
    read_deepfashion2(deepfashion2_layout("df2_category", [](json& a) { a["item1"]["category_id"] = 14; }).string(), opt);
  });
  EXPECT_TRUE(contains(msg, "000264.json:item1.category_id: 14 is no category")) << msg;
  msg = data_error([&] {
    read_deepfashion2(deepfashion2_layout("df2_number", [](json& a) { a["item1"]["landmarks"][3] = "x"; }).string(), opt);
  });
  EXPECT_TRUE(contains(msg, "000264.json:item1.landmarks[3]")) << msg;
  const fs::path root = deepfashion2_layout("df2_image");
  fs::remove(root / "image" / "000265.jpg");
  msg = data_error([&] { read_deepfashion2(root.string(), opt); });
  EXPECT_TRUE(contains(msg, "000265.json")) << msg;
  EXPECT_TRUE(contains(msg, "000265.jpg")) << msg;
  ReadOptions skip = opt;
  skip.skip_bad = true;
  const Dataset rest = read_deepfashion2(root.string(), skip);
  EXPECT_EQ(rest.samples.size(), 1u);
  EXPECT_EQ(rest.skipped.size(), 1u);
  // COCO: a labelled slot outside the garment's category.
  msg = data_error([&] {
    json coco = json::parse(std::ifstream(test::shared_data() / kDf2 / "deepfasion2.json"));
    coco["annotations"][0]["keypoints"][2] = 2;  // short_sleeved_shirt_1 on a long sleeved dress
    const fs::path p = test::scratch_dir("df2_coco_slot") / "df2.json";
    std::ofstream(p) << coco.dump();
    for (const char* img : {"000264.jpg", "000265.jpg"})
      fs::copy_file(test::shared_data() / kDf2 / img, p.parent_path() / img, fs::copy_options::overwrite_existing);
    read_coco(p.string(), opt);
  });
  EXPECT_TRUE(contains(msg, "short_sleeved_shirt_1 is labelled but category long_sleeved_dress has no such landmark")) << msg;
}

}  // namespace
}  // namespace cspn
