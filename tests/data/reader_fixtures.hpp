#pragma once
// Helpers shared by the tests of the data set readers (test_coco.cpp, test_csv.cpp, test_fld.cpp,
// test_formats.cpp, test_fashionai.cpp, test_deepfashion2.cpp, test_image_header.cpp).
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <utility>

#include <gtest/gtest.h>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include "cspn/data/readers.hpp"
#include "common.hpp"

namespace cspn::test {

inline constexpr int kUpper = 0, kLower = 1, kFull = 2;  // LandmarkSchema::deepfashion() categories
inline constexpr int kLeftCollar = 0, kRightCollar = 1, kLeftSleeve = 2, kRightSleeve = 3, kLeftWaist = 4,
                     kRightWaist = 5, kLeftHem = 6, kRightHem = 7;

inline void write_file(const std::filesystem::path& path, const std::string& text) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

inline void write_jpeg(const std::filesystem::path& path, int width, int height) {
  std::filesystem::create_directories(path.parent_path());
  ASSERT_TRUE(cv::imwrite(path.string(), cv::Mat(height, width, CV_8UC3, cv::Scalar(40, 90, 160))));
}

// The DataError message of fn(); a test failure, and "", when it throws none.
inline std::string data_error(const std::function<void()>& fn) { return error_of<DataError>(fn); }

inline const Keypoint& kp(const Sample& s, int slot) { return s.garments.at(0).keypoints.at(slot); }

// Both samples compared field by field: what the writers must carry over.
inline void expect_same_samples(const Dataset& a, const Dataset& b) {
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

inline ReadOptions schema_options(const std::string& name) {
  ReadOptions o;
  o.schema = LandmarkSchema::load(name);
  return o;
}

}  // namespace cspn::test
