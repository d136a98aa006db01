// Tests src/data/csv.cpp: the CSV reader on the Ziegler robot landmarks of ../shared/data (columns
// by name, garment-own left mirrored to the image left) and on hand-written broken inputs.
#include <algorithm>
#include <filesystem>
#include <map>
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

TEST(ReadCsv, ZieglerRowsCategoriesAndMirroring) {
  CSPN_REQUIRE_SHARED("ziegler_robot_landmarks");
  const fs::path dir = test::shared_data() / "ziegler_robot_landmarks";
  const Dataset d = read_csv(dir.string());  // the folder: its only CSV is info.csv
  ASSERT_EQ(d.samples.size(), 78u);
  EXPECT_TRUE(d.skipped.empty());
  int upper = 0, lower = 0;
  for (const Sample& s : d.samples) {
    upper += s.garments.at(0).category == kUpper;
    lower += s.garments.at(0).category == kLower;
    EXPECT_EQ(s.width, 960);
    EXPECT_EQ(s.height, 720);
    EXPECT_EQ(s.split, "train");
    const Garment& g = s.garments[0];
    for (const Keypoint& p : g.keypoints) {
      if (p.v == Visibility::Absent) continue;
      EXPECT_TRUE(p.x >= g.box.x1 && p.x <= g.box.x2 && p.y >= g.box.y1 && p.y <= g.box.y2) << s.where;
    }
    // After the swap every pair follows the FLD convention: left partner on the image left.
    for (int left : {kLeftCollar, kLeftSleeve, kLeftWaist, kLeftHem}) {
      const Keypoint &l = g.keypoints[left], &r = g.keypoints[left + 1];
      if (l.v != Visibility::Absent && r.v != Visibility::Absent) {
        EXPECT_LT(l.x, r.x) << s.where << " slot " << left;
      }
    }
  }
  EXPECT_EQ(upper, 60);
  EXPECT_EQ(lower, 18);

  // Row 3: 2019-06-06-153852.jpg, a Tee: lm_lc (569,178) lm_rc (427,171) lm_ls (653,287)
  // lm_rs (370,299) lm_lh (648,555) lm_rh (424,561), waist absent (placeholder = box corner).
  const Sample& tee = d.samples[1];
  EXPECT_EQ(fs::path(tee.image).filename(), "2019-06-06-153852.jpg");
  EXPECT_NE(tee.where.find("info.csv:3"), std::string::npos) << tee.where;
  EXPECT_EQ(tee.garments[0].category, kUpper);
  EXPECT_FLOAT_EQ(kp(tee, kLeftCollar).x, 427);  // was lm_rc: the image-left collar
  EXPECT_FLOAT_EQ(kp(tee, kLeftCollar).y, 171);
  EXPECT_FLOAT_EQ(kp(tee, kRightCollar).x, 569);
  EXPECT_FLOAT_EQ(kp(tee, kLeftSleeve).x, 370);
  EXPECT_FLOAT_EQ(kp(tee, kLeftHem).x, 424);
  EXPECT_FLOAT_EQ(kp(tee, kRightHem).y, 555);
  EXPECT_EQ(kp(tee, kLeftWaist).v, Visibility::Absent);
  EXPECT_FLOAT_EQ(tee.garments[0].box.x1, 339);
  EXPECT_FLOAT_EQ(tee.garments[0].box.y2, 576);

  ReadOptions own;
  own.garment_left = false;  // keep the file's garment-own left
  const Dataset raw = read_csv((dir / "info.csv").string(), own);
  EXPECT_FLOAT_EQ(kp(raw.samples[1], kLeftCollar).x, 569);
  EXPECT_FLOAT_EQ(kp(raw.samples[1], kLeftSleeve).x, 653);
}

// Two rows in the info.csv layout, columns deliberately out of the original order.
std::string csv_text(const std::vector<std::map<std::string, std::string>>& edits = {}, const std::string& drop = "") {
  std::vector<std::string> cols = {"category_type", "image_name", "x_1", "y_1", "x_2", "y_2", "evaluation_status"};
  for (const char* s : {"rh", "lh", "rw", "lw", "rs", "ls", "rc", "lc"})
    for (const char* f : {"_x", "_y", "_vis", "_in_pic"}) cols.push_back(std::string("lm_") + s + f);
  cols.erase(std::remove(cols.begin(), cols.end(), drop), cols.end());
  std::vector<std::map<std::string, std::string>> rows(2);
  for (auto& r : rows)
    for (const auto& c : cols) r[c] = "0.0";
  // Upper body with the garment's own left on the image right (as in the file).
  rows[0].insert_or_assign("image_name", "a.jpg");
  for (const auto& [k, v] : std::map<std::string, std::string>{{"x_1", "10.0"},
                                                               {"y_1", "5.0"},
                                                               {"x_2", "90.0"},
                                                               {"y_2", "75.0"},
                                                               {"lm_lc_x", "60"},
                                                               {"lm_lc_y", "8"},
                                                               {"lm_rc_x", "40"},
                                                               {"lm_rc_y", "9"},
                                                               {"lm_ls_x", "85"},
                                                               {"lm_ls_y", "30"},
                                                               {"lm_rs_x", "15"},
                                                               {"lm_rs_y", "31"},
                                                               {"lm_lh_x", "70"},
                                                               {"lm_lh_y", "70"},
                                                               {"lm_rh_x", "30"},
                                                               {"lm_rh_y", "71"}})
    rows[0][k] = v;
  for (const char* s : {"lc", "rc", "ls", "rs", "lh", "rh"}) rows[0][std::string("lm_") + s + "_vis"] = "1.0";
  rows[1]["image_name"] = "b.jpg";
  rows[1]["category_type"] = "1.0";
  for (const auto& [k, v] : std::map<std::string, std::string>{{"x_1", "20"},
                                                               {"y_1", "5"},
                                                               {"x_2", "80"},
                                                               {"y_2", "78"},
                                                               {"lm_lw_x", "70"},
                                                               {"lm_lw_y", "6"},
                                                               {"lm_rw_x", "30"},
                                                               {"lm_rw_y", "6"},
                                                               {"lm_lh_x", "75"},
                                                               {"lm_lh_y", "76"},
                                                               {"lm_rh_x", "25"},
                                                               {"lm_rh_y", "77"}})
    rows[1][k] = v;
  for (const char* s : {"lw", "rw", "lh", "rh"}) rows[1][std::string("lm_") + s + "_vis"] = "1.0";
  for (std::size_t i = 0; i < edits.size() && i < rows.size(); ++i)
    for (const auto& [k, v] : edits[i]) rows[i][k] = v;
  std::string text;
  for (std::size_t c = 0; c < cols.size(); ++c) text += (c ? "," : "") + cols[c];
  text += "\n";
  for (const auto& r : rows) {
    for (std::size_t c = 0; c < cols.size(); ++c) text += (c ? "," : "") + r.at(cols[c]);
    text += "\n";
  }
  return text;
}

