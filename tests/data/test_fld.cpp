// Tests src/data/fld.cpp: the FLD layout's reader on hand-written files and broken inputs, its
// writer, and DeepFashion's Category and Attribute Prediction layout (`deepfashion-c`), which it
// reads too.
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <functional>
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

void replace_once(std::string& text, const std::string& from, const std::string& to) {
  const auto at = text.find(from);
  ASSERT_NE(at, std::string::npos) << "'" << from << "' not in the base file";
  text.replace(at, from.size(), to);
}

struct FldFiles {
  std::string landmarks =
      "2\n"
      "image_name clothes_type variation_type landmark_visibility_1 landmark_location_x_1 landmark_location_y_1\n"
      "img/a.jpg 1 1 0 20 10 0 80 10 1 5 40 0 95 40 0 25 70 2 0 0\n"
      // Padded to 8 landmarks, tabs and runs of spaces (real DeepFashion copies vary).
      "img/b.jpg\t2  3   0 30 5 0 70 5 0 28 75 0 72 75 0 0 0 0 0 0 0 0 0 0 0 0\r\n";
  std::string bbox = "2\nimage_name x_1 y_1 x_2 y_2\nimg/a.jpg 2 5 98 78\nimg/b.jpg 25 2 75 79\n";
  std::string partition = "2\nimage_name evaluation_status\nimg/a.jpg train\nimg/b.jpg test\n";
};

fs::path write_fld(const std::string& name, const FldFiles& f) {
  const fs::path root = test::scratch_dir(name);
  write_jpeg(root / "img" / "a.jpg", 100, 80);
  write_jpeg(root / "img" / "b.jpg", 100, 80);
  write_file(root / "Anno" / "list_landmarks.txt", f.landmarks);
  write_file(root / "Anno" / "list_bbox.txt", f.bbox);
  write_file(root / "Eval" / "list_eval_partition.txt", f.partition);
  return root;
}

TEST(ReadFld, ParsesRowsOfEachClothesType) {
  const fs::path root = write_fld("fld_good", FldFiles{});
  const Dataset d = read_fld(root.string());
  ASSERT_EQ(d.samples.size(), 2u);
  const Sample& a = d.samples[0];
  EXPECT_EQ(a.image, (root / "img" / "a.jpg").string());
  EXPECT_EQ(a.where, (root / "Anno" / "list_landmarks.txt").string() + ":3");
  EXPECT_EQ(a.width, 100);
  EXPECT_EQ(a.height, 80);
  EXPECT_EQ(a.split, "train");
  EXPECT_EQ(a.garments[0].category, kUpper);
  // Upper rows list collars, sleeves, hems: the 5th listed landmark is the left hem (slot 6).
  EXPECT_FLOAT_EQ(kp(a, kLeftSleeve).x, 5);
  EXPECT_EQ(kp(a, kLeftSleeve).v, Visibility::Occluded);
  EXPECT_FLOAT_EQ(kp(a, kLeftHem).x, 25);
  EXPECT_FLOAT_EQ(kp(a, kLeftHem).y, 70);
  EXPECT_EQ(kp(a, kRightHem).v, Visibility::Absent);
  EXPECT_EQ(kp(a, kLeftWaist).v, Visibility::Absent);  // not an upper-body slot
  EXPECT_FLOAT_EQ(a.garments[0].box.x2, 98);

  const Sample& b = d.samples[1];
  EXPECT_EQ(b.split, "test");
  EXPECT_EQ(b.garments[0].category, kLower);
  EXPECT_FLOAT_EQ(kp(b, kLeftWaist).x, 30);
  EXPECT_FLOAT_EQ(kp(b, kRightHem).x, 72);
  EXPECT_EQ(kp(b, kLeftCollar).v, Visibility::Absent);

  ReadOptions mirrored;
  mirrored.garment_left = true;
  const Dataset m = read_fld(root.string(), mirrored);
  EXPECT_FLOAT_EQ(kp(m.samples[0], kLeftCollar).x, 80);
  EXPECT_FLOAT_EQ(kp(m.samples[0], kRightSleeve).x, 5);
  EXPECT_EQ(kp(m.samples[0], kRightSleeve).v, Visibility::Occluded);
}

