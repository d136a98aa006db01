#pragma once
// Landmark metrics: Normalized Error under both protocols, PCK@0.2 and mean pixel error.
//   ne_paper: d / s_k, s_k = distance between the category's norm_pair landmarks of the ground truth
//             (sleeves for upper/full, waistlines for lower), eq. 3 of the paper;
//   ne_image: distance of coordinates divided by image width and height (FashionNet, DFA, DLAN...).
// Both over visible landmarks only; a landmark's value is averaged over the garments where it is
// visible; avg = mean of the per-landmark values. Garments whose s_k is undefined (a norm landmark
// not visible, or zero distance) are counted in ne_paper.undefined_norm and left out of ne_paper.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "cspn/landmarks.hpp"

namespace cspn {

class LandmarkMetrics {
 public:
  explicit LandmarkMetrics(LandmarkSchema schema);

  // pred, gt [N,K,2] image pixels; vis [N,K] int (Visibility values); category [N] int64;
  // image_size [N,2] (width, height); boxes [N,4] ground-truth x1,y1,x2,y2 (PCK normaliser).
  void add(const torch::Tensor& pred, const torch::Tensor& gt, const torch::Tensor& vis,
           const torch::Tensor& category, const torch::Tensor& image_size, const torch::Tensor& boxes);

  // {ne_paper:{avg, per_landmark, per_category:{cat:{avg, per_landmark}}, undefined_norm},
  //  ne_image:{avg, per_landmark, per_category}, pck_0_2, epe_px, visible_landmarks, garments}.
  // A landmark counts where it is Visible and its garment's category has the slot; values with no
  // counted instance are null. pck_0_2: fraction of counted landmarks whose error, per axis divided
  // by the ground-truth box width and height, has norm < 0.2; epe_px: their mean pixel error.
  nlohmann::json result() const;
  // The paper's Table 1 layout: one row per protocol and category, one column per landmark + Avg.
  std::string table() const;

 private:
  struct Sum { double total = 0; long count = 0; };
  LandmarkSchema schema_;
  // [protocol: ne_paper, ne_image][0: all categories, 1 + c: category c][landmark]
  std::vector<std::vector<std::vector<Sum>>> ne_;
  long undefined_norm_ = 0, garments_ = 0, pck_hits_ = 0, visible_ = 0;
  double epe_total_ = 0;
};

}  // namespace cspn
