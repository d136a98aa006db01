// Tests src/data/image/image.cpp: decode_image and read_image, the public API's image functions
// (cspn/api/image.hpp), with the header checks of files for bytes and the kind of each error.
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>

#include "cspn/api/image.hpp"
#include "common.hpp"

namespace fs = std::filesystem;
using namespace cspn;

TEST(DecodeImage, BytesGetTheChecksOfFilesWithTheirKind) {
  const auto dir = test::scratch_dir("decode_image");
  const cv::Mat image(48, 64, CV_8UC3, cv::Scalar(20, 120, 220));
  for (const char* ext : {".jpg", ".png", ".webp", ".bmp"}) {
    std::vector<uchar> encoded;
    ASSERT_TRUE(cv::imencode(ext, image, encoded)) << ext;
    const std::string bytes(encoded.begin(), encoded.end());
    const cv::Mat back = decode_image(bytes, std::string("upload") + ext);
    EXPECT_EQ(back.cols, 64) << ext;
    EXPECT_EQ(back.rows, 48) << ext;
    std::ofstream(dir / (std::string("a") + ext), std::ios::binary) << bytes;
    EXPECT_EQ(read_image((dir / (std::string("a") + ext)).string()).cols, 64) << ext;
    EXPECT_THROW(decode_image(bytes, "small", 64 * 48 - 1), ImageError) << ext << ": over max_pixels";
    try {
      decode_image(bytes, "small", 100);
    } catch (const ImageError& e) {
      EXPECT_EQ(e.kind, ImageError::Kind::TooLarge);
      EXPECT_NE(std::string(e.what()).find("small: image is 64x48"), std::string::npos) << e.what();
    }
  }
  const auto kind_of = [](const std::string& bytes) {
    try {
      decode_image(bytes, "upload");
    } catch (const ImageError& e) {
      EXPECT_NE(std::string(e.what()).find("upload: "), std::string::npos) << "names the input: " << e.what();
      return e.kind;
    }
    ADD_FAILURE() << "accepted";
    return ImageError::Kind::Unreadable;
  };
  std::vector<uchar> jpeg;
  cv::imencode(".jpg", image, jpeg);
  EXPECT_EQ(kind_of(""), ImageError::Kind::Corrupt);
  EXPECT_EQ(kind_of("hello, this is text"), ImageError::Kind::Unsupported);
  EXPECT_EQ(kind_of(std::string(jpeg.begin(), jpeg.begin() + jpeg.size() / 2)), ImageError::Kind::Corrupt);
  EXPECT_EQ(kind_of(std::string("RIFF\x10\x00\x00\x00WEBPVP8 ", 16)), ImageError::Kind::Corrupt) << "truncated WebP";

  fs::create_directories(dir / "folder.jpg");
  try {
    read_image((dir / "folder.jpg").string());
    ADD_FAILURE() << "a folder was read as an image";
  } catch (const ImageError& e) {
    EXPECT_EQ(e.kind, ImageError::Kind::Unreadable);
  }
}
