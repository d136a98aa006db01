// Dataset readers on the real files of ../shared/data and on hand-written broken inputs, and the
// image header parser against OpenCV's decoder.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <string>
#include <vector>

#include "common.hpp"
#include "cspn/data/readers.hpp"

namespace cspn {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr int kUpper = 0, kLower = 1, kFull = 2;  // LandmarkSchema::deepfashion() categories
constexpr int kLeftCollar = 0, kRightCollar = 1, kLeftSleeve = 2, kRightSleeve = 3, kLeftWaist = 4, kRightWaist = 5,
              kLeftHem = 6, kRightHem = 7;

void write_file(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_jpeg(const fs::path& path, int width, int height) {
  fs::create_directories(path.parent_path());
  ASSERT_TRUE(cv::imwrite(path.string(), cv::Mat(height, width, CV_8UC3, cv::Scalar(40, 90, 160))));
}

// The DataError message of fn(), or "" when it does not throw one.
std::string data_error(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const DataError& e) {
    return e.what();
  }
  return "";
}

void replace_once(std::string& text, const std::string& from, const std::string& to) {
  const auto at = text.find(from);
  ASSERT_NE(at, std::string::npos) << "'" << from << "' not in the base file";
  text.replace(at, from.size(), to);
}

const Keypoint& kp(const Sample& s, int slot) { return s.garments.at(0).keypoints.at(slot); }

// ---------------------------------------------------------------------------------------------
// Real files

TEST(ReadCoco, MmposeFldValuesFromTheReadme) {
  CSPN_REQUIRE_SHARED("mmpose_fld");
  const Dataset d = read_coco((test::shared_data() / "mmpose_fld" / "test_fld.json").string());
  EXPECT_EQ(d.schema.name, "deepfashion");
  ASSERT_EQ(d.samples.size(), 2u);
  EXPECT_TRUE(d.skipped.empty());
  const Sample& a = d.samples[0];  // img_00000128: side view, bbox [88,21,48,142], all 8 labelled
  EXPECT_EQ(fs::path(a.image).filename(), "img_00000128.jpg");
  EXPECT_TRUE(fs::exists(a.image));
  EXPECT_EQ(a.width, 200);
  EXPECT_EQ(a.height, 250);
  EXPECT_EQ(a.split, "train");
  ASSERT_EQ(a.garments.size(), 1u);
  EXPECT_EQ(a.garments[0].category, kFull);  // category "fashion": inferred from 8 labelled slots
  EXPECT_FLOAT_EQ(a.garments[0].box.x1, 88);
  EXPECT_FLOAT_EQ(a.garments[0].box.y1, 21);
  EXPECT_FLOAT_EQ(a.garments[0].box.x2, 136);
  EXPECT_FLOAT_EQ(a.garments[0].box.y2, 163);
  EXPECT_FLOAT_EQ(kp(a, kLeftCollar).x, 108);
  EXPECT_FLOAT_EQ(kp(a, kLeftCollar).y, 33);
  EXPECT_EQ(kp(a, kLeftCollar).v, Visibility::Occluded);  // COCO v=1
  EXPECT_EQ(kp(a, kLeftSleeve).v, Visibility::Visible);   // COCO v=2
  EXPECT_FLOAT_EQ(kp(a, kRightHem).x, 112);
  EXPECT_FLOAT_EQ(kp(a, kRightHem).y, 143);

  const Sample& b = d.samples[1];  // img_00000132: front view, left hem cut off
  EXPECT_EQ(b.garments[0].category, kFull);
  EXPECT_FLOAT_EQ(b.garments[0].box.x2, 200);
  EXPECT_FLOAT_EQ(b.garments[0].box.y2, 250);
  EXPECT_EQ(kp(b, kLeftHem).v, Visibility::Absent);
  EXPECT_EQ(kp(b, kRightHem).v, Visibility::Visible);
  EXPECT_FLOAT_EQ(kp(b, kRightHem).x, 172);
  // FLD convention: "left" is the image left of a front-facing garment.
  EXPECT_LT(kp(b, kLeftCollar).x, kp(b, kRightCollar).x);
  EXPECT_LT(kp(b, kLeftSleeve).x, kp(b, kRightSleeve).x);
  EXPECT_LT(kp(b, kLeftWaist).x, kp(b, kRightWaist).x);
}

TEST(ReadCoco, DeepFashion2IsRejectedWithTheReason) {
  CSPN_REQUIRE_SHARED("mmpose_deepfashion2");
  const std::string file = (test::shared_data() / "mmpose_deepfashion2" / "deepfasion2.json").string();
  const std::string msg = data_error([&] { read_coco(file); });
  EXPECT_NE(msg.find("deepfasion2.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("annotations[0]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("294 keypoints != 8 expected"), std::string::npos) << msg;

  ReadOptions skip;
  skip.skip_bad = true;
  const Dataset d = read_coco(file, skip);
  EXPECT_TRUE(d.samples.empty());
  ASSERT_EQ(d.skipped.size(), 2u);  // both images, each for its one annotation
  EXPECT_EQ(d.skipped[0], msg);
}

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

TEST(ReadDataset, AutoDetectsTheFormat) {
  CSPN_REQUIRE_SHARED("mmpose_fld");
  CSPN_REQUIRE_SHARED("ziegler_robot_landmarks");
  EXPECT_EQ(read_dataset((test::shared_data() / "mmpose_fld").string(), "auto").samples.size(), 2u);
  EXPECT_EQ(read_dataset((test::shared_data() / "ziegler_robot_landmarks").string(), "auto").samples.size(), 78u);
  EXPECT_EQ(read_dataset((test::shared_data() / "ziegler_robot_landmarks" / "info.csv").string(), "csv").samples.size(),
            78u);
  EXPECT_THROW(read_dataset((test::shared_data() / "mmpose_fld").string(), "voc"), std::invalid_argument);
  const fs::path empty = test::scratch_dir("read_dataset_empty");
  const std::string msg = data_error([&] { read_dataset(empty.string(), "auto"); });
  EXPECT_NE(msg.find("cannot tell the data set format"), std::string::npos) << msg;
}

// ---------------------------------------------------------------------------------------------
// image_size

TEST(ImageSize, RealJpegsMatchOpenCv) {
  CSPN_REQUIRE_SHARED("mmpose_fld");
  int checked = 0;
  for (const char* sub : {"mmpose_fld", "mmpose_deepfashion2", "fashionai_keypoints", "ziegler_robot_landmarks",
                          "fld_dfa_demo_unannotated/FLD_upper"}) {
    const fs::path dir = test::shared_data() / sub;
    if (!fs::exists(dir)) continue;
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().extension() == ".jpg") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    files.resize(std::min<std::size_t>(files.size(), 4));
    for (const auto& f : files) {
      const cv::Mat img = cv::imread(f.string());
      ASSERT_FALSE(img.empty()) << f;
      const auto [w, h] = image_size(f.string());
      EXPECT_EQ(w, img.cols) << f;
      EXPECT_EQ(h, img.rows) << f;
      ++checked;
    }
  }
  EXPECT_GE(checked, 10);
}

TEST(ImageSize, PngBmpProgressiveJpegAndLongAppSegments) {
  const fs::path dir = test::scratch_dir("image_size_formats");
  const cv::Mat img(23, 37, CV_8UC3, cv::Scalar(1, 2, 3));
  for (const char* name : {"a.png", "a.bmp", "a.jpg"}) {
    ASSERT_TRUE(cv::imwrite((dir / name).string(), img));
    EXPECT_EQ(image_size((dir / name).string()), std::make_pair(37, 23)) << name;
  }
  ASSERT_TRUE(cv::imwrite((dir / "p.jpg").string(), cv::Mat(29, 41, CV_8UC3, cv::Scalar::all(7)),
                          {cv::IMWRITE_JPEG_PROGRESSIVE, 1}));  // SOF2
  EXPECT_EQ(image_size((dir / "p.jpg").string()), std::make_pair(41, 29));

  // A 6000-byte APP1 segment (like a large EXIF block) between SOI and the frame header.
  std::string jpeg = read_file(dir / "a.jpg");
  const int len = 6000;
  std::string app1 = {'\xFF', '\xE1', static_cast<char>(len >> 8), static_cast<char>(len & 0xFF)};
  app1 += std::string(len - 2, 'x');
  jpeg.insert(2, app1);
  write_file(dir / "exif.jpg", jpeg);
  ASSERT_EQ(cv::imread((dir / "exif.jpg").string()).cols, 37);  // still a valid JPEG for OpenCV
  EXPECT_EQ(image_size((dir / "exif.jpg").string()), std::make_pair(37, 23));

  // Top-down BMP: negative height in the info header.
  std::string bmp = read_file(dir / "a.bmp");
  const std::int32_t negative = -23;
  bmp.replace(22, 4, reinterpret_cast<const char*>(&negative), 4);  // little-endian host assumed
  write_file(dir / "top_down.bmp", bmp);
  EXPECT_EQ(image_size((dir / "top_down.bmp").string()), std::make_pair(37, 23));
}

TEST(ImageSize, BrokenFilesNameThePath) {
  const fs::path dir = test::scratch_dir("image_size_broken");
  ASSERT_TRUE(cv::imwrite((dir / "ok.jpg").string(), cv::Mat(23, 37, CV_8UC3, cv::Scalar::all(9))));
  ASSERT_TRUE(cv::imwrite((dir / "ok.png").string(), cv::Mat(23, 37, CV_8UC3, cv::Scalar::all(9))));
  const std::string jpeg = read_file(dir / "ok.jpg"), png = read_file(dir / "ok.png");
  write_file(dir / "empty.jpg", "");
  write_file(dir / "text.jpg", "hello, not an image");
  write_file(dir / "cut.jpg", jpeg.substr(0, 40));  // ends inside the quantisation tables
  write_file(dir / "cut.png", png.substr(0, 16));
  write_file(dir / "no_frame.jpg", jpeg.substr(0, 2) + "\xFF\xDA");  // scan data before any SOF
  const std::map<std::string, std::string> expected = {
      {"missing.jpg", "cannot open"}, {"empty.jpg", "empty"},       {"text.jpg", "not a JPEG, PNG, WebP or BMP"},
      {"cut.jpg", "truncated"},       {"cut.png", "truncated PNG"}, {"no_frame.jpg", "before any frame header"}};
  for (const auto& [name, what] : expected) {
    const std::string path = (dir / name).string();
    const std::string msg = data_error([&] { image_size(path); });
    EXPECT_NE(msg.find(path), std::string::npos) << name << ": " << msg;
    EXPECT_NE(msg.find(what), std::string::npos) << name << ": " << msg;
  }
}

TEST(ImageSize, TruncatedPayloadIsCaughtBeforeDecoding) {
  // Headers intact, the rest of the file cut: the size is readable, the image is not complete.
  const fs::path dir = test::scratch_dir("image_complete");
  cv::Mat noise(64, 64, CV_8UC3);
  cv::randu(noise, cv::Scalar::all(0), cv::Scalar::all(255));
  ASSERT_TRUE(cv::imwrite((dir / "ok.jpg").string(), noise));
  ASSERT_TRUE(cv::imwrite((dir / "ok.png").string(), noise));
  const std::string jpeg = read_file(dir / "ok.jpg"), png = read_file(dir / "ok.png");
  write_file(dir / "half.jpg", jpeg.substr(0, jpeg.size() / 2));
  write_file(dir / "half.png", png.substr(0, png.size() / 2));
  write_file(dir / "padded.jpg", jpeg + std::string(16, '\0'));  // bytes after the end marker are fine
  for (const char* name : {"ok.jpg", "ok.png", "padded.jpg"})
    EXPECT_NO_THROW(check_complete((dir / name).string())) << name;
  for (const auto& [name, what] : std::map<std::string, std::string>{{"half.jpg", "truncated JPEG: no end-of-image"},
                                                                     {"half.png", "truncated PNG: no IEND"}}) {
    const std::string path = (dir / name).string();
    EXPECT_EQ(image_size(path), std::make_pair(64, 64)) << name;
    const std::string msg = data_error([&] { check_complete(path); });
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find(what), std::string::npos) << msg;
  }
}