TEST(WriteFld, WhatItWritesReadsBackAsTheSameSamples) {
  const fs::path root = write_fld("fld_rewrite", FldFiles{});
  Dataset first = read_fld(root.string());
  first.samples[0].garments[0].box.x2 = 97.25f;  // as a box from another format may be
  cspn::write_fld(root.string(), first);
  const Dataset second = read_fld(root.string());
  expect_same_samples(first, second);
  EXPECT_EQ(second.samples[1].garments[0].variation, 3);  // b.jpg's variation_type
  // The FLD layout holds one garment per image; the images must lie under the root.
  Dataset two = first;
  two.samples[0].garments.push_back(two.samples[0].garments[0]);
  EXPECT_THROW(cspn::write_fld(root.string(), two), std::invalid_argument);
  EXPECT_THROW(cspn::write_fld((root.parent_path() / "elsewhere").string(), first), std::invalid_argument);
}

struct BrokenCase {
  const char* name;
  std::function<void(FldFiles&)> edit_text;        // edits the list files before they are written
  std::function<void(const fs::path&)> edit_tree;  // then edits the written tree (may be empty)
  const char* file_line;                           // expected "<file>:<line>" of the message
  const char* what;                                // expected words of the message
  std::size_t good, skipped;                       // samples read and messages with skip_bad
};

TEST(ReadFld, MalformedInputNamesFileAndLine) {
  const auto row_a = [](const std::string& to) {
    return [to](FldFiles& f) {
      replace_once(f.landmarks, "img/a.jpg 1 1 0 20 10 0 80 10 1 5 40 0 95 40 0 25 70 2 0 0", to);
    };
  };
  const auto box_a = [](const std::string& to) {
    return [to](FldFiles& f) { replace_once(f.bbox, "img/a.jpg 2 5 98 78", to); };
  };
  const std::vector<BrokenCase> cases = {
      {"short line", row_a("img/a.jpg 1 1 0 20 10 0 80"), {}, "list_landmarks.txt:3", "needs 21 fields", 1, 1},
      {"not a number",
       row_a("img/a.jpg 1 1 0 2x0 10 0 80 10 1 5 40 0 95 40 0 25 70 2 0 0"),
       {},
       "list_landmarks.txt:3",
       "landmark_location_x_1: expected a number, got '2x0'",
       1,
       1},
      {"unknown category",
       row_a("img/a.jpg 4 1 0 20 10 0 80 10 1 5 40 0 95 40 0 25 70 2 0 0"),
       {},
       "list_landmarks.txt:3",
       "unknown clothes_type '4'",
       1,
       1},
      // Found by the fuzzer: an id too large for an int must be refused, not converted.
      {"huge category",
       row_a("img/a.jpg 2e56 1 0 20 10 0 80 10 1 5 40 0 95 40 0 25 70 2 0 0"),
       {},
       "list_landmarks.txt:3",
       "unknown clothes_type '2e56'",
       1,
       1},
      {"bad visibility",
       row_a("img/a.jpg 1 1 0 20 10 0 80 10 3 5 40 0 95 40 0 25 70 2 0 0"),
       {},
       "list_landmarks.txt:3",
       "landmark_visibility_3",
       1,
       1},
      {"keypoint far outside",
       row_a("img/a.jpg 1 1 0 20 10 0 180 10 1 5 40 0 95 40 0 25 70 2 0 0"),
       {},
       "list_landmarks.txt:3",
       "right_collar at (180, 10) is far outside the 100x80 image",
       1,
       1},
      // Box errors name list_bbox.txt, where the box is (issue 14, case 15).
      {"box outside image",
       box_a("img/a.jpg 2 5 102 78"),
       {},
       "list_bbox.txt:3",
       "box [2, 5, 102, 78] lies outside the 100x80 image",
       1,
       1},
      {"empty box", box_a("img/a.jpg 98 5 2 78"), {}, "list_bbox.txt:3", "empty box", 1, 1},
      // The malformed box row, then its image's landmark row that lacks a box: two messages.
      {"box row short", box_a("img/a.jpg 2 5 98"), {}, "list_bbox.txt:3", "expected 5 fields", 1, 2},
      {"missing image",
       {},
       [](const fs::path& root) { fs::remove(root / "img" / "a.jpg"); },
       "list_landmarks.txt:3",
       "cannot open image file",
       1,
       1},
      {"corrupt image",
       {},
       [](const fs::path& root) { write_file(root / "img" / "b.jpg", "\xFF\xD8\xFF"); },
       "list_landmarks.txt:4",
       "truncated JPEG",
       1,
       1},
      {"count mismatch",
       [](FldFiles& f) { replace_once(f.landmarks, "2\n", "3\n"); },
       {},
       "list_landmarks.txt:1",
       "count line says 3 rows, the file has 2",
       2,
       1},
      {"duplicate row",
       [](FldFiles& f) {
         replace_once(f.landmarks, "2\n", "3\n");
         f.landmarks += "img/b.jpg 2 1 0 30 5 0 70 5 0 28 75 0 72 75\n";
       },
       {},
       "list_landmarks.txt:5",
       "duplicate image 'img/b.jpg' (first at line 4)",
       2,
       1},
      {"duplicate box",
       [](FldFiles& f) {
         replace_once(f.bbox, "2\n", "3\n");
         f.bbox += "img/b.jpg 1 1 5 5\n";
       },
       {},
       "list_bbox.txt:5",
       "duplicate image 'img/b.jpg'",
       2,
       1},
      {"bad split",
       [](FldFiles& f) { replace_once(f.partition, "img/b.jpg test", "img/b.jpg holdout"); },
       {},
       "list_eval_partition.txt:4",
       "expected train, val or test, got 'holdout'",
       1,
       1},
  };
  for (const BrokenCase& c : cases) {
    SCOPED_TRACE(c.name);
    FldFiles files;
    if (c.edit_text) c.edit_text(files);
    const fs::path root = write_fld("fld_broken", files);
    if (c.edit_tree) c.edit_tree(root);
    const std::string msg = data_error([&] { read_fld(root.string()); });
    const std::string folder = std::string(c.file_line).rfind("list_eval", 0) == 0 ? "Eval" : "Anno";
    EXPECT_NE(msg.find((root / folder / c.file_line).string() + ": "), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.what), std::string::npos) << msg;

    ReadOptions skip;
    skip.skip_bad = true;
    const Dataset d = read_fld(root.string(), skip);
    EXPECT_EQ(d.samples.size(), c.good);
    ASSERT_EQ(d.skipped.size(), c.skipped);
    EXPECT_EQ(d.skipped[0], msg);
  }
}

