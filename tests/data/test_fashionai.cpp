// Tests src/data/fashionai.cpp: FashionAI's train.csv, with the real row of ../shared/data placed
// into the challenge's layout, and broken rows naming the file and line.
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "cspn/data/readers.hpp"
#include "common.hpp"
#include "reader_fixtures.hpp"

namespace cspn {
namespace {

namespace fs = std::filesystem;
using namespace test;

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

}  // namespace
}  // namespace cspn
