// Tests src/data/image/header.cpp: the image header parser (image_size) against OpenCV's decoder,
// broken files naming the path, and truncated payloads (check_complete).
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include "cspn/data/image.hpp"
#include "common.hpp"
#include "reader_fixtures.hpp"

namespace cspn {
namespace {

namespace fs = std::filesystem;
using namespace test;

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

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

}  // namespace
}  // namespace cspn
