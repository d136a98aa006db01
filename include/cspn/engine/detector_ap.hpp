#pragma once
// The detector scored against ground-truth garment boxes: COCO-style AP, and the pairing of
// detections with garments that evaluation with detected boxes uses.
#include <functional>
#include <vector>

#include <nlohmann/json.hpp>

#include "cspn/core/config.hpp"
#include "cspn/core/detect/ap.hpp"
#include "cspn/core/sample.hpp"
#include "cspn/engine/garment_detector.hpp"

namespace cspn {

// COCO-style AP of the detector against `data`'s garment boxes: DetectionAP::result().
nlohmann::json detector_ap(GarmentDetector& detector, const Dataset& data, const Config& cfg,
                           const std::function<void(size_t, size_t)>& progress = {});

// Adds one image's detections and ground truth to an AP accumulator.
void add_to_ap(detect::DetectionAP& ap, const std::vector<DetectedGarment>& detections, const Sample& truth);

// Pairs detections with ground-truth garments of the same category, greedily by decreasing score,
// each to the unmatched garment of highest IoU >= min_iou. Result[d]: garment index or -1.
std::vector<int> match_detections(const std::vector<DetectedGarment>& detections,
                                  const std::vector<Garment>& truth, float min_iou = 0.5f);

}  // namespace cspn
