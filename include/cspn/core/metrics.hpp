#pragma once
// Landmark metrics: Normalized Error under both protocols, PCK@0.2, the area under PCK for
// thresholds 0 to 0.5, and mean pixel error; per landmark and per category of the schema.
//   ne_paper: d / s_k, s_k = distance between the category's norm_pair landmarks of the ground truth
//             (sleeves for upper/full, waistlines for lower), eq. 3 of the paper;
//   ne_image: distance of coordinates divided by image width and height (FashionNet, DFA, DLAN...).
// Both over visible landmarks only; a landmark's value is averaged over the garments where it is
// visible; avg = mean of the per-landmark values. Garments whose s_k is undefined (a norm landmark
// not visible, or zero distance) are counted in ne_paper.undefined_norm and left out of ne_paper.
#include <array>
#include <cmath>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "cspn/core/schema.hpp"

namespace cspn {

// A metric value that may be null (nothing counted, no detection matched) as a number: NaN, which
// prints as "nan".
inline double metric_value(const nlohmann::json& v) { return v.is_number() ? v.get<double>() : std::nan(""); }

// Offsets [N,K,2] in image pixels as ne_image measures them [N,K]: each axis over the image's width
// or height (image_size [N,2], (w, h) per row), then the length.
torch::Tensor ne_image_lengths(const torch::Tensor& offsets, const torch::Tensor& image_size);

// A garment's uncertainty: the mean of ne_image_lengths over its category's `landmarks`, for the
// offsets between the plain and mirrored passes (offsets [K,2] image pixels). 0 where they agree.
double flip_uncertainty(const torch::Tensor& offsets, const std::vector<int>& landmarks, int width, int height);

class LandmarkMetrics {
 public:
  explicit LandmarkMetrics(LandmarkSchema schema);

  // pred, gt [N,K,2] image pixels; vis [N,K] int (Visibility values); category [N] int64;
  // image_size [N,2] (width, height); boxes [N,4] ground-truth x1,y1,x2,y2 (PCK normaliser).
  void add(const torch::Tensor& pred, const torch::Tensor& gt, const torch::Tensor& vis,
           const torch::Tensor& category, const torch::Tensor& image_size, const torch::Tensor& boxes);

  // {ne_paper:{avg, per_landmark, per_category:{cat:{avg, per_landmark}}, undefined_norm},
  //  ne_image:{avg, per_landmark, per_category}, pck_0_2, epe_px, auc, within_5px,
  //  accuracy:{per_landmark:{name:{pck_0_2, epe_px, auc, within_5px}}, per_category:{cat:{pck_0_2, epe_px, auc, within_5px,
  //  per_landmark}}}, visible_landmarks, garments, schema, landmarks: [slot names], labels:
  //  [their table headings]}.
  // A landmark counts where it is Visible and its garment's category has the slot; values with no
  // counted instance are null. pck_0_2: fraction of counted landmarks whose error, per axis divided
  // by the ground-truth box width and height, has norm < 0.2; auc: the mean of that fraction over
  // the thresholds 0, 0.025, .., 0.475 (area under PCK(t) on [0, 0.5], scaled to [0, 1]); epe_px:
  // the mean pixel error; within_5px: the fraction within 5 image pixels (a suggestion that a labeller
  // need not drag). They pool every counted landmark of the row.
  nlohmann::json result() const;
  // The paper's Table 1 layout: one row per protocol and category, one column per landmark (the
  // schema's labels) + Avg, then PCK@0.2 and AUC rows. Schemas whose categories have slots of their
  // own (DeepFashion2) get one such block per category, over its landmarks. Categories without a
  // counted landmark get no rows or block.
  std::string table() const;

 private:
  struct Sum { double total = 0; long count = 0; };
  struct PckSum { std::array<long, 21> hits{}; double epe = 0; long count = 0, within_5px = 0; };  // hits per PCK threshold
  LandmarkSchema schema_;
  // [protocol: ne_paper, ne_image][0: all categories, 1 + c: category c][landmark]
  std::vector<std::vector<std::vector<Sum>>> ne_;
  std::vector<std::vector<PckSum>> pck_;  // [0: all, 1 + c: category c][landmark]
  long undefined_norm_ = 0, garments_ = 0;
};

}  // namespace cspn
