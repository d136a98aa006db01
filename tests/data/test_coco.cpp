// Tests src/data/coco.cpp: the COCO JSON reader on mmpose's FLD file of ../shared/data and on
// hand-written broken inputs, and the writer, whose output reads back as the same samples.
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

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

}  // namespace
}  // namespace cspn
