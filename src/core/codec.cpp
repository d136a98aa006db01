#include "cspn/core/codec.hpp"
#include "cspn/core/util.hpp"

#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>

#include <torch/torch.h>

namespace cspn {
namespace {

// Pixels beyond this many sigmas carry under 1.2% of the peak: a point whose 3-sigma square misses
// the heatmap leaves a target too faint to learn from, so it is not supervised.
constexpr double kSupportSigmas = 3.0;

}  // namespace

HeatmapCodec::HeatmapCodec(const KeypointModelConfig& cfg)
    : HeatmapCodec(cfg.input_size.size() == 2 ? cfg.input_size[0] : -1,
                   cfg.input_size.size() == 2 ? cfg.input_size[1] : -1, cfg.heatmap_stride, cfg.sigma) {}

HeatmapCodec::HeatmapCodec(int input_h, int input_w, int stride, float sigma)
    : input_h_(input_h), input_w_(input_w), stride_(stride), sigma_(sigma) {
  if (input_h <= 0 || input_w <= 0)
    throw std::invalid_argument("HeatmapCodec: input size should be [height, width] with both > 0, got " +
                                std::to_string(input_h) + "x" + std::to_string(input_w));
  if (stride <= 0 || input_h % stride != 0 || input_w % stride != 0)
    throw std::invalid_argument("HeatmapCodec: heatmap_stride " + std::to_string(stride) +
                                " should be > 0 and divide the input size " + std::to_string(input_h) + "x" +
                                std::to_string(input_w));
  if (!(sigma > 0.0f))
    throw std::invalid_argument("HeatmapCodec: sigma should be > 0 heatmap pixels, got " + std::to_string(sigma));
  heatmap_h_ = input_h / stride;
  heatmap_w_ = input_w / stride;
}

std::vector<HeatmapCodec> HeatmapCodec::for_network(const KeypointModelConfig& cfg) {
  std::vector<HeatmapCodec> codecs;
  for (int i = 0; i < cfg.stages; ++i)
    if (i == 0 || cfg.stage_stride(i) != cfg.stage_stride(i - 1)) codecs.push_back(for_stage(cfg, i));
  return codecs;
}

HeatmapCodec HeatmapCodec::for_stage(const KeypointModelConfig& cfg, int i) {
  const HeatmapCodec first(cfg);
  return {first.input_h(), first.input_w(), cfg.stage_stride(i), cfg.sigma};
}

std::pair<torch::Tensor, torch::Tensor> HeatmapCodec::encode(const torch::Tensor& keypoints) const {
  if (keypoints.dim() < 2 || keypoints.size(-1) != 3 || !keypoints.is_floating_point())
    throw std::invalid_argument("HeatmapCodec::encode: keypoints should be float [K,3] or [N,K,3] (x, y, w), got " +
                                std::string(keypoints.dtype().name()) + " " + shape_of(keypoints));
  const double s = stride_;
  const double two_var = 2.0 * static_cast<double>(sigma_) * sigma_;
  const double r = kSupportSigmas * sigma_;
  // Input pixels -> heatmap pixels under the centre convention of the header; [...,K] each.
  auto u = (keypoints.select(-1, 0) + 0.5) / s - 0.5;
  auto v = (keypoints.select(-1, 1) + 0.5) / s - 0.5;
  // Heatmap area in heatmap coordinates is [-0.5, w-0.5] x [-0.5, h-0.5].
  auto supervised = (keypoints.select(-1, 2) > 0) & torch::isfinite(u) & torch::isfinite(v) & (u + r >= -0.5) &
                    (u - r <= heatmap_w_ - 0.5) & (v + r >= -0.5) & (v - r <= heatmap_h_ - 0.5);
  // Unsupervised points may carry no position (NaN); park them at 0 so the product below stays finite.
  u = torch::where(supervised, u, torch::zeros_like(u)).unsqueeze(-1).unsqueeze(-1);  // [...,K,1,1]
  v = torch::where(supervised, v, torch::zeros_like(v)).unsqueeze(-1).unsqueeze(-1);
  auto xs = torch::arange(heatmap_w_, keypoints.options()).view({1, heatmap_w_});  // [1,w]
  auto ys = torch::arange(heatmap_h_, keypoints.options()).view({heatmap_h_, 1});  // [h,1]
  auto weight = supervised.to(keypoints.scalar_type());
  // The Gaussian is separable: [...,K,1,w] * [...,K,h,1] -> [...,K,h,w], peak 1 at (u, v); the
  // weight goes on the small factor so unsupervised targets are all zero at no extra pass.
  auto gx = torch::exp(-(xs - u).square() / two_var) * weight.unsqueeze(-1).unsqueeze(-1);
  auto gy = torch::exp(-(ys - v).square() / two_var);
  return {gx * gy, weight};
}

std::pair<torch::Tensor, torch::Tensor> HeatmapCodec::decode(const torch::Tensor& heatmaps,
                                                             const std::string& mode) const {
  if (mode != "taylor" && mode != "quarter" && mode != "argmax")
    throw std::invalid_argument("HeatmapCodec::decode: mode should be 'taylor', 'quarter' or 'argmax', got '" + mode +
                                "'");
  if (heatmaps.dim() != 4 || heatmaps.size(2) != heatmap_h_ || heatmaps.size(3) != heatmap_w_ ||
      !heatmaps.is_floating_point())
    throw std::invalid_argument("HeatmapCodec::decode: heatmaps should be float [N,K," + std::to_string(heatmap_h_) +
                                "," + std::to_string(heatmap_w_) + "], got " +
                                std::string(heatmaps.dtype().name()) + " " + shape_of(heatmaps));
  const int64_t h = heatmap_h_, w = heatmap_w_;
  auto flat = heatmaps.flatten(2);  // [N,K,h*w]
  auto [scores, index] = flat.max(2);  // [N,K] each
  auto px = index.remainder(w), py = index.div(w, "floor");
  auto x = px.to(heatmaps.scalar_type()), y = py.to(heatmaps.scalar_type());
  if (mode == "quarter") {
    // Neighbour values through clamped indices; the shift applies only where both neighbours exist.
    auto at = [&](const torch::Tensor& yy, const torch::Tensor& xx) {
      return flat.gather(2, (yy * w + xx).unsqueeze(2)).squeeze(2);
    };
    auto dx = at(py, (px + 1).clamp_max(w - 1)) - at(py, (px - 1).clamp_min(0));
    auto dy = at((py + 1).clamp_max(h - 1), px) - at((py - 1).clamp_min(0), px);
    auto inside_x = (px > 0) & (px < w - 1);
    auto inside_y = (py > 0) & (py < h - 1);
    x = x + 0.25 * torch::sign(dx) * inside_x;
    y = y + 0.25 * torch::sign(dy) * inside_y;
  } else if (mode == "taylor") {
    const auto offset = taylor_offset(heatmaps, px, py);
    x = x + offset.select(2, 0);
    y = y + offset.select(2, 1);
  }
  auto coords = torch::stack({x, y}, 2);  // [N,K,2] heatmap pixels
  return {(coords + 0.5) * static_cast<double>(stride_) - 0.5, scores};
}

torch::Tensor HeatmapCodec::taylor_offset(const torch::Tensor& heatmaps, const torch::Tensor& px,
                                          const torch::Tensor& py) const {
  // The log of a Gaussian is a quadratic whose maximum is one Newton step from any point near it:
  // offset = -H^-1 g with the gradient g and Hessian H of the log-heatmap at the argmax. (Smoothing
  // the map first, as DARK does, made held-out synthetic NE worse here: 0.0261 against 0.0247.)
  const int64_t n = heatmaps.size(0), k = heatmaps.size(1), h = heatmap_h_, w = heatmap_w_;
  // One replicated pixel on every side so that the 3x3 neighbourhood of a border argmax exists.
  auto logs = torch::replication_pad2d(heatmaps.reshape({n * k, 1, h, w}).clamp_min(1e-10).log(), {1, 1, 1, 1})
                  .view({n, k, -1});
  const int64_t wp = w + 2;
  auto at = [&](int dy, int dx) { return logs.gather(2, ((py + 1 + dy) * wp + px + 1 + dx).unsqueeze(2)).squeeze(2); };
  const auto c = at(0, 0);
  const auto gx = 0.5 * (at(0, 1) - at(0, -1)), gy = 0.5 * (at(1, 0) - at(-1, 0));
  const auto hxx = at(0, 1) - 2 * c + at(0, -1), hyy = at(1, 0) - 2 * c + at(-1, 0);
  const auto hxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1));
  const auto det = hxx * hyy - hxy * hxy;
  // Only a peak (H negative definite) has a maximum to step to, and only an argmax with neighbours
  // on every side has the differences to find it; elsewhere the argmax stands.
  const auto peak = (hxx < 0) & (det > 1e-12) & (px > 0) & (px < w - 1) & (py > 0) & (py < h - 1);
  const auto safe_det = torch::where(peak, det, torch::ones_like(det));
  auto dx = -(hyy * gx - hxy * gy) / safe_det;
  auto dy = -(hxx * gy - hxy * gx) / safe_det;
  // The true maximum lies within a pixel of the argmax; a larger step is a flat or odd map.
  dx = torch::where(peak, dx.clamp(-1.0, 1.0), torch::zeros_like(dx));
  dy = torch::where(peak, dy.clamp(-1.0, 1.0), torch::zeros_like(dy));
  return torch::stack({dx, dy}, 2);
}