fs::path write_csv(const std::string& name, const std::string& text) {
  const fs::path dir = test::scratch_dir(name);
  write_jpeg(dir / "a.jpg", 100, 80);
  write_jpeg(dir / "b.jpg", 100, 80);
  write_file(dir / "info.csv", text);
  return dir / "info.csv";
}

TEST(ReadCsv, ColumnsByNameAndMirroring) {
  const fs::path file = write_csv("csv_good", csv_text());
  const Dataset d = read_csv(file.string());
  ASSERT_EQ(d.samples.size(), 2u);
  const Sample& a = d.samples[0];
  EXPECT_EQ(a.garments[0].category, kUpper);
  EXPECT_FLOAT_EQ(kp(a, kLeftCollar).x, 40);  // lm_rc: the image-left collar
  EXPECT_FLOAT_EQ(kp(a, kLeftCollar).y, 9);
  EXPECT_FLOAT_EQ(kp(a, kLeftSleeve).x, 15);
  EXPECT_FLOAT_EQ(kp(a, kRightHem).x, 70);
  EXPECT_EQ(kp(a, kLeftWaist).v, Visibility::Absent);
  EXPECT_FLOAT_EQ(a.garments[0].box.y2, 75);
  const Sample& b = d.samples[1];
  EXPECT_EQ(b.garments[0].category, kLower);
  EXPECT_FLOAT_EQ(kp(b, kLeftWaist).x, 30);
  EXPECT_FLOAT_EQ(kp(b, kRightHem).y, 76);
  EXPECT_EQ(kp(b, kLeftCollar).v, Visibility::Absent);
}

TEST(ReadCsv, MalformedInputNamesFileAndLine) {
  struct Case {
    const char* name;
    std::string text;
    const char* where;
    const char* what;
  };
  std::string short_line = csv_text();
  short_line.erase(short_line.rfind(','), std::string::npos);
  short_line += "\n";
  const std::vector<Case> cases = {
      {"short line", short_line, "info.csv:3", "comma-separated fields as in the header, got 38"},
      {"not a number", csv_text({{{"lm_lc_x", "6O"}}}), "info.csv:2", "lm_lc_x: expected a number, got '6O'"},
      {"unknown category", csv_text({{{"category_type", "3.0"}}}), "info.csv:2", "unknown category_type '3.0'"},
      {"visibility", csv_text({{{"lm_lc_vis", "0.5"}}}), "info.csv:2", "lm_lc_vis: expected a whole number in [0, 1]"},
      {"wrong slot", csv_text({{}, {{"lm_lc_vis", "1.0"}, {"lm_lc_x", "50"}}}), "info.csv:3",
       "right_collar is labelled but category lower"},
      {"duplicate", csv_text({{}, {{"image_name", "a.jpg"}}}), "info.csv:3",
       "duplicate image 'a.jpg' (first at line 2)"},
      {"box outside", csv_text({{{"x_2", "150"}}}), "info.csv:2", "lies outside the 100x80 image"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const fs::path file = write_csv("csv_broken", c.text);
    const std::string msg = data_error([&] { read_csv(file.string()); });
    EXPECT_NE(msg.find(file.parent_path().string() + "/" + c.where + ": "), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.what), std::string::npos) << msg;
    ReadOptions skip;
    skip.skip_bad = true;
    const Dataset d = read_csv(file.string(), skip);
    EXPECT_EQ(d.samples.size(), 1u);
    ASSERT_EQ(d.skipped.size(), 1u);
    EXPECT_EQ(d.skipped[0], msg);
  }
  // A missing column breaks every row: an error even with skip_bad.
  const fs::path file = write_csv("csv_no_column", csv_text({}, "lm_rh_vis"));
  ReadOptions skip;
  skip.skip_bad = true;
  const std::string msg = data_error([&] { read_csv(file.string(), skip); });
  EXPECT_NE(msg.find("info.csv:1: missing column 'lm_rh_vis'"), std::string::npos) << msg;
}

}  // namespace
}  // namespace cspn