// ---------------------------------------------------------------------------------------------
// FLD layout

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

// Both samples compared field by field: what the writers must carry over.
void expect_same_samples(const Dataset& a, const Dataset& b) {
  ASSERT_EQ(a.samples.size(), b.samples.size());
  for (size_t i = 0; i < a.samples.size(); ++i) {
    const Sample &x = a.samples[i], &y = b.samples[i];
    EXPECT_EQ(x.image, y.image);
    EXPECT_EQ(x.split, y.split);
    EXPECT_EQ(x.width, y.width);
    ASSERT_EQ(x.garments.size(), y.garments.size()) << x.image;
    for (size_t g = 0; g < x.garments.size(); ++g) {
      const Garment &p = x.garments[g], &q = y.garments[g];
      EXPECT_EQ(p.category, q.category) << x.image;
      for (const auto& [u, v] : {std::pair{p.box.x1, q.box.x1}, {p.box.y1, q.box.y1}, {p.box.x2, q.box.x2},
                                 {p.box.y2, q.box.y2}})
        EXPECT_NEAR(u, v, 0.005f) << x.image;
      for (size_t k = 0; k < p.keypoints.size(); ++k) {
        EXPECT_EQ(p.keypoints[k].v, q.keypoints[k].v) << x.image << " slot " << k;
        if (p.keypoints[k].v == Visibility::Absent) continue;
        EXPECT_NEAR(p.keypoints[k].x, q.keypoints[k].x, 0.005f) << x.image << " slot " << k;
        EXPECT_NEAR(p.keypoints[k].y, q.keypoints[k].y, 0.005f) << x.image << " slot " << k;
      }
    }
  }
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

// ---------------------------------------------------------------------------------------------
// COCO JSON

json coco_base() {
  json kps_full = json::array(), kps_lower = json::array();
  const float full[8][3] = {{30, 10, 2}, {70, 10, 2}, {10, 30, 1}, {90, 30, 2},
                            {35, 40, 2}, {65, 40, 2}, {25, 75, 2}, {75, 75, 0}};
  for (const auto& p : full) kps_full.insert(kps_full.end(), {p[0], p[1], p[2]});
  for (int k = 0; k < 8; ++k) {
    const bool lower = k >= 4;
    kps_lower.insert(kps_lower.end(), {lower ? 20.0 + k : 0.0, lower ? 10.0 * k : 0.0, lower ? 2 : 0});
  }
  return {{"categories", {{{"id", 1}, {"name", "fashion"}}}},
          {"images",
           {{{"id", 5}, {"file_name", "a.jpg"}, {"width", 100}, {"height", 80}, {"split", "val"}},
            {{"id", 6}, {"file_name", "b.jpg"}, {"width", 100}, {"height", 80}}}},
          {"annotations",
           {{{"id", 1}, {"image_id", 5}, {"category_id", 1}, {"bbox", {5, 5, 90, 72}}, {"keypoints", kps_full}},
            {{"id", 2}, {"image_id", 6}, {"category_id", 1}, {"bbox", {15, 20, 30, 60}}, {"keypoints", kps_lower}},
            {{"id", 3}, {"image_id", 6}, {"category", "upper"}, {"bbox", {50, 2, 40, 40}}, {"keypoints", kps_lower}}}}};
}

fs::path write_coco(const std::string& name, const std::string& text) {
  const fs::path dir = test::scratch_dir(name);
  write_jpeg(dir / "a.jpg", 100, 80);
  write_jpeg(dir / "img" / "b.jpg", 100, 80);  // found through the img/ fallback
  write_file(dir / "ann.json", text);
  return dir / "ann.json";
}

TEST(ReadCoco, CategoriesSplitsAndSeveralGarmentsPerImage) {
  json j = coco_base();
  // The third annotation names "upper" but labels lower-body slots only: an error...
  std::string msg = data_error([&] { read_coco(write_coco("coco_upper_mismatch", j.dump()).string()); });
  EXPECT_NE(msg.find("ann.json:images[1]: garment 1: left_waistline is labelled but category upper"), std::string::npos)
      << msg;
  // ...and with a lower-body name it reads.
  j["annotations"][2]["category"] = "lower";
  const fs::path file = write_coco("coco_good", j.dump());
  const Dataset d = read_coco(file.parent_path().string());  // the folder holds one JSON
  ASSERT_EQ(d.samples.size(), 2u);
  const Sample& a = d.samples[0];
  EXPECT_EQ(a.split, "val");
  EXPECT_EQ(a.where, file.string() + ":images[0]");
  EXPECT_EQ(a.garments.at(0).category, kFull);
  EXPECT_EQ(kp(a, kLeftSleeve).v, Visibility::Occluded);
  EXPECT_EQ(kp(a, kRightHem).v, Visibility::Absent);
  EXPECT_FLOAT_EQ(a.garments[0].box.x2, 95);
  EXPECT_FLOAT_EQ(a.garments[0].box.y2, 77);
  const Sample& b = d.samples[1];
  EXPECT_EQ(b.split, "train");  // no split field
  EXPECT_EQ(b.image, (file.parent_path() / "img" / "b.jpg").string());
  ASSERT_EQ(b.garments.size(), 2u);
  EXPECT_EQ(b.garments[0].category, kLower);  // inferred: only waist and hem slots labelled
  EXPECT_EQ(b.garments[1].category, kLower);  // named
  EXPECT_FLOAT_EQ(b.garments[0].keypoints[kLeftHem].x, 26);
  EXPECT_FLOAT_EQ(b.garments[0].keypoints[kLeftHem].y, 60);

  // Inference without the waist: collars, sleeves and hems -> upper.
  for (int k : {kLeftWaist, kRightWaist}) j["annotations"][0]["keypoints"][3 * k + 2] = 0;
  const Dataset u = read_coco(write_coco("coco_infer_upper", j.dump()).string());
  EXPECT_EQ(u.samples[0].garments[0].category, kUpper);
  // A category entry named after a schema category is used as the name.
  j["categories"][0]["name"] = "full";
  const Dataset f = read_coco(write_coco("coco_category_entry", j.dump()).string());
  EXPECT_EQ(f.samples[0].garments[0].category, kFull);
  EXPECT_EQ(f.samples[1].garments[0].category, kFull);
}

TEST(WriteCoco, WhatItWritesReadsBackAsTheSameSamples) {
  json j = coco_base();
  j["annotations"][2]["category"] = "lower";
  const fs::path file = write_coco("coco_rewrite", j.dump());
  const Dataset first = read_coco(file.string());
  cspn::write_coco(file.parent_path().string(), first, "test", 7);
  const fs::path written = file.parent_path() / "annotations.json";
  const Dataset second = read_coco(written.string());
  expect_same_samples(first, second);
  // Written again from what it wrote: the same bytes.
  const std::string bytes = test::file_bytes(written);
  cspn::write_coco(file.parent_path().string(), second, "test", 7);
  EXPECT_EQ(test::file_bytes(written), bytes);
}

TEST(ReadCoco, MalformedInputNamesFileAndPath) {
  struct Case {
    const char* name;
    std::function<void(json&)> edit;
    const char* where;
    const char* what;
    std::size_t good = 1;  // samples read with skip_bad
  };
  const std::vector<Case> cases = {
      {"keypoint count", [](json& j) { j["annotations"][0]["keypoints"].push_back(1); }, "annotations[0]",
       "keypoints has 25 values"},
      {"9 keypoints",
       [](json& j) {
         for (int i = 0; i < 3; ++i) j["annotations"][0]["keypoints"].push_back(0);
       },
       "annotations[0]", "9 keypoints != 8 expected"},
      {"visibility", [](json& j) { j["annotations"][0]["keypoints"][2] = 3; }, "annotations[0]",
       "visibility should be 0, 1 or 2, got 3"},
      {"not a number", [](json& j) { j["annotations"][0]["keypoints"][0] = "x"; }, "annotations[0]",
       "keypoints[0]: expected a number"},
      {"unknown category", [](json& j) { j["annotations"][0]["category"] = "hat"; }, "annotations[0]",
       "unknown category 'hat'"},
      {"box outside",
       [](json& j) {
         j["annotations"][0]["bbox"] = {50, 10, 80, 20};
       },
       "images[0]", "box [50, 10, 130, 30] lies outside the 100x80 image"},
      {"size mismatch", [](json& j) { j["images"][0]["width"] = 120; }, "images[0]",
       "is 100x80 but the annotation says 120x80"},
      {"no file name", [](json& j) { j["images"][0].erase("file_name"); }, "images[0]", "missing field 'file_name'"},
      {"missing image", [](json& j) { j["images"][0]["file_name"] = "zzz.jpg"; }, "images[0]",
       "cannot open image file"},
      {"duplicate id", [](json& j) { j["images"][1]["id"] = 5; }, "images[1]", "duplicate image id 5"},
      {"bad split", [](json& j) { j["images"][0]["split"] = "dev"; }, "images[0]",
       "split: expected train, val or test"},
      // Its image keeps no garment: the reader cannot know where the annotation belonged.
      {"unknown image", [](json& j) { j["annotations"][0]["image_id"] = 99; }, "annotations[0]",
       "image_id 99 is not in images", 2},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    json j = coco_base();
    j["annotations"][2]["category"] = "lower";
    c.edit(j);
    const fs::path file = write_coco("coco_broken", j.dump());
    const std::string msg = data_error([&] { read_coco(file.string()); });
    EXPECT_NE(msg.find(file.string() + ":" + c.where + ": "), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.what), std::string::npos) << msg;
    ReadOptions skip;
    skip.skip_bad = true;
    const Dataset d = read_coco(file.string(), skip);
    ASSERT_GE(d.skipped.size(), 1u);
    EXPECT_EQ(d.skipped[0], msg);
    EXPECT_EQ(d.samples.size(), c.good);
  }
  const fs::path file = write_coco("coco_syntax", "{\"images\": [");
  const std::string msg = data_error([&] { read_coco(file.string()); });
  EXPECT_NE(msg.find(file.string() + ": invalid JSON"), std::string::npos) << msg;
}