torch::Tensor HeatmapCodec::unflip(const torch::Tensor& heatmaps, const std::vector<int>& flip) {
  if (heatmaps.dim() != 4 || heatmaps.size(1) != static_cast<int64_t>(flip.size()))
    throw std::invalid_argument("HeatmapCodec::unflip: heatmaps should be [N,K,h,w] with K = " +
                                std::to_string(flip.size()) + " (the flip table), got " + shape_of(heatmaps));
  for (size_t i = 0; i < flip.size(); ++i)
    if (flip[i] < 0 || flip[i] >= static_cast<int>(flip.size()))
      throw std::invalid_argument("HeatmapCodec::unflip: flip[" + std::to_string(i) + "] = " +
                                  std::to_string(flip[i]) + " is not a slot of " + std::to_string(flip.size()));
  // Slot i of the unmirrored frame is what the mirrored crop predicted in its partner slot flip[i].
  auto perm = torch::tensor(std::vector<int64_t>(flip.begin(), flip.end()),
                            torch::TensorOptions().dtype(torch::kLong).device(heatmaps.device()));
  return heatmaps.flip({3}).index_select(1, perm);
}

torch::Tensor HeatmapCodec::to_image(const torch::Tensor& coords, const torch::Tensor& crop_to_image) {
  if (coords.dim() != 3 || coords.size(2) != 2 || !coords.is_floating_point())
    throw std::invalid_argument("HeatmapCodec::to_image: coords should be float [N,K,2], got " +
                                std::string(coords.dtype().name()) + " " + shape_of(coords));
  if (crop_to_image.dim() != 3 || crop_to_image.size(0) != coords.size(0) || crop_to_image.size(1) != 2 ||
      crop_to_image.size(2) != 3)
    throw std::invalid_argument("HeatmapCodec::to_image: affine should be [N,2,3] with N = " +
                                std::to_string(coords.size(0)) + ", got " + shape_of(crop_to_image));
  auto a = crop_to_image.to(coords.options());
  // [N,K,2] x [N,2,2]^T + [N,1,2]
  return torch::matmul(coords, a.narrow(2, 0, 2).transpose(1, 2)) + a.select(2, 2).unsqueeze(1);
}

}  // namespace cspn
