// Landmark schemas as files, and the readers of the data sets that use other schemas: FashionAI's
// train.csv, DeepFashion2 (its own layout and its COCO conversion), DeepFashion-C.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "common.hpp"
#include "cspn/data/readers.hpp"

namespace cspn {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string data_error(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const DataError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no DataError";
  return "";
}

std::string argument_error(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  ADD_FAILURE() << "no std::invalid_argument";
  return "";
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// --- schemas --------------------------------------------------------------------------------------

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

// --- FashionAI -------------------------------------------------------------------------------------

// The one real row of ../shared/data/fashionai_keypoints (13 blouse columns) placed into the
// challenge's 24-column layout, absent columns -1_-1_-1.
struct FashionAIFiles {
  fs::path dir, csv;
  std::vector<std::string> row;  // 24 x_y_v values
};

FashionAIFiles fashionai_files(const std::string& name) {
  FashionAIFiles f;
  f.dir = test::scratch_dir(name);
  const fs::path src = test::shared_data() / "fashionai_keypoints";
  std::ifstream in(src / "split_blouse.csv");
  std::string line;
  std::getline(in, line);
  std::vector<std::string> cells;
  for (size_t start = 0;;) {
    const size_t comma = line.find(',', start);
    cells.push_back(line.substr(start, comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  // The derivative keeps the blouse's 13 columns in the challenge's order (README).
  const std::vector<std::string> blouse{"neckline_left", "neckline_right", "center_front", "shoulder_left", "shoulder_right",
                                        "armpit_left", "armpit_right", "cuff_left_in", "cuff_left_out", "cuff_right_in",
                                        "cuff_right_out", "top_hem_left", "top_hem_right"};
  const LandmarkSchema schema = LandmarkSchema::load("fashionai");
  f.row.assign(24, "-1_-1_-1");
  for (size_t i = 0; i < blouse.size(); ++i) f.row[schema.landmark_index(blouse[i])] = cells[2 + i];
  fs::create_directories(f.dir / "Images" / "blouse");
  const std::string image = fs::path(cells[0]).filename().string();
  fs::copy_file(src / image, f.dir / "Images" / "blouse" / image, fs::copy_options::overwrite_existing);
  f.csv = f.dir / "train.csv";
  std::ofstream out(f.csv);
  out << "image_id,image_category";
  for (const auto& n : schema.landmarks) out << "," << n;
  out << "\n" << cells[0] << ",blouse";
  for (const auto& v : f.row) out << "," << v;
  out << "\n";
  return f;
}

ReadOptions schema_options(const std::string& name) {
  ReadOptions o;
  o.schema = LandmarkSchema::load(name);
  return o;
}

TEST(ReadFashionAI, TheRealRowInTheChallengeLayout) {
  CSPN_REQUIRE_SHARED("fashionai_keypoints");
  const FashionAIFiles f = fashionai_files("fashionai_real");
  const Dataset d = read_dataset(f.csv.string(), "fashionai", schema_options("fashionai"));
  ASSERT_EQ(d.samples.size(), 1u);
  const Sample& s = d.samples[0];
  EXPECT_EQ(s.width, 512);
  EXPECT_EQ(s.height, 512);
  ASSERT_EQ(s.garments.size(), 1u);
  const Garment& g = s.garments[0];
  EXPECT_EQ(d.schema.categories[g.category].name, "blouse");
  const auto kp = [&](const std::string& n) { return g.keypoints[d.schema.landmark_index(n)]; };
  // Values of the README's row: neckline_left 187_152_1, neckline_right 291_147_0, cuff_left_out 102_327_1.
  EXPECT_EQ(kp("neckline_left").x, 187);
  EXPECT_EQ(kp("neckline_left").y, 152);
  EXPECT_EQ(kp("neckline_left").v, Visibility::Visible);
  EXPECT_EQ(kp("neckline_right").v, Visibility::Occluded);
  EXPECT_EQ(kp("cuff_left_out").x, 102);
  EXPECT_EQ(kp("waistband_left").v, Visibility::Absent);
  // Box: the landmarks span x 102..375, y 147..406; 10% of that on each side.
  EXPECT_NEAR(g.box.x1, 102 - 27.3, 1e-3);
  EXPECT_NEAR(g.box.x2, 375 + 27.3, 1e-3);
  EXPECT_NEAR(g.box.y1, 147 - 25.9, 1e-3);
  EXPECT_NEAR(g.box.y2, 406 + 25.9, 1e-3);
}

TEST(ReadFashionAI, BrokenRowsNameFileAndLine) {
  CSPN_REQUIRE_SHARED("fashionai_keypoints");
  const FashionAIFiles f = fashionai_files("fashionai_broken");
  const std::string text = test::file_bytes(f.csv);
  const std::string header = text.substr(0, text.find('\n') + 1), row = text.substr(header.size());
  const auto variant = [&](const std::string& name, const std::string& body) {
    const fs::path p = f.dir / (name + ".csv");
    std::ofstream(p) << header << row << body;
    return data_error([&] { read_fashionai(p.string(), schema_options("fashionai")); });
  };
  const std::string cut = row.substr(0, row.rfind(','));
  std::string msg = variant("columns", cut + "\n");
  EXPECT_TRUE(contains(msg, "columns.csv:3: expected 26 columns")) << msg;
  std::string bad_number = row;
  bad_number.replace(bad_number.find("187_152_1"), 9, "187_x_1");
  msg = variant("number", bad_number);
  EXPECT_TRUE(contains(msg, "number.csv:3: neckline_left y")) << msg;
  std::string unknown = row;
  unknown.replace(unknown.find(",blouse,"), 8, ",jacket,");
  msg = variant("category", unknown);
  EXPECT_TRUE(contains(msg, "category.csv:3: unknown category 'jacket'")) << msg;
  std::string missing = row;
  missing.replace(missing.find(".jpg"), 4, "0.jpg");
  msg = variant("image", missing);
  EXPECT_TRUE(contains(msg, "image.csv:3")) << msg;
  EXPECT_TRUE(contains(msg, "0a02d1f1a99aede99cca75b45efc59100.jpg")) << msg;
  // A blouse has no waistband.
  std::string outside = row;
  outside.replace(outside.rfind("-1_-1_-1"), 8, "200_200_1");
  msg = variant("outside", outside);
  EXPECT_TRUE(contains(msg, "outside.csv:3: bottom_right_out is labelled but category blouse has no such landmark")) << msg;
  // Read with the wrong schema: says what to set.
  msg = data_error([&] { read_fashionai(f.csv.string()); });
  EXPECT_TRUE(contains(msg, "data.schema=fashionai")) << msg;
}

// --- DeepFashion2 ----------------------------------------------------------------------------------

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

// --- DeepFashion-C ---------------------------------------------------------------------------------

TEST(ReadDeepFashionC, CategoryAndAttributeLayoutWithPaddedRows) {
  CSPN_REQUIRE_SHARED("ziegler_robot_landmarks");
  // Category & Attribute Prediction: images under img/<style folder>/, every row padded to 8
  // landmarks (zeros after the category's own).
  const fs::path root = test::scratch_dir("deepfashion_c");
  fs::create_directories(root / "Anno");
  fs::create_directories(root / "Eval");
  fs::create_directories(root / "img" / "Striped_Skirt");
  const fs::path photo = test::shared_data() / "ziegler_robot_landmarks" / "2019-06-06-150617.jpg";
  fs::copy_file(photo, root / "img" / "Striped_Skirt" / "img_00000001.jpg", fs::copy_options::overwrite_existing);
  std::ofstream(root / "Anno" / "list_landmarks.txt")
      << "1\nimage_name clothes_type variation_type landmark_visibility_1 landmark_location_x_1 ...\n"
      << "img/Striped_Skirt/img_00000001.jpg 2 1 0 300 200 1 500 210 0 280 600 0 520 610 0 0 0 0 0 0 0 0 0 0 0 0\n";
  std::ofstream(root / "Anno" / "list_bbox.txt") << "1\nimage_name x_1 y_1 x_2 y_2\nimg/Striped_Skirt/img_00000001.jpg 250 150 560 650\n";
  std::ofstream(root / "Eval" / "list_eval_partition.txt") << "1\nimage_name evaluation_status\nimg/Striped_Skirt/img_00000001.jpg val\n";
  const Dataset d = read_dataset(root.string(), "deepfashion-c");
  ASSERT_EQ(d.samples.size(), 1u);
  const Garment& g = d.samples[0].garments[0];
  EXPECT_EQ(d.schema.categories[g.category].name, "lower");
  EXPECT_EQ(d.samples[0].split, "val");
  const auto kp = [&](const std::string& n) { return g.keypoints[d.schema.landmark_index(n)]; };
  EXPECT_EQ(kp("left_waistline").x, 300);
  EXPECT_EQ(kp("right_waistline").v, Visibility::Occluded);
  EXPECT_EQ(kp("right_hem").y, 610);
  EXPECT_EQ(kp("left_collar").v, Visibility::Absent);

  std::ofstream(root / "Anno" / "list_landmarks.txt")
      << "1\nimage_name clothes_type variation_type ...\nimg/Striped_Skirt/img_00000001.jpg 4 1 0 300 200\n";
  const std::string msg = data_error([&] { read_dataset(root.string(), "deepfashion-c"); });
  EXPECT_TRUE(contains(msg, "list_landmarks.txt:3: unknown clothes_type '4' (expected 1 upper, 2 lower, 3 full)")) << msg;
}

}  // namespace
}  // namespace cspn
