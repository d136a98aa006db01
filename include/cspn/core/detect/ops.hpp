#pragma once
// Detection ops with torchvision.ops semantics, built from ATen tensor ops so they run on any
// device LibTorch supports and get autograd for free. Boxes are (x1, y1, x2, y2) in pixels.
#include <array>
#include <cstdint>

#include <torch/types.h>

namespace cspn::detect {

// a [N,4], b [M,4] -> IoU [N,M] (areas (x2-x1)*(y2-y1), as torchvision.ops.box_iou).
torch::Tensor box_iou(const torch::Tensor& a, const torch::Tensor& b);

// Greedy non-maximum suppression (torchvision.ops.nms): boxes [N,4], scores [N] -> indices of the
// kept boxes, int64 [K] on the input's device, in decreasing score order (ties keep input order).
// A box is dropped when its IoU with an already kept box is > iou_thresh.
torch::Tensor nms(const torch::Tensor& boxes, const torch::Tensor& scores, double iou_thresh);

// NMS within each group (class) only (torchvision.ops.batched_nms): idxs [N] int64 group ids.
// Boxes of different groups are shifted apart so that one nms() call never compares them.
torch::Tensor batched_nms(const torch::Tensor& boxes, const torch::Tensor& scores,
                          const torch::Tensor& idxs, double iou_thresh);

// torchvision.ops.roi_align: input [B,C,H,W], rois [R,5] (batch index, x1, y1, x2, y2 in input
// pixels before spatial_scale) -> [R,C,out_h,out_w]. Each bin averages sampling_ratio^2 bilinear
// samples (sampling_ratio > 0; torchvision's adaptive mode, <= 0, is not supported). Samples with
// y < -1 or y > H (x likewise) count as 0, others are clamped into the map. aligned shifts the
// box by -0.5 pixel (pixel-centre model) and does not force boxes to be at least 1 cell large.
// Differentiable w.r.t. input; like torchvision, no gradient flows to rois.
torch::Tensor roi_align(const torch::Tensor& input, const torch::Tensor& rois,
                        std::array<int64_t, 2> output_size, double spatial_scale,
                        int64_t sampling_ratio, bool aligned);

// torchvision.ops.roi_pool (Fast R-CNN RoI max pooling): roi corners are rounded to cells, bin
// b of n covers [floor(b*len/n), ceil((b+1)*len/n)), bins outside the map are 0. Returns
// [R,C,out_h,out_w]; the gradient goes to the first maximum of each bin in row-major order.
torch::Tensor roi_pool(const torch::Tensor& input, const torch::Tensor& rois,
                       std::array<int64_t, 2> output_size, double spatial_scale);

}  // namespace cspn::detect
