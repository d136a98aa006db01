#pragma once
// Pseudo-labels for semi-supervised training (data.unlabelled, config section semi): the model
// trained so far finds the garments on photos nobody labelled and places their landmarks; what it
// is sure of becomes labels for the next round of training.
#include <functional>

#include "cspn/core/config.hpp"
#include "cspn/core/sample.hpp"

namespace cspn {

class GarmentDetector;
class LandmarkPredictor;

struct PseudoLabelCounts {
  int images = 0;            // photos decoded
  int unreadable = 0;        // photos that failed to decode (their messages: Dataset::skipped)
  int garments = 0;          // detections kept as garments
  int landmarks = 0;         // landmarks kept, over all those garments
  int candidates = 0;        // landmarks of those garments' categories
};

// Labels every photo of `unlabelled` (read_unlabelled) with the detector and the landmark network:
// - a detection scoring at least semi.min_score becomes a garment, with the detector's box and
//   category (the best test.detections_per_image);
// - its category's landmarks are predicted on two crops, the box's and the box grown by
//   semi.scale_jitter, each with the flip test. A landmark is kept, visible, at the mean of the two
//   crops' predictions, where the plain and mirrored passes of each crop and the two crops agree
//   within semi.max_disagreement (ne_image units) and both heatmap peaks reach
//   semi.min_landmark_score. The others stay absent, as do the slots outside the category: the loss
//   never sees them.
// Photos that fail to decode are left out, their messages appended to the result's skipped.
// progress(done, total) after each chunk of photos.
Dataset pseudo_label(GarmentDetector& detector, LandmarkPredictor& landmarks, const Dataset& unlabelled,
                     const Config& cfg, PseudoLabelCounts* counts = nullptr,
                     const std::function<void(size_t, size_t)>& progress = {});

}  // namespace cspn
