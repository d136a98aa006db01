// Tests src/data/image/jpeg.cpp: JPEG decoding through libjpeg against OpenCV's decoder, and damaged
// JPEGs that OpenCV would pass as good images.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <jpeglib.h>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "cspn/cspn.hpp"
#include "cspn/data/image.hpp"
#include "common.hpp"

namespace cspn {
namespace {

namespace fs = std::filesystem;

std::string jpeg_of(const cv::Mat& image, int quality = 90) {
  std::vector<uchar> encoded;
  EXPECT_TRUE(cv::imencode(".jpg", image, encoded, {cv::IMWRITE_JPEG_QUALITY, quality}));
  return std::string(encoded.begin(), encoded.end());
}

cv::Mat opencv_decode(const std::string& bytes) {
  return cv::imdecode(cv::Mat(1, static_cast<int>(bytes.size()), CV_8U, const_cast<char*>(bytes.data())), cv::IMREAD_COLOR);
}

double max_difference(const cv::Mat& a, const cv::Mat& b) {
  if (a.size() != b.size() || a.type() != b.type()) return 1e9;
  return cv::norm(a, b, cv::NORM_INF);
}

// A textured test picture, so that wrong orientation or channel order shows.
cv::Mat picture(int rows, int cols) {
  cv::Mat image(rows, cols, CV_8UC3);
  for (int y = 0; y < rows; ++y)
    for (int x = 0; x < cols; ++x) image.at<cv::Vec3b>(y, x) = cv::Vec3b(uchar(x * 3), uchar(y * 5), uchar((x * y) % 251));
  return image;
}

// Inserts an APP1 EXIF segment (big-endian TIFF, one IFD entry: Orientation) after SOI.
std::string with_orientation(const std::string& jpeg, int orientation) {
  const std::string tiff = std::string("MM\0\x2A\0\0\0\x08", 8) + std::string("\0\x01", 2) +  // IFD0: 1 entry
                           std::string("\x01\x12\0\x03\0\0\0\x01", 8) + char(0) + char(orientation) + std::string(2, '\0') +
                           std::string(4, '\0');  // no next IFD
  const std::string payload = std::string("Exif\0\0", 6) + tiff;
  const auto length = payload.size() + 2;
  const std::string segment = std::string("\xFF\xE1", 2) + char(length >> 8) + char(length & 0xFF) + payload;
  return jpeg.substr(0, 2) + segment + jpeg.substr(2);
}

// A CMYK JPEG written by libjpeg itself (OpenCV cannot write one).
std::string cmyk_jpeg(const cv::Mat& cmyk) {
  jpeg_compress_struct cinfo{};
  jpeg_error_mgr err{};
  cinfo.err = jpeg_std_error(&err);
  jpeg_create_compress(&cinfo);
  unsigned char* out = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&cinfo, &out, &size);
  cinfo.image_width = static_cast<JDIMENSION>(cmyk.cols);
  cinfo.image_height = static_cast<JDIMENSION>(cmyk.rows);
  cinfo.input_components = 4;
  cinfo.in_color_space = JCS_CMYK;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, 95, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<JSAMPROW>(cmyk.ptr<JSAMPLE>(static_cast<int>(cinfo.next_scanline)));
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::string bytes(reinterpret_cast<char*>(out), size);
  std::free(out);
  return bytes;
}

TEST(Jpeg, RealPhotosDecodeAsOpenCvDoes) {
  CSPN_REQUIRE_SHARED("mmpose_fld");
  int checked = 0;
  for (const char* sub : {"mmpose_fld", "mmpose_deepfashion2", "fashionai_keypoints", "ziegler_robot_landmarks",
                          "fld_dfa_demo_unannotated/FLD_upper", "fld_dfa_demo_unannotated/FLD_lower",
                          "fld_dfa_demo_unannotated/FLD_full"}) {
    const fs::path dir = test::shared_data() / sub;
    if (!fs::exists(dir)) continue;
    for (const auto& e : fs::recursive_directory_iterator(dir)) {
      if (e.path().extension() != ".jpg") continue;
      const std::string bytes = test::file_bytes(e.path());
      const cv::Mat ours = decode_jpeg(bytes, e.path().string());  // no photo of the shared sets is damaged
      EXPECT_EQ(max_difference(ours, opencv_decode(bytes)), 0.0) << e.path();
      ++checked;
    }
  }
  EXPECT_GE(checked, 100);
}

TEST(Jpeg, GrayscaleCmykAndExifOrientationAsOpenCv) {
  const cv::Mat image = picture(40, 64);
  cv::Mat gray;
  cv::cvtColor(image, gray, cv::COLOR_BGR2GRAY);
  const std::string gray_jpeg = jpeg_of(gray);
  const cv::Mat gray_back = decode_jpeg(gray_jpeg, "gray");
  EXPECT_EQ(gray_back.type(), CV_8UC3);
  EXPECT_EQ(max_difference(gray_back, opencv_decode(gray_jpeg)), 0.0);

  const std::string color = jpeg_of(image);
  for (int orientation = 1; orientation <= 8; ++orientation) {
    const std::string turned = with_orientation(color, orientation);
    const cv::Mat ours = decode_jpeg(turned, "turned");
    EXPECT_EQ(ours.cols, orientation >= 5 ? 40 : 64) << orientation;
    EXPECT_EQ(max_difference(ours, opencv_decode(turned)), 0.0) << "orientation " << orientation;
    std::istringstream header(turned);
    EXPECT_EQ(image_size(header, "turned"), std::make_pair(ours.cols, ours.rows))
        << "the header reader gives the turned size too: orientation " << orientation;
  }

  cv::Mat cmyk(24, 32, CV_8UC4);
  cv::randu(cmyk, 0, 256);
  const std::string cmyk_bytes = cmyk_jpeg(cmyk);
  const cv::Mat ours = decode_jpeg(cmyk_bytes, "cmyk");
  EXPECT_EQ(ours.type(), CV_8UC3);
  EXPECT_LE(max_difference(ours, opencv_decode(cmyk_bytes)), 2.0) << "same conversion up to rounding";
}

TEST(Jpeg, ZeroedMiddleIsCorruptAndNamedWithoutPrintingLibjpegWarnings) {
  const std::string good = jpeg_of(picture(240, 320), 95);
  std::string damaged = good;
  std::fill(damaged.begin() + damaged.size() / 3, damaged.begin() + 2 * damaged.size() / 3, '\0');
  ASSERT_FALSE(opencv_decode(damaged).empty()) << "OpenCV passes it as an image: the case this guards";

  const fs::path path = test::scratch_dir("jpeg_damaged") / "zeroed.jpg";
  std::ofstream(path, std::ios::binary) << damaged;
  testing::internal::CaptureStderr();
  try {
    read_image(path.string());
    ADD_FAILURE() << "a JPEG with a zeroed middle was accepted";
  } catch (const ImageError& e) {
    EXPECT_EQ(e.kind, ImageError::Kind::Corrupt);
    EXPECT_NE(std::string(e.what()).find(path.string() + ": corrupt JPEG data"), std::string::npos) << e.what();
  }
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "") << "libjpeg's own warning is not printed";

  std::string garbled = good;  // bytes flipped in the entropy-coded data rather than zeroed
  for (std::size_t i = garbled.size() / 2; i < garbled.size() / 2 + 64; ++i) garbled[i] = static_cast<char>(garbled[i] ^ 0x5A);
  EXPECT_THROW(decode_image(garbled, "garbled"), ImageError);
  EXPECT_EQ(max_difference(decode_image(good, "good"), opencv_decode(good)), 0.0);
}

}  // namespace
}  // namespace cspn
