#pragma once
// COCO-style box average precision (pycocotools COCOeval, bbox, area "all", no crowd boxes):
// per image and category, detections (the max_detections highest scoring) are matched greedily
// by decreasing score, each to the unmatched ground truth of highest IoU >= t; over all images,
// precision is made monotone and read at the 101 recall points 0, 0.01, ..., 1 (0 past the
// highest recall reached). AP at IoU 0.5 and AP averaged over IoU 0.5:0.05:0.95, per category
// and as the mean over the categories that have ground truth.
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

namespace cspn::detect {

class DetectionAP {
 public:
  // category_names[label] names label; label 0 (background) is never scored, its name is unused.
  explicit DetectionAP(std::vector<std::string> category_names, int64_t max_detections = 100);

  // One image. det_boxes [D,4] x1,y1,x2,y2, det_scores [D], det_labels [D] int64;
  // gt_boxes [G,4], gt_labels [G] int64; labels in [1, categories). Any device.
  void add(const torch::Tensor& det_boxes, const torch::Tensor& det_scores,
           const torch::Tensor& det_labels, const torch::Tensor& gt_boxes,
           const torch::Tensor& gt_labels);

  // {"det_ap50", "det_ap", "images",
  //  "per_category": {name: {"ap50", "ap", "gt", "detections"}}}; an AP is null where the
  // category has no ground truth (and the means are null when no category has any).
  nlohmann::json result() const;

  static constexpr int kIouThresholds = 10;  // 0.5, 0.55, ..., 0.95

 private:
  struct Scored {
    double score;
    std::array<bool, kIouThresholds> true_positive;
  };
  // AP of one category at IoU threshold index t.
  double average_precision(size_t category, int t) const;

  std::vector<std::string> names_;
  int64_t max_detections_;
  std::array<double, kIouThresholds> iou_thresholds_;
  std::vector<std::vector<Scored>> detections_;  // [category] in image order, by score per image
  std::vector<int64_t> gt_count_;                // [category]
  int64_t images_ = 0;
};

}  // namespace cspn::detect