// ---------------------------------------------------------------------------------------------
// CSV

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

// ---------------------------------------------------------------------------------------------
// Splits

Dataset named_samples(const std::string& folder, int n) {
  Dataset d;
  d.schema = LandmarkSchema::deepfashion();
  for (int i = 0; i < n; ++i) {
    Sample s;
    s.image = folder + "/img_" + std::to_string(i) + ".jpg";
    s.split = "val";
    d.samples.push_back(s);
  }
  return d;
}

TEST(Splits, HoldoutIsDeterministicAndFollowsTheFileName) {
  Dataset a = named_samples("/data/x", 2000), b = named_samples("/elsewhere/y", 2000),
          c = named_samples("/data/x", 2000);
  assign_holdout(a, 0.25, 7);
  assign_holdout(b, 0.25, 7);
  assign_holdout(c, 0.25, 8);
  int test = 0, same_as_other_seed = 0;
  for (int i = 0; i < 2000; ++i) {
    ASSERT_TRUE(a.samples[i].split == "test" || a.samples[i].split == "train");
    EXPECT_EQ(a.samples[i].split, b.samples[i].split);  // only the file name counts
    test += a.samples[i].split == "test";
    same_as_other_seed += a.samples[i].split == c.samples[i].split;
  }
  // Binomial(2000, 0.25): mean 500, sd ~19; 5 sd either side.
  EXPECT_NEAR(test, 500, 100);
  // Another seed draws independently: agreement ~ 0.25^2 + 0.75^2 = 62.5%, not 100%.
  EXPECT_NEAR(same_as_other_seed, 1250, 150);
  assign_holdout(a, 0.0, 7);
  EXPECT_EQ(select_split(a, "test").samples.size(), 0u);
  assign_holdout(a, 1.0, 7);
  EXPECT_EQ(select_split(a, "test").samples.size(), 2000u);
  EXPECT_THROW(assign_holdout(a, 1.5, 7), std::invalid_argument);
}

TEST(Splits, SelectSplit) {
  Dataset d = named_samples("/d", 5);
  d.samples[1].split = "train";
  d.samples[3].split = "test";
  d.skipped = {"x"};
  const Dataset val = select_split(d, "val");
  ASSERT_EQ(val.samples.size(), 3u);
  EXPECT_EQ(val.samples[1].image, "/d/img_2.jpg");
  EXPECT_EQ(val.skipped, d.skipped);
  EXPECT_EQ(select_split(d, "test").samples.at(0).image, "/d/img_3.jpg");
  EXPECT_EQ(select_split(d, "all").samples.size(), 5u);
  EXPECT_THROW(select_split(d, "holdout"), std::invalid_argument);
}

}  // namespace
}  // namespace cspn
