#pragma once
// Top-down crops: a garment box expanded and fitted to the network's aspect ratio, cut out with an
// affine warp, optionally augmented (scale, rotation, shift, flip, colour, occlusion).
#include <array>
#include <random>

#include <opencv2/core.hpp>
#include <torch/types.h>

#include "cspn/core/config.hpp"
#include "cspn/core/sample.hpp"

namespace cspn {

// One crop to make: a box of a sample's image, the ground-truth garment it belongs to (or -1).
struct CropJob {
  int sample = 0;
  int garment = -1;
  int category = 0;
  Box box;
};

// A crop window in image pixels: centre, size, rotation (degrees, counter-clockwise) and mirroring.
struct CropWindow {
  float cx = 0, cy = 0, w = 0, h = 0;
  float rotation = 0;
  bool flip = false;
};

// The box scaled by `expand` and grown along one axis to the out_w:out_h aspect ratio.
CropWindow fit_box(const Box& box, float expand, int out_w, int out_h);

// Random scale/rotation/shift/flip per the data config.
CropWindow augment_window(const CropWindow& base, const DataConfig& cfg, std::mt19937& rng);

// 2x3 affine mapping image pixels -> crop pixels (out_w x out_h), mirroring included.
cv::Matx23d window_to_crop(const CropWindow& win, int out_w, int out_h);

// The crop of `image` (BGR uint8) -> BGR uint8 out_h x out_w; outside the image is black.
cv::Mat warp_crop(const cv::Mat& image, const cv::Matx23d& image_to_crop, int out_w, int out_h);

// A garment's keypoints in crop pixels as [K,3] (x, y, supervise 0/1): mirrored crops swap partner
// slots; absent landmarks and landmarks the crop cut off are not supervised.
torch::Tensor crop_keypoints(const Garment& g, const cv::Matx23d& image_to_crop, bool flipped,
                             const std::vector<int>& flip_partners, int out_w, int out_h);

// Photometric augmentation in place: brightness, contrast, saturation; occluding patches.
void jitter_colour(cv::Mat& bgr, float strength, std::mt19937& rng);
void paste_occluder(cv::Mat& bgr, std::mt19937& rng);

// BGR uint8 HxW -> [3,H,W] float RGB normalised with ImageNet mean/std.
torch::Tensor to_input_tensor(const cv::Mat& bgr);

// [2,3] float tensor of the inverse of `image_to_crop` (crop -> image), for HeatmapCodec::to_image.
torch::Tensor crop_to_image_tensor(const cv::Matx23d& image_to_crop);

}  // namespace cspn
