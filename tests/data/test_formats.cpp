// Tests src/data/formats.cpp: the format registry's auto-detection (read_dataset), the holdout split
// and split selection.
#include <algorithm>
#include <filesystem>
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

TEST(ReadDataset, TheRegistryNamesEveryFormatOnce) {
  const std::vector<std::string> names = data_format_names();
  ASSERT_FALSE(names.empty());
  EXPECT_EQ(names.back(), "auto");
  for (const std::string& expected : {"fld", "deepfashion-c", "coco", "csv", "fashionai", "deepfashion2"})
    EXPECT_EQ(std::count(names.begin(), names.end(), expected), 1) << expected;
  EXPECT_EQ(names.size(), data_formats().size() + 1);
  // The help lists the names and what auto looks for, in the order auto tries them.
  const std::string help = data_format_help();
  EXPECT_EQ(help.rfind("fld | deepfashion-c | ", 0), 0u) << help;
  EXPECT_LT(help.find("Anno/list_landmarks.txt -> fld"), help.find("*.json -> coco")) << help;
  for (const DataFormat& f : data_formats()) EXPECT_EQ(f.marker.empty(), !f.looks_like) << f.name;
}

// A format whose landmarks exist in one schema reads into it when data.schema is unset; another
// built-in schema named explicitly is an error naming both; formats of any schema take data.schema.
TEST(ReadDataset, AFormatOfOneSchemaPicksIt) {
  const auto format = [](const std::string& name) -> const DataFormat& { return find_data_format("", name); };
  EXPECT_EQ(schema_for_format(format("deepfashion2"), ""), "deepfashion2");
  EXPECT_EQ(schema_for_format(format("fashionai"), ""), "fashionai");
  EXPECT_EQ(schema_for_format(format("deepfashion2"), "deepfashion2"), "deepfashion2");
  EXPECT_EQ(schema_for_format(format("deepfashion2"), "my_schema.yaml"), "my_schema.yaml");
  EXPECT_EQ(schema_for_format(format("fld"), ""), "deepfashion");
  EXPECT_EQ(schema_for_format(format("coco"), "deepfashion2"), "deepfashion2");
  try {
    schema_for_format(format("deepfashion2"), "deepfashion");
    ADD_FAILURE() << "a conflicting schema was accepted";
  } catch (const std::invalid_argument& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("schema deepfashion2"), std::string::npos) << msg;
    EXPECT_NE(msg.find("data.schema is deepfashion"), std::string::npos) << msg;
  }
}

TEST(ReadDataset, DeepFashion2ReadsIntoItsSchemaUnasked) {
  CSPN_REQUIRE_SHARED("mmpose_deepfashion2");
  const Splits splits = read_splits((shared_data() / "mmpose_deepfashion2").string(), "deepfashion2", Config{}, false);
  EXPECT_EQ(splits.all.schema.name, "deepfashion2");
  EXPECT_FALSE(splits.all.samples.empty());
  Config explicit_other;
  explicit_other.data.schema = "deepfashion";
  EXPECT_THROW(read_splits((shared_data() / "mmpose_deepfashion2").string(), "deepfashion2", explicit_other, false),
               std::invalid_argument);
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
