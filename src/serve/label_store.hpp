#pragma once
// The state of `cspn label`: the photos of a folder, what the user saved for each, and the file it
// is kept in (COCO keypoints JSON, rewritten atomically on every save). Thread-safe.
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cspn/api/pipeline.hpp"
#include "cspn/core/sample.hpp"

namespace cspn {

enum class LabelStatus { Left, Labelled, Skipped };

struct LabelEntry {
  std::string path;                // absolute
  std::string name;                // relative to the images folder (what the page shows)
  int width = 0, height = 0;
  std::string error;               // why it cannot be decoded ("": it can)
  LabelStatus status = LabelStatus::Left;
  int version = 0;                 // +1 on every save; a save naming an older one is stale
  std::vector<Garment> garments;   // as saved (Labelled)
  std::vector<GarmentPrediction> suggestion;  // the model's, where there is a model
  std::optional<float> uncertainty;           // the largest of the suggestion's garments
};

class LabelStore {
 public:
  // Lists the photos under `images` (recursively) and reads `out` where it exists: its garments,
  // skipped photos and versions. Photos that `out` names outside the folder are kept in it as they
  // are. Throws DataError naming `out` where it is not such a file.
  LabelStore(const std::string& images, const std::string& out, LandmarkSchema schema);

  const LandmarkSchema& schema() const { return schema_; }
  const std::string& out() const { return out_; }
  // Where the retrain button's runs go: FILE-runs/ beside the file (its photos are never listed).
  std::string runs_folder() const;
  size_t size() const { return entries_.size(); }

  // A copy of entry i (i < size()).
  LabelEntry entry(size_t i) const;
  // Decodes photo i, records its size or its error, and returns it (empty where it cannot).
  cv::Mat load(size_t i);
  // Sets the model's suggestion for photo i.
  void suggest(size_t i, std::vector<GarmentPrediction> garments, std::optional<float> uncertainty);
  // Saves photo i as `status` with `garments` (clamped to the photo) where `version` is its current
  // version: writes `out` and returns the new version. std::nullopt (nothing written) where the
  // version is stale; std::invalid_argument where the photo cannot be decoded or a box lies outside it.
  std::optional<int> save(size_t i, int version, LabelStatus status, std::vector<Garment> garments);

  // Photos in the order to label: the folder's, or by_uncertainty the photos left most uncertain
  // first (one where the model found no garment counts as most uncertain), then the labelled and
  // skipped ones; unreadable photos last.
  std::vector<size_t> order(bool by_uncertainty) const;
  // The photos left to label that can be decoded.
  std::vector<std::string> left_photos() const;
  // Per category name, its landmarks' mean position in box units [0, 1] over the saved garments;
  // for a category without any, a layout on an ellipse with left/right partners mirrored.
  nlohmann::json mean_layout() const;

 private:
  void write() const;  // mutex_ held

  LandmarkSchema schema_;
  std::string images_, out_;
  mutable std::mutex mutex_;
  std::vector<LabelEntry> entries_;
  std::vector<Sample> kept_;  // samples of `out` outside the folder, written back as they are
};

const char* status_name(LabelStatus s);

}  // namespace cspn
