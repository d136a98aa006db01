#pragma once
// Annotated images as plain data: what the readers produce and training/evaluation consume.
#include <algorithm>
#include <string>
#include <vector>

#include "cspn/core/schema.hpp"

namespace cspn {

struct Box {
  float x1 = 0, y1 = 0, x2 = 0, y2 = 0;  // pixels, corners
  float width() const { return x2 - x1; }
  float height() const { return y2 - y1; }
};

// Area where two boxes overlap (0 where they do not).
inline float overlap_area(const Box& a, const Box& b) {
  const float w = std::min(a.x2, b.x2) - std::max(a.x1, b.x1), h = std::min(a.y2, b.y2) - std::max(a.y1, b.y1);
  return w > 0 && h > 0 ? w * h : 0.0f;
}

// Intersection over union; 0 for two empty boxes.
inline float iou(const Box& a, const Box& b) {
  const float inter = overlap_area(a, b), uni = a.width() * a.height() + b.width() * b.height() - inter;
  return uni > 0 ? inter / uni : 0.0f;
}

struct Keypoint {
  float x = 0, y = 0;                      // pixels in the original image
  Visibility v = Visibility::Absent;
};

struct Garment {
  int category = -1;                       // index into LandmarkSchema::categories
  Box box;
  std::vector<Keypoint> keypoints;         // one per schema slot; slots the category lacks: Absent
  int variation = 0;                       // DeepFashion's variation_type (1 normal pose, 2 medium pose,
                                           // 3 large pose, 4 medium zoom-in, 5 large zoom-in); 0: none
};

// True when at least one landmark of the garment is annotated (visible or occluded).
inline bool has_landmarks(const Garment& g) {
  for (const auto& p : g.keypoints)
    if (p.v != Visibility::Absent) return true;
  return false;
}

struct Sample {
  std::string image;                       // absolute or reader-resolved path
  int width = 0, height = 0;               // image size in pixels
  std::string split;                       // "train", "val", "test"
  std::vector<Garment> garments;
  std::string where;                       // "file:line" of the annotation, for error messages
};

struct Dataset {
  LandmarkSchema schema;
  std::vector<Sample> samples;
  std::vector<std::string> skipped;        // one message per record skipped with skip_bad
};

}  // namespace cspn
