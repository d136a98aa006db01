#pragma once
// One codec turns landmarks into Gaussian heatmap targets for training and heatmaps back into
// landmarks at inference, so the two cannot drift apart.
//
// Coordinate convention: heatmap pixel j covers input pixels [j*s, (j+1)*s) and its centre is
// input coordinate (j + 0.5) * s - 0.5 (s = heatmap stride). With it, mirroring the input maps
// heatmap pixel j to w-1-j exactly, so flip test needs no shift.
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "cspn/core/config.hpp"

namespace cspn {

class HeatmapCodec {
 public:
  explicit HeatmapCodec(const KeypointModelConfig& cfg);
  HeatmapCodec(int input_h, int input_w, int stride, float sigma);
  // One codec per heatmap size the landmark network answers at, coarsest (stage 1's) first: one per
  // distinct cfg.stage_stride(i). Sigma is in each one's pixels.
  static std::vector<HeatmapCodec> for_network(const KeypointModelConfig& cfg);
  // The codec of stage i's answer (cfg.stage_stride(i)).
  static HeatmapCodec for_stage(const KeypointModelConfig& cfg, int i);

  int input_h() const { return input_h_; }
  int input_w() const { return input_w_; }
  int heatmap_h() const { return heatmap_h_; }
  int heatmap_w() const { return heatmap_w_; }

  // keypoints [K,3] (x, y in input pixels, w: 1 supervise, 0 ignore) ->
  // {target [K,h,w] float in [0,1], weight [K] float}. Points whose Gaussian lies wholly outside
  // the heatmap (its 3-sigma square misses it) get weight 0 and an all-zero target.
  // A batch [N,K,3] gives {[N,K,h,w], [N,K]}. Tensors are made on the keypoints' device.
  std::pair<torch::Tensor, torch::Tensor> encode(const torch::Tensor& keypoints) const;

  // heatmaps [N,K,h,w] -> {coords [N,K,2] input pixels, scores [N,K] (peak value)}.
  // decode: "taylor" moves the argmax to the maximum of a quadratic fitted to the log of the
  // map around it (exact for a Gaussian); "quarter" shifts it 1/4 pixel toward the higher
  // neighbour; "argmax" leaves it on the pixel centre.
  std::pair<torch::Tensor, torch::Tensor> decode(const torch::Tensor& heatmaps,
                                                 const std::string& mode = "taylor") const;

  // Heatmaps predicted on a horizontally mirrored crop [N,K,h,w] -> the same heatmaps in the
  // unmirrored frame (flipped back along w, partner slots swapped).
  static torch::Tensor unflip(const torch::Tensor& heatmaps, const std::vector<int>& flip);

  // coords [N,K,2] in crop pixels, affine [N,2,3] mapping crop -> image pixels -> [N,K,2] image px.
  static torch::Tensor to_image(const torch::Tensor& coords, const torch::Tensor& crop_to_image);

 private:
  // Sub-pixel step [N,K,2] (heatmap pixels, within +-1) from the argmax (px, py) [N,K] of each map.
  torch::Tensor taylor_offset(const torch::Tensor& heatmaps, const torch::Tensor& px, const torch::Tensor& py) const;

  int input_h_, input_w_, stride_, heatmap_h_, heatmap_w_;
  float sigma_;
};

}  // namespace cspn
