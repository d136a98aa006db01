// Tests src/data/unlabelled.cpp: read_unlabelled finds the photos of a folder tree, leaves out what
// is not a readable image with a message naming it, and refuses a folder without photos.
#include <filesystem>
#include <fstream>

#include <opencv2/core.hpp>

#include "cspn/data/image.hpp"
#include "cspn/data/readers.hpp"
#include "common.hpp"

using namespace cspn;
namespace fs = std::filesystem;

TEST(Unlabelled, PhotosBelowTheFolderAndUnreadableOnesReported) {
  const fs::path dir = test::scratch_dir("unlabelled-read");
  fs::create_directories(dir / "deeper");
  cv::Mat picture(48, 64, CV_8UC3, cv::Scalar(20, 120, 200));
  write_image((dir / "a.jpg").string(), picture);
  write_image((dir / "deeper" / "b.png").string(), picture);
  std::ofstream(dir / "notes.txt") << "not a photo, and not an image extension";
  std::ofstream(dir / "text.jpg") << "not a JPEG";
  const std::string good = test::file_bytes(dir / "a.jpg");
  std::ofstream(dir / "cut.jpg", std::ios::binary) << good.substr(0, good.size() / 2);

  const Dataset data = read_unlabelled(dir.string(), LandmarkSchema::deepfashion());
  ASSERT_EQ(data.samples.size(), 2u);
  EXPECT_EQ(data.samples[0].image, (dir / "a.jpg").string());
  EXPECT_EQ(data.samples[1].image, (dir / "deeper" / "b.png").string());
  for (const auto& s : data.samples) {
    EXPECT_EQ(s.width, 64);
    EXPECT_EQ(s.height, 48);
    EXPECT_TRUE(s.garments.empty());
    EXPECT_EQ(s.split, "unlabelled");
  }
  ASSERT_EQ(data.skipped.size(), 2u);
  EXPECT_NE(data.skipped[0].find("cut.jpg"), std::string::npos) << data.skipped[0];
  EXPECT_NE(data.skipped[1].find("text.jpg"), std::string::npos) << data.skipped[1];
}

TEST(Unlabelled, AFolderWithoutPhotosOrNoFolderIsAnError) {
  const fs::path dir = test::scratch_dir("unlabelled-empty");
  std::ofstream(dir / "broken.png") << "no";
  try {
    read_unlabelled(dir.string(), LandmarkSchema::deepfashion());
    ADD_FAILURE() << "no readable photo, yet accepted";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("no readable image"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("1 unreadable"), std::string::npos) << e.what();
  }
  EXPECT_THROW(read_unlabelled((dir / "missing").string(), LandmarkSchema::deepfashion()), DataError);
}
