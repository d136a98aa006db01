#include "cspn/engine/crop.hpp"

#include <algorithm>
#include <cmath>

#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

namespace cspn {

CropWindow fit_box(const Box& box, float expand, int out_w, int out_h) {
  CropWindow win;
  win.cx = 0.5f * (box.x1 + box.x2);
  win.cy = 0.5f * (box.y1 + box.y2);
  win.w = std::max(box.width(), 1.0f) * expand;
  win.h = std::max(box.height(), 1.0f) * expand;
  const float aspect = static_cast<float>(out_w) / static_cast<float>(out_h);
  if (win.w > win.h * aspect)
    win.h = win.w / aspect;
  else
    win.w = win.h * aspect;
  return win;
}

CropWindow augment_window(const CropWindow& base, const DataConfig& cfg, std::mt19937& rng) {
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  CropWindow win = base;
  const float scale = 1.0f + cfg.scale_aug * unit(rng);
  win.w *= scale;
  win.h *= scale;
  win.cx += cfg.shift_aug * base.w * unit(rng);
  win.cy += cfg.shift_aug * base.h * unit(rng);
  win.rotation = cfg.rotate_aug * unit(rng);
  win.flip = cfg.flip_aug && std::bernoulli_distribution(0.5)(rng);
  return win;
}

cv::Matx23d window_to_crop(const CropWindow& win, int out_w, int out_h) {
  // image -> centred -> rotated -> scaled -> (mirrored) -> crop pixels, where the crop's centre is
  // ((out_w-1)/2, (out_h-1)/2) so that mirroring is x -> out_w-1-x, the codec's convention.
  const double theta = win.rotation * M_PI / 180.0;
  const double c = std::cos(theta), s = std::sin(theta);
  const double sx = out_w / static_cast<double>(win.w), sy = out_h / static_cast<double>(win.h);
  const double mirror = win.flip ? -1.0 : 1.0;
  const double a = mirror * sx * c, b = mirror * sx * s;
  const double d = -sy * s, e = sy * c;
  const double tx = 0.5 * (out_w - 1) - (a * win.cx + b * win.cy);
  const double ty = 0.5 * (out_h - 1) - (d * win.cx + e * win.cy);
  return {a, b, tx, d, e, ty};
}

cv::Mat warp_crop(const cv::Mat& image, const cv::Matx23d& image_to_crop, int out_w, int out_h) {
  cv::Mat out;
  cv::warpAffine(image, out, cv::Mat(image_to_crop), cv::Size(out_w, out_h), cv::INTER_LINEAR,
                 cv::BORDER_CONSTANT, cv::Scalar::all(0));
  return out;
}

torch::Tensor crop_keypoints(const Garment& g, const cv::Matx23d& m, bool flipped,
                             const std::vector<int>& flip_partners, int out_w, int out_h) {
  const int k = static_cast<int>(g.keypoints.size());
  auto out = torch::zeros({k, 3});
  auto acc = out.accessor<float, 2>();
  for (int slot = 0; slot < k; ++slot) {
    // In a mirrored crop, slot `slot` shows what the image calls its partner.
    const Keypoint& p = g.keypoints[flipped ? flip_partners[slot] : slot];
    const double x = m(0, 0) * p.x + m(0, 1) * p.y + m(0, 2);
    const double y = m(1, 0) * p.x + m(1, 1) * p.y + m(1, 2);
    acc[slot][0] = static_cast<float>(x);
    acc[slot][1] = static_cast<float>(y);
    const bool inside = x >= 0 && y >= 0 && x <= out_w - 1 && y <= out_h - 1;
    acc[slot][2] = (p.v != Visibility::Absent && inside) ? 1.0f : 0.0f;
  }
  return out;
}

void jitter_colour(cv::Mat& bgr, float strength, std::mt19937& rng) {
  if (strength <= 0) return;
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  const float brightness = 255.0f * 0.5f * strength * unit(rng);
  const float contrast = 1.0f + strength * unit(rng);
  const float saturation = 1.0f + strength * unit(rng);
  cv::Mat f;
  bgr.convertTo(f, CV_32FC3);
  cv::Mat gray;
  cv::cvtColor(f, gray, cv::COLOR_BGR2GRAY);
  cv::Mat gray3;
  cv::cvtColor(gray, gray3, cv::COLOR_GRAY2BGR);
  f = gray3 + saturation * (f - gray3);  // saturation: blend with grey
  const double mean = cv::mean(gray)[0];
  f = (f - cv::Scalar::all(mean)) * contrast + cv::Scalar::all(mean + brightness);
  f.convertTo(bgr, CV_8UC3);  // saturates to [0, 255]
}

void paste_occluder(cv::Mat& bgr, std::mt19937& rng) {
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  const int w = std::max(2, static_cast<int>(bgr.cols * (0.1f + 0.2f * unit(rng))));
  const int h = std::max(2, static_cast<int>(bgr.rows * (0.1f + 0.2f * unit(rng))));
  const cv::Point centre(static_cast<int>(unit(rng) * bgr.cols), static_cast<int>(unit(rng) * bgr.rows));
  const cv::Scalar colour(255 * unit(rng), 255 * unit(rng), 255 * unit(rng));
  if (unit(rng) < 0.5f) {
    cv::rectangle(bgr, cv::Rect(centre.x - w / 2, centre.y - h / 2, w, h), colour, cv::FILLED);
  } else {
    cv::ellipse(bgr, centre, cv::Size(w / 2, h / 2), 360 * unit(rng), 0, 360, colour, cv::FILLED,
                cv::LINE_AA);
  }
}

torch::Tensor to_input_tensor(const cv::Mat& bgr) {
  TORCH_CHECK(bgr.type() == CV_8UC3, "to_input_tensor: expected an 8-bit 3-channel image");
  cv::Mat rgb;
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  auto t = torch::from_blob(rgb.data, {rgb.rows, rgb.cols, 3}, torch::kUInt8)
               .permute({2, 0, 1})
               .to(torch::kFloat32)
               .div_(255.0f);
  static const auto mean = torch::tensor({0.485f, 0.456f, 0.406f}).view({3, 1, 1});
  static const auto std = torch::tensor({0.229f, 0.224f, 0.225f}).view({3, 1, 1});
  return t.sub_(mean).div_(std).contiguous();
}

torch::Tensor crop_to_image_tensor(const cv::Matx23d& image_to_crop) {
  cv::Matx23d inverse;
  cv::invertAffineTransform(image_to_crop, inverse);
  auto t = torch::empty({2, 3}, torch::kFloat32);
  auto acc = t.accessor<float, 2>();
  for (int r = 0; r < 2; ++r)
    for (int c = 0; c < 3; ++c) acc[r][c] = static_cast<float>(inverse(r, c));
  return t;
}

}  // namespace cspn
