// Tests src/engine/pseudo_labels.cpp: pseudo-labels keep to their garment's category (the other
// slots stay absent), follow the agreement checks, and skip photos that fail to decode.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>

#include "cspn/core/detect/faster_rcnn.hpp"
#include "cspn/data/image.hpp"
#include "cspn/data/readers.hpp"
#include "cspn/engine/garment_detector.hpp"
#include "cspn/engine/landmark_predictor.hpp"
#include "cspn/engine/pseudo_labels.hpp"
#include "common.hpp"
#include "train_fixtures.hpp"

using namespace cspn;
namespace fs = std::filesystem;

namespace {

// Three synthetic photos and a JPEG whose middle is zeroed (its header and end marker intact).
std::string unlabelled_folder() {
  const fs::path dir = test::scratch_dir("pseudo-labels");
  for (const char* name : {"000001.jpg", "000002.jpg", "000003.jpg"})
    fs::copy_file(fs::path(test::synthetic_set()) / "img" / name, dir / name);
  std::string damaged = test::file_bytes(dir / "000001.jpg");
  std::fill(damaged.begin() + damaged.size() / 3, damaged.begin() + 2 * damaged.size() / 3, '\0');
  std::ofstream(dir / "zeroed.jpg", std::ios::binary) << damaged;
  return dir.string();
}

Config untrained_config() {
  Config cfg = test::small_config();
  cfg.load_yaml_string("model: {detector: {enabled: true, backbone: resnet18, min_size: 96, max_size: 128}}\n",
                       "test config");
  return cfg;
}

}  // namespace

TEST(PseudoLabels, LandmarksOnlyInTheDetectedCategoryAndUnreadablePhotosSkipped) {
  Config cfg = untrained_config();
  // An untrained detector and network: every detection, every landmark (their heatmap peaks can be
  // negative, and a grown box reaches past the photo).
  cfg.semi.min_score = 0;
  cfg.semi.max_disagreement = std::numeric_limits<float>::infinity();
  cfg.semi.min_landmark_score = std::numeric_limits<float>::lowest();
  const LandmarkSchema schema = LandmarkSchema::deepfashion();
  torch::manual_seed(5);
  GarmentDetector detector(FasterRCNN(cfg.model.detector, schema.num_categories() + 1), cfg, schema, torch::kCPU);
  LandmarkPredictor landmarks(CSPNNet(cfg.model.keypoints, schema.num_landmarks()), cfg, schema, torch::kCPU);
  const Dataset unlabelled = read_unlabelled(unlabelled_folder(), schema);
  ASSERT_EQ(unlabelled.samples.size(), 4u) << "the zeroed JPEG passes the header checks";

  PseudoLabelCounts counts;
  const Dataset labelled = pseudo_label(detector, landmarks, unlabelled, cfg, &counts);
  EXPECT_EQ(counts.images, 3);
  EXPECT_EQ(counts.unreadable, 1);
  ASSERT_EQ(labelled.samples.size(), 3u);
  ASSERT_EQ(labelled.skipped.size(), 1u);
  EXPECT_NE(labelled.skipped[0].find("zeroed.jpg"), std::string::npos) << labelled.skipped[0];
  ASSERT_GT(counts.garments, 0) << "min_score 0: the untrained detector's boxes";
  int garments = 0, kept = 0, in_categories = 0;
  std::vector<int> categories_seen;
  for (const auto& s : labelled.samples) {
    EXPECT_LE(static_cast<int>(s.garments.size()), cfg.model.detector.detections_per_image);
    for (const auto& g : s.garments) {
      ++garments;
      categories_seen.push_back(g.category);
      const auto& ours = schema.categories[g.category].landmarks;
      in_categories += static_cast<int>(ours.size());
      for (int k = 0; k < schema.num_landmarks(); ++k) {
        const bool in_category = std::find(ours.begin(), ours.end(), k) != ours.end();
        if (!in_category) {
          EXPECT_EQ(g.keypoints[k].v, Visibility::Absent) << schema.landmarks[k];
        }
        if (g.keypoints[k].v == Visibility::Visible) ++kept;
      }
    }
  }
  EXPECT_EQ(garments, counts.garments);
  EXPECT_EQ(kept, counts.landmarks);
  EXPECT_EQ(in_categories, counts.candidates);
  EXPECT_EQ(kept, in_categories) << "no check can fail at these settings: every landmark of the category is kept";
  std::sort(categories_seen.begin(), categories_seen.end());
  EXPECT_GT(std::unique(categories_seen.begin(), categories_seen.end()) - categories_seen.begin(), 1)
      << "garments of more than one category, so that the masks differ";

  // The strictest agreement keeps fewer (an untrained network is not mirror-consistent); a detection
  // threshold above every score keeps no garment.
  cfg.semi.max_disagreement = 1e-6f;
  PseudoLabelCounts strict;
  pseudo_label(detector, landmarks, unlabelled, cfg, &strict);
  EXPECT_EQ(strict.garments, counts.garments);
  EXPECT_LT(strict.landmarks, counts.landmarks);
  cfg.semi.min_score = 1.01f;
  PseudoLabelCounts none;
  const Dataset empty = pseudo_label(detector, landmarks, unlabelled, cfg, &none);
  EXPECT_EQ(none.garments, 0);
  for (const auto& s : empty.samples) EXPECT_TRUE(s.garments.empty());
}
