#include "cspn/core/detect/box_coder.hpp"
#include "cspn/core/util.hpp"

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

#include <torch/torch.h>

namespace cspn::detect {
namespace {

void check_box_tensor(const char* where, const char* name, const torch::Tensor& t) {
  check_boxes(std::string("cspn::detect::") + where, name, t);
}

// Boxes of any leading shape: [...,4].
void check_box_last_dim(const char* where, const torch::Tensor& t) {
  if (!t.defined() || t.dim() < 1 || t.size(-1) != 4)
    throw std::invalid_argument(std::string("cspn::detect::") + where + ": boxes should be [...,4], got " +
                                (t.defined() ? shape_of(t) : std::string("undefined")));
}

}  // namespace

AnchorGenerator::AnchorGenerator(std::vector<float> sizes, std::vector<float> aspect_ratios)
    : sizes_(std::move(sizes)), ratios_(std::move(aspect_ratios)) {
  if (sizes_.empty() || ratios_.empty())
    throw std::invalid_argument("cspn::detect::AnchorGenerator: sizes and aspect ratios should be "
                                "non-empty, got " + std::to_string(sizes_.size()) + " sizes and " +
                                std::to_string(ratios_.size()) + " ratios");
  for (float v : sizes_)
    if (!(v > 0))
      throw std::invalid_argument("cspn::detect::AnchorGenerator: sizes should be > 0, got " +
                                  std::to_string(v));
  for (float v : ratios_)
    if (!(v > 0))
      throw std::invalid_argument(
          "cspn::detect::AnchorGenerator: aspect ratios should be > 0, got " + std::to_string(v));
}

torch::Tensor AnchorGenerator::cell_anchors(const torch::TensorOptions& options) const {
  const auto scales = torch::tensor(sizes_, torch::kFloat).to(options.device(), options.dtype());
  const auto ratios = torch::tensor(ratios_, torch::kFloat).to(options.device(), options.dtype());
  const auto h_ratios = ratios.sqrt();
  const auto w_ratios = 1 / h_ratios;
  const auto ws = (w_ratios.unsqueeze(1) * scales.unsqueeze(0)).reshape(-1);
  const auto hs = (h_ratios.unsqueeze(1) * scales.unsqueeze(0)).reshape(-1);
  return (torch::stack({-ws, -hs, ws, hs}, 1) / 2).round();
}

torch::Tensor AnchorGenerator::grid_anchors(int64_t height, int64_t width, int64_t stride_h,
                                            int64_t stride_w,
                                            const torch::TensorOptions& options) const {
  if (height < 0 || width < 0 || stride_h <= 0 || stride_w <= 0)
    throw std::invalid_argument("cspn::detect::AnchorGenerator::grid_anchors: expected a feature "
                                "map size >= 0 and strides > 0, got " + std::to_string(height) +
                                "x" + std::to_string(width) + " with strides " +
                                std::to_string(stride_h) + "x" + std::to_string(stride_w));
  const auto shift_x = torch::arange(width, options) * stride_w;
  const auto shift_y = torch::arange(height, options) * stride_h;
  const auto grid = torch::meshgrid({shift_y, shift_x}, "ij");
  const auto sx = grid[1].reshape(-1), sy = grid[0].reshape(-1);
  const auto shifts = torch::stack({sx, sy, sx, sy}, 1);  // [height*width, 4]
  return (shifts.unsqueeze(1) + cell_anchors(options).unsqueeze(0)).reshape({-1, 4});
}

BoxCoder::BoxCoder(std::array<double, 4> weights, double bbox_xform_clip)
    : weights_(weights), clip_(bbox_xform_clip) {
  for (double w : weights_)
    if (!(w > 0))
      throw std::invalid_argument("cspn::detect::BoxCoder: weights should be > 0, got " +
                                  std::to_string(w));
}

torch::Tensor BoxCoder::encode(const torch::Tensor& boxes, const torch::Tensor& reference) const {
  check_box_tensor("BoxCoder::encode", "boxes", boxes);
  check_box_tensor("BoxCoder::encode", "reference", reference);
  if (boxes.size(0) != reference.size(0))
    throw std::invalid_argument("cspn::detect::BoxCoder::encode: boxes " + shape_of(boxes) +
                                " and reference " + shape_of(reference) +
                                " should have the same number of rows");
  const auto ref = reference.to(boxes.scalar_type());
  const auto rw = ref.select(1, 2) - ref.select(1, 0);
  const auto rh = ref.select(1, 3) - ref.select(1, 1);
  const auto rx = ref.select(1, 0) + 0.5 * rw;
  const auto ry = ref.select(1, 1) + 0.5 * rh;
  const auto w = boxes.select(1, 2) - boxes.select(1, 0);
  const auto h = boxes.select(1, 3) - boxes.select(1, 1);
  const auto x = boxes.select(1, 0) + 0.5 * w;
  const auto y = boxes.select(1, 1) + 0.5 * h;
  return torch::stack({weights_[0] * (x - rx) / rw, weights_[1] * (y - ry) / rh,
                       weights_[2] * torch::log(w / rw), weights_[3] * torch::log(h / rh)},
                      1);
}

torch::Tensor BoxCoder::decode(const torch::Tensor& deltas, const torch::Tensor& reference) const {
  check_box_tensor("BoxCoder::decode", "reference", reference);
  if (!deltas.defined() || deltas.dim() != 2 || deltas.size(1) % 4 != 0 ||
      deltas.size(0) != reference.size(0))
    throw std::invalid_argument(
        "cspn::detect::BoxCoder::decode: deltas should be [N,4K] with N = " +
        std::to_string(reference.size(0)) + " (reference " + shape_of(reference) + "), got " +
        (deltas.defined() ? shape_of(deltas) : std::string("an undefined tensor")));
  const auto d = deltas.view({deltas.size(0), -1, 4});  // [N,K,4]
  const auto ref = reference.to(deltas.scalar_type());
  const auto rw = (ref.select(1, 2) - ref.select(1, 0)).unsqueeze(1);  // [N,1]
  const auto rh = (ref.select(1, 3) - ref.select(1, 1)).unsqueeze(1);
  const auto rx = ref.select(1, 0).unsqueeze(1) + 0.5 * rw;
  const auto ry = ref.select(1, 1).unsqueeze(1) + 0.5 * rh;
  const auto dx = d.select(2, 0) / weights_[0], dy = d.select(2, 1) / weights_[1];
  const auto dw = (d.select(2, 2) / weights_[2]).clamp_max(clip_);
  const auto dh = (d.select(2, 3) / weights_[3]).clamp_max(clip_);
  const auto cx = dx * rw + rx, cy = dy * rh + ry;  // [N,K]
  const auto half_w = 0.5 * (torch::exp(dw) * rw), half_h = 0.5 * (torch::exp(dh) * rh);
  return torch::stack({cx - half_w, cy - half_h, cx + half_w, cy + half_h}, 2);
}

torch::Tensor clip_boxes(const torch::Tensor& boxes, int64_t height, int64_t width) {
  check_box_last_dim("clip_boxes", boxes);
  const auto x = boxes.index({torch::indexing::Ellipsis, torch::indexing::Slice(0, 4, 2)})
                     .clamp(0, static_cast<double>(width));
  const auto y = boxes.index({torch::indexing::Ellipsis, torch::indexing::Slice(1, 4, 2)})
                     .clamp(0, static_cast<double>(height));
  // Interleave back to (x1, y1, x2, y2).
  return torch::stack({x, y}, -1).flatten(-2);
}

torch::Tensor flip_boxes(const torch::Tensor& boxes, int64_t width) {
  check_box_last_dim("flip_boxes", boxes);
  const auto w = static_cast<double>(width);
  const auto c = boxes.unbind(-1);
  return torch::stack({w - c[2], c[1], w - c[0], c[3]}, -1);
}

torch::Tensor remove_small_boxes(const torch::Tensor& boxes, double min_size) {
  check_box_tensor("remove_small_boxes", "boxes", boxes);
  const auto keep = ((boxes.select(1, 2) - boxes.select(1, 0)) >= min_size) &
                    ((boxes.select(1, 3) - boxes.select(1, 1)) >= min_size);
  return keep.nonzero().select(1, 0);
}

Matcher::Matcher(double high, double low, bool allow_low_quality_matches)
    : high_(high), low_(low), allow_low_quality_(allow_low_quality_matches) {
  if (low_ > high_)
    throw std::invalid_argument("cspn::detect::Matcher: the low threshold should be <= the high "
                                "one, got low " + std::to_string(low_) + ", high " +
                                std::to_string(high_));
}

torch::Tensor Matcher::operator()(const torch::Tensor& quality) const {
  if (!quality.defined() || quality.dim() != 2)
    throw std::invalid_argument("cspn::detect::Matcher: quality should be [G,N], got " +
                                (quality.defined() ? shape_of(quality) : std::string("undefined")));
  const auto opts = quality.options().dtype(torch::kLong);
  if (quality.size(0) == 0) return torch::full({quality.size(1)}, kBelowLow, opts);
  const auto [best, best_gt] = quality.max(0);  // [N]
  auto matches = torch::where(best < low_, torch::full({}, kBelowLow, opts),
                              torch::where(best < high_, torch::full({}, kBetween, opts), best_gt));
  if (allow_low_quality_) {
    // Boxes that are some gt's best match (ties included) take their best gt back.
    const auto gt_best = std::get<0>(quality.max(1));  // [G]
    const auto is_best = (quality == gt_best.unsqueeze(1)).any(0);  // [N]
    matches = torch::where(is_best, best_gt, matches);
  }
  return matches;
}

BalancedPositiveNegativeSampler::BalancedPositiveNegativeSampler(int64_t batch_size_per_image,
                                                                 double positive_fraction)
    : batch_size_(batch_size_per_image), positive_fraction_(positive_fraction) {
  if (batch_size_ <= 0 || positive_fraction_ < 0 || positive_fraction_ > 1)
    throw std::invalid_argument("cspn::detect::BalancedPositiveNegativeSampler: expected a batch "
                                "size > 0 and a positive fraction in [0,1], got " +
                                std::to_string(batch_size_) + " and " +
                                std::to_string(positive_fraction_));
}

SampledIndices BalancedPositiveNegativeSampler::operator()(const torch::Tensor& labels) const {
  if (!labels.defined() || labels.dim() != 1)
    throw std::invalid_argument(
        "cspn::detect::BalancedPositiveNegativeSampler: labels should be [N], got " +
        (labels.defined() ? shape_of(labels) : std::string("undefined")));
  const auto positive = (labels >= 1).nonzero().select(1, 0);
  const auto negative = (labels == 0).nonzero().select(1, 0);
  const int64_t num_pos = std::min<int64_t>(
      positive.size(0), static_cast<int64_t>(static_cast<double>(batch_size_) * positive_fraction_));
  const int64_t num_neg = std::min<int64_t>(negative.size(0), batch_size_ - num_pos);
  const auto pick = [](const torch::Tensor& from, int64_t n) {
    const auto perm = torch::randperm(from.size(0), torch::kLong).narrow(0, 0, n);
    return from.index_select(0, perm.to(from.device()));
  };
  return {pick(positive, num_pos), pick(negative, num_neg)};
}

}  // namespace cspn::detect