TEST(ReadFld, WithoutImageChecksTheHeaderIsNotRead) {
  const fs::path root = write_fld("fld_no_image_check", FldFiles{});
  fs::remove(root / "img" / "a.jpg");
  ReadOptions opt;
  opt.check_images = false;
  const Dataset d = read_fld(root.string(), opt);
  ASSERT_EQ(d.samples.size(), 2u);
  EXPECT_EQ(d.samples[0].width, 0);  // unknown without the header
  EXPECT_EQ(d.samples[0].height, 0);
  EXPECT_NE(data_error([&] { read_fld(root.string()); }).find("cannot open image file"), std::string::npos);
}

TEST(ReadFld, AFifoInPlaceOfAnImageIsRefusedWithoutWaiting) {
  // Opening a FIFO blocks until a writer comes: the header check must not open one (issue 14, 17).
  const fs::path root = write_fld("fld_fifo", FldFiles{});
  fs::remove(root / "img" / "a.jpg");
  ASSERT_EQ(::mkfifo((root / "img" / "a.jpg").c_str(), 0644), 0);
  EXPECT_NE(data_error([&] { read_fld(root.string()); }).find("a.jpg: not a regular file"), std::string::npos);
  ReadOptions skip;
  skip.skip_bad = true;
  const Dataset d = read_fld(root.string(), skip);
  EXPECT_EQ(d.samples.size(), 1u);
  ASSERT_EQ(d.skipped.size(), 1u);
  EXPECT_NE(d.skipped[0].find("not a regular file"), std::string::npos) << d.skipped[0];

  // A link to itself in its place: refused as unreadable, skipped with --skip-bad.
  fs::remove(root / "img" / "a.jpg");
  fs::create_symlink("a.jpg", root / "img" / "a.jpg");
  EXPECT_NE(data_error([&] { read_fld(root.string()); }).find("a.jpg: cannot open image file"), std::string::npos);
  EXPECT_EQ(read_fld(root.string(), skip).skipped.size(), 1u);
}

TEST(ReadFld, MissingListFileIsAnError) {
  const fs::path root = write_fld("fld_missing_partition", FldFiles{});
  fs::remove(root / "Eval" / "list_eval_partition.txt");
  const std::string msg = data_error([&] { read_fld(root.string()); });
  EXPECT_NE(msg.find("list_eval_partition.txt: cannot open"), std::string::npos) << msg;
}

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
