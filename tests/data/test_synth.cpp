// Tests src/data/synth.cpp: the synthetic data set's determinism, annotation files readable by the
// readers, and labels that agree with the pixels.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <string>
#include <tuple>
#include <vector>

#include "cspn/data/readers.hpp"
#include "cspn/data/synth.hpp"
#include "common.hpp"

namespace cspn {
namespace {

namespace fs = std::filesystem;

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Non-square on purpose: a width/height mix-up cannot pass.
SynthOptions small_options(int count, std::uint64_t seed) {
  SynthOptions opt;
  opt.count = count;
  opt.seed = seed;
  opt.width = 160;
  opt.height = 120;
  opt.val_fraction = 0.2;
  opt.test_fraction = 0.1;
  opt.threads = 2;
  return opt;
}

bool inside(const Keypoint& p, const Box& b) { return p.x >= b.x1 && p.x <= b.x2 && p.y >= b.y1 && p.y <= b.y2; }

TEST(Synth, SameSeedSameFilesWhateverTheThreadCount) {
  const fs::path a = test::scratch_dir("synth_det_a"), b = test::scratch_dir("synth_det_b"),
                 c = test::scratch_dir("synth_det_c");
  SynthOptions opt = small_options(20, 11);
  opt.threads = 1;
  synthesize(a.string(), opt);
  opt.threads = 3;
  synthesize(b.string(), opt);
  opt.seed = 12;
  synthesize(c.string(), opt);
  for (const char* f : {"Anno/list_landmarks.txt", "Anno/list_bbox.txt", "Eval/list_eval_partition.txt",
                        "img/000000.jpg", "img/000019.jpg"}) {
    EXPECT_EQ(read_file(a / f), read_file(b / f)) << f;
  }
  EXPECT_NE(read_file(a / "Anno/list_landmarks.txt"), read_file(c / "Anno/list_landmarks.txt"));
  EXPECT_NE(read_file(a / "img/000003.jpg"), read_file(c / "img/000003.jpg"));
  // Annotation files are written through a temporary and renamed: nothing is left behind.
  for (const auto& e : fs::recursive_directory_iterator(a)) EXPECT_NE(e.path().extension(), ".tmp") << e.path();
}

TEST(Synth, FldLayoutReadsBackWithConsistentLabels) {
  const fs::path dir = test::scratch_dir("synth_fld");
  std::vector<std::pair<int, int>> progress;
  synthesize(dir.string(), small_options(30, 3), [&](int done, int total) { progress.emplace_back(done, total); });
  ASSERT_FALSE(progress.empty());
  EXPECT_EQ(progress.back(), std::make_pair(30, 30));
  for (std::size_t i = 1; i < progress.size(); ++i) EXPECT_GT(progress[i].first, progress[i - 1].first);

  const Dataset d = read_fld(dir.string());  // also checks every image header, box and keypoint
  ASSERT_EQ(d.samples.size(), 30u);
  EXPECT_TRUE(d.skipped.empty());
  EXPECT_EQ(select_split(d, "val").samples.size(), 6u);  // exact fractions of 30
  EXPECT_EQ(select_split(d, "test").samples.size(), 3u);
  EXPECT_EQ(select_split(d, "train").samples.size(), 21u);

  const LandmarkSchema& schema = d.schema;
  int per_category[3] = {0, 0, 0}, occluded = 0, absent_in_category = 0;
  for (const Sample& s : d.samples) {
    EXPECT_EQ(s.width, 160);
    EXPECT_EQ(s.height, 120);
    ASSERT_EQ(s.garments.size(), 1u);
    const Garment& g = s.garments[0];
    ++per_category[g.category];
    EXPECT_TRUE(g.box.x1 >= 0 && g.box.y1 >= 0 && g.box.x2 <= 160 && g.box.y2 <= 120) << s.where;
    const auto& slots = schema.categories[g.category].landmarks;
    int labelled = 0;
    for (int k = 0; k < schema.num_landmarks(); ++k) {
      const Keypoint& p = g.keypoints[k];
      const bool in_category = std::find(slots.begin(), slots.end(), k) != slots.end();
      if (!in_category) {
        EXPECT_EQ(p.v, Visibility::Absent) << s.where << " slot " << k;
        continue;
      }
      if (p.v == Visibility::Absent) {
        ++absent_in_category;  // truncated by the image border
        continue;
      }
      ++labelled;
      occluded += p.v == Visibility::Occluded;
      EXPECT_TRUE(p.x >= 0 && p.y >= 0 && p.x < 160 && p.y < 120) << s.where << " slot " << k;
      EXPECT_TRUE(inside(p, g.box)) << s.where << " slot " << k;
    }
    EXPECT_GE(2 * labelled, static_cast<int>(slots.size())) << s.where;
    // Image-left convention: a left landmark lies left of its partner (rotations stay < 90 deg).
    for (int k = 0; k < schema.num_landmarks(); ++k) {
      const int partner = schema.flip[k];
      if (k < partner && g.keypoints[k].v != Visibility::Absent && g.keypoints[partner].v != Visibility::Absent) {
        EXPECT_LT(g.keypoints[k].x, g.keypoints[partner].x) << s.where << " " << schema.landmarks[k];
      }
    }
  }
  for (int c = 0; c < 3; ++c) EXPECT_GT(per_category[c], 0) << schema.categories[c].name;
  EXPECT_GT(occluded, 0);
  EXPECT_GT(absent_in_category, 0);
}

// Landmarks are points of the garment outline, so the image must have an edge there. Compare the
// gradient next to labelled landmarks with the gradient at landmarks of *another* image (same
// distribution of positions, unrelated pixels): a transform bug makes the two alike.
TEST(Synth, LandmarksSitOnGarmentEdges) {
  const fs::path dir = test::scratch_dir("synth_edges");
  SynthOptions opt = small_options(24, 5);
  opt.width = opt.height = 192;
  synthesize(dir.string(), opt);
  const Dataset d = read_fld(dir.string());
  std::vector<cv::Mat> grads;
  for (const Sample& s : d.samples) {
    cv::Mat gray = cv::imread(s.image, cv::IMREAD_GRAYSCALE), gx, gy, mag;
    ASSERT_FALSE(gray.empty()) << s.image;
    cv::GaussianBlur(gray, gray, cv::Size(0, 0), 1.0);  // below the sensor noise
    cv::Sobel(gray, gx, CV_32F, 1, 0);
    cv::Sobel(gray, gy, CV_32F, 0, 1);
    cv::magnitude(gx, gy, mag);
    cv::dilate(mag, mag, cv::Mat::ones(5, 5, CV_8U));  // strongest gradient within 2 px
    grads.push_back(mag);
  }
  double own = 0, other = 0;
  int n = 0;
  for (std::size_t i = 0; i < d.samples.size(); ++i) {
    for (const Keypoint& p : d.samples[i].garments[0].keypoints) {
      if (p.v != Visibility::Visible) continue;
      const cv::Point q(static_cast<int>(std::lround(p.x)), static_cast<int>(std::lround(p.y)));
      if (q.x >= 192 || q.y >= 192) continue;
      own += grads[i].at<float>(q);
      other += grads[(i + 1) % grads.size()].at<float>(q);
      ++n;
    }
  }
  ASSERT_GT(n, 50);
  EXPECT_GT(own / n, 1.5 * other / n) << "mean gradient at own landmarks " << own / n << ", at another image's "
                                      << other / n;
}

TEST(Synth, ScenesWriteCocoWithSeveralGarments) {
  const fs::path dir = test::scratch_dir("synth_scenes");
  SynthOptions opt = small_options(16, 9);
  opt.scenes = true;
  opt.max_garments = 4;
  synthesize(dir.string(), opt);
  ASSERT_TRUE(fs::exists(dir / "annotations.json"));
  const Dataset d = read_coco(dir.string());
  ASSERT_EQ(d.samples.size(), 16u);
  EXPECT_TRUE(d.skipped.empty());
  EXPECT_EQ(select_split(d, "val").samples.size(), 3u);  // lround(16 * 0.2)
  std::size_t most = 0;
  int occluded = 0;
  for (const Sample& s : d.samples) {
    EXPECT_TRUE(s.garments.size() >= 1 && s.garments.size() <= 4) << s.where;
    most = std::max(most, s.garments.size());
    EXPECT_EQ(s.width, 160);
    // Garments are drawn in order: none covers more than 40% of the box of one drawn before it.
    for (size_t top = 1; top < s.garments.size(); ++top)
      for (size_t below = 0; below < top; ++below) {
        const Box &a = s.garments[top].box, &b = s.garments[below].box;
        const float iw = std::max(0.0f, std::min(a.x2, b.x2) - std::max(a.x1, b.x1));
        const float ih = std::max(0.0f, std::min(a.y2, b.y2) - std::max(a.y1, b.y1));
        EXPECT_LE(iw * ih, 0.4f * b.width() * b.height() + 1e-3f) << s.where;
      }
    for (const Garment& g : s.garments)
      for (const Keypoint& p : g.keypoints) {
        occluded += p.v == Visibility::Occluded;
        if (p.v != Visibility::Absent) {
          EXPECT_TRUE(inside(p, g.box)) << s.where;
        }
      }
  }
  EXPECT_GE(most, 3u);
  EXPECT_GT(occluded, 0);
}

TEST(Synth, RejectsBadOptions) {
  const std::string dir = test::scratch_dir("synth_bad").string();
  SynthOptions opt = small_options(10, 0);
  opt.count = 0;
  EXPECT_THROW(synthesize(dir, opt), std::invalid_argument);
  opt = small_options(10, 0);
  opt.val_fraction = 0.7;
  opt.test_fraction = 0.5;
  EXPECT_THROW(synthesize(dir, opt), std::invalid_argument);
  opt = small_options(10, 0);
  opt.width = 8;
  EXPECT_THROW(synthesize(dir, opt), std::invalid_argument);
  opt = small_options(10, 0);
  opt.max_garments = 0;
  EXPECT_THROW(synthesize(dir, opt), std::invalid_argument);
  opt = small_options(10, 0);
  opt.hanging = 1.5;
  EXPECT_THROW(synthesize(dir, opt), std::invalid_argument);
}

// The angle of each upper garment's sleeves below its collar line, in degrees (median): 0 a sleeve
// straight out from the collar, 90 one straight down.
double median_sleeve_drop(const Dataset& d) {
  const LandmarkSchema& schema = d.schema;
  const int lc = schema.landmark_index("left_collar"), rc = schema.landmark_index("right_collar");
  std::vector<double> angles;
  for (const Sample& s : d.samples)
    for (const Garment& g : s.garments) {
      if (schema.categories[g.category].name != "upper") continue;
      const Keypoint &a = g.keypoints[lc], &b = g.keypoints[rc];
      const double ax = b.x - a.x, ay = b.y - a.y, len = std::hypot(ax, ay);
      if (len < 1) continue;
      for (const auto& [collar, sleeve, side] : {std::tuple{lc, "left_sleeve", -1.0}, std::tuple{rc, "right_sleeve", 1.0}}) {
        const Keypoint& p = g.keypoints[schema.landmark_index(sleeve)];
        const double dx = p.x - g.keypoints[collar].x, dy = p.y - g.keypoints[collar].y;
        const double out = side * (dx * ax + dy * ay) / len, down = (dy * ax - dx * ay) / len;  // garment axes
        angles.push_back(std::atan2(down, out) * 180 / M_PI);
      }
    }
  std::sort(angles.begin(), angles.end());
  return angles.empty() ? NAN : angles[angles.size() / 2];
}

TEST(Synth, HangingGarmentsLetTheirSleevesFall) {
  const fs::path plain = test::scratch_dir("synth_plain"), hanging = test::scratch_dir("synth_hanging");
  SynthOptions opt = small_options(60, 21);
  opt.width = opt.height = 192;
  synthesize(plain.string(), opt);
  opt.hanging = 1;
  synthesize(hanging.string(), opt);
  const Dataset a = read_fld(plain.string()), b = read_fld(hanging.string());
  const double out = median_sleeve_drop(a), down = median_sleeve_drop(b);
  EXPECT_GT(down, out + 15) << "median sleeve angle below the collar line: " << out << " laid out or worn, " << down
                            << " hanging";
  EXPECT_GT(down, 60);
  // Still labels that agree with the image: every garment has its landmarks, most of them in the box.
  int in_box = 0, labelled = 0;
  for (const Sample& s : b.samples)
    for (const Keypoint& p : s.garments[0].keypoints) {
      if (p.v == Visibility::Absent) continue;
      ++labelled;
      in_box += inside(p, s.garments[0].box);
    }
  EXPECT_GT(labelled, 200);
  EXPECT_GE(in_box, labelled * 95 / 100);
}

TEST(Synth, OnlyDeepFashionSchemasCanBeSynthesized) {
  EXPECT_NO_THROW(require_synthesizable(LandmarkSchema::deepfashion(), "--schema deepfashion", "unused"));
  try {
    require_synthesizable(LandmarkSchema::load("fashionai"), "data.pretrain_synthetic", "set data.pretrain_synthetic=0");
    FAIL() << "fashionai was accepted";
  } catch (const std::invalid_argument& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.rfind("data.pretrain_synthetic: ", 0), 0u) << msg;
    EXPECT_NE(msg.find("fashionai"), std::string::npos) << msg;
    EXPECT_NE(msg.find("set data.pretrain_synthetic=0"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace cspn
