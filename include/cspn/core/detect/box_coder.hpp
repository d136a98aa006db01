#pragma once
// Anchors, box coding, matching and sampling of Faster R-CNN, following the conventions of
// torchvision.models.detection (anchor_utils.AnchorGenerator, _utils.BoxCoder, _utils.Matcher,
// _utils.BalancedPositiveNegativeSampler). Boxes are (x1, y1, x2, y2) in input pixels.
#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

#include <torch/types.h>

namespace cspn::detect {

// Anchors of one feature map: every location carries |ratios| x |sizes| boxes of area size^2 and
// height/width = ratio, centred on the location's top-left input pixel (x*stride, y*stride), with
// corners rounded to integers (torch.round), as torchvision's AnchorGenerator.
class AnchorGenerator {
 public:
  AnchorGenerator(std::vector<float> sizes, std::vector<float> aspect_ratios);

  int64_t num_anchors_per_location() const {
    return static_cast<int64_t>(sizes_.size() * ratios_.size());
  }
  // Zero-centred anchors [A,4], A = ratios x sizes with the size index fastest.
  torch::Tensor cell_anchors(const torch::TensorOptions& options) const;
  // Anchors of a [height, width] feature map whose cells are stride_h x stride_w input pixels:
  // [height*width*A, 4], index ((y*width + x)*A + a), matching a head output [B,A,height,width]
  // permuted to [B,height,width,A].
  torch::Tensor grid_anchors(int64_t height, int64_t width, int64_t stride_h, int64_t stride_w,
                             const torch::TensorOptions& options) const;

 private:
  std::vector<float> sizes_, ratios_;
};

// Box <-> regression target coding of R-CNN: dx = wx*(cx - cx_ref)/w_ref, dw = ww*log(w/w_ref),
// (dy, dh likewise). decode clamps dw, dh at bbox_xform_clip so that exp() cannot blow up.
class BoxCoder {
 public:
  explicit BoxCoder(std::array<double, 4> weights,
                    double bbox_xform_clip = std::log(1000.0 / 16.0));

  // boxes [N,4] (targets), reference [N,4] (anchors or proposals) -> deltas [N,4].
  torch::Tensor encode(const torch::Tensor& boxes, const torch::Tensor& reference) const;
  // deltas [N,4K] (K box predictions per reference box), reference [N,4] -> boxes [N,K,4].
  torch::Tensor decode(const torch::Tensor& deltas, const torch::Tensor& reference) const;

  const std::array<double, 4>& weights() const { return weights_; }

 private:
  std::array<double, 4> weights_;
  double clip_;
};

// Clamps x to [0, width] and y to [0, height]. boxes [...,4] -> same shape.
torch::Tensor clip_boxes(const torch::Tensor& boxes, int64_t height, int64_t width);
// The mirror images of boxes [...,4] in an image `width` wide: x1' = width - x2, x2' = width - x1.
torch::Tensor flip_boxes(const torch::Tensor& boxes, int64_t width);
// Indices (int64, increasing) of the boxes [N,4] whose width and height are both >= min_size.
torch::Tensor remove_small_boxes(const torch::Tensor& boxes, double min_size);

// Assigns each predicted box to its best ground truth by a quality (IoU) matrix.
class Matcher {
 public:
  static constexpr int64_t kBelowLow = -1;  // best quality < low: background
  static constexpr int64_t kBetween = -2;   // low <= best quality < high: ignored
  // With allow_low_quality_matches, every ground truth also keeps the boxes that have its highest
  // quality (ties included), even below `high`, so that no ground truth goes unmatched.
  Matcher(double high, double low, bool allow_low_quality_matches);

  // quality [G,N] (gt g vs box n) -> [N] int64 gt index in [0,G), kBelowLow or kBetween.
  // G = 0 gives kBelowLow everywhere (an image without objects: all background).
  torch::Tensor operator()(const torch::Tensor& quality) const;

 private:
  double high_, low_;
  bool allow_low_quality_;
};

struct SampledIndices {
  torch::Tensor positive, negative;  // int64 indices into the labels, on the labels' device
};

// Picks up to batch_size_per_image labelled boxes, at most positive_fraction of them positive,
// the rest negative, uniformly at random. The permutations come from torch's default CPU
// generator (torch::manual_seed), so a seed gives the same sample on every device.
class BalancedPositiveNegativeSampler {
 public:
  BalancedPositiveNegativeSampler(int64_t batch_size_per_image, double positive_fraction);

  // labels [N] int64: >= 1 positive, 0 negative, < 0 ignored.
  SampledIndices operator()(const torch::Tensor& labels) const;

 private:
  int64_t batch_size_;
  double positive_fraction_;
};

}  // namespace cspn::detect
