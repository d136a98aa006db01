#pragma once
// Drawing of the synthetic data set (synth.cpp): fabric colours and patterns, garment layers
// composited with shading and seams, cluttered backgrounds.
#include <cmath>
#include <cstdint>
#include <vector>

#include <opencv2/core.hpp>

#include "geometry.hpp"

namespace cspn::synth {

cv::Vec3f random_colour(Rng& rng, double s_lo = 0.05, double s_hi = 0.95, double v_lo = 0.12, double v_hi = 0.97);
cv::Vec3f skin_colour(Rng& rng);

inline double smooth_step(double x) { return x <= 0 ? 0 : x >= 1 ? 1 : x * x * (3 - 2 * x); }

// Fabric appearance as a function of texture coordinates (u, v): pattern, grain, light, folds.
struct Fabric {
  enum Pattern { kPlain, kStripes, kChecks, kDots, kTwill } pattern = kPlain;
  cv::Vec3f base, accent;
  double period = 0.1, duty = 0.5, cos_a = 1, sin_a = 0;
  double light_u = 0, light_v = 0, fold_amp = 0, fold_freq = 20, fold_wave = 3, fold_phase = 0;
  const cv::Mat* grain = nullptr;  // [64, 64] float in [0, 1], tiled
  double grain_scale = 60;

  // Skin or any untextured material: fine grain, light from above.
  static Fabric plain(const cv::Vec3f& colour, const cv::Mat* grain) {
    Fabric f;
    f.base = f.accent = colour;
    f.light_v = -0.2;
    f.grain = grain;
    f.grain_scale = 30;
    return f;
  }

  static Fabric random(Rng& rng, const cv::Mat* grain) {
    Fabric f;
    f.grain = grain;
    f.base = random_colour(rng);
    f.accent = rng.chance(0.5) ? random_colour(rng) : f.base * static_cast<float>(rng.uniform(0.4, 1.6));
    const double r = rng.uniform();
    f.pattern = r < 0.35 ? kPlain : r < 0.6 ? kStripes : r < 0.75 ? kChecks : r < 0.87 ? kDots : kTwill;
    f.period = rng.uniform(0.04, 0.14);
    f.duty = rng.uniform(0.2, 0.6);
    const double a = rng.chance(0.6) ? (rng.chance(0.5) ? 0.0 : kPi / 2) : rng.uniform(0, kPi);
    f.cos_a = std::cos(a);
    f.sin_a = std::sin(a);
    const double la = rng.uniform(0, 2 * kPi), amp = rng.uniform(0.0, 0.45);
    f.light_u = amp * std::cos(la);
    f.light_v = amp * std::sin(la);
    f.fold_amp = rng.chance(0.7) ? rng.uniform(0.05, 0.3) : 0.0;
    f.fold_freq = rng.uniform(12, 35);
    f.fold_wave = rng.uniform(1, 5);
    f.fold_phase = rng.uniform(0, 2 * kPi);
    f.grain_scale = rng.uniform(40, 120);
    return f;
  }

  float grain_at(double u, double v) const {
    const int gx = static_cast<int>(std::floor(u)) & 63, gy = static_cast<int>(std::floor(v)) & 63;
    return grain->at<float>(gy, gx);
  }

  // Anti-aliased band of a periodic pattern: 1 inside the band, `soft` = one pixel in periods.
  double band(double t, double soft) const {
    const double d = std::abs(t - std::floor(t) - 0.5);  // 0 at band centre, 0.5 between bands
    return smooth_step((duty * 0.5 - d) / soft + 0.5);
  }

  // Colour and lighting at texture coordinates; `pixel` is one image pixel in texture units.
  cv::Vec3f at(double u, double v, double pixel) const {
    const double soft = std::max(pixel / period, 1e-3);
    double p = 0;
    switch (pattern) {
      case kPlain:
        break;
      case kStripes:
        p = band((u * cos_a + v * sin_a) / period, soft);
        break;
      case kChecks:
        p = 0.5 * (band((u * cos_a + v * sin_a) / period, soft) + band((v * cos_a - u * sin_a) / period, soft));
        break;
      case kDots: {
        const double fu = u / period - std::floor(u / period) - 0.5, fv = v / period - std::floor(v / period) - 0.5;
        p = smooth_step((duty * 0.5 - std::sqrt(fu * fu + fv * fv)) / soft + 0.5);
        break;
      }
      case kTwill:
        p = 0.5 + 0.35 * std::sin((u + v) * 2 * kPi / (0.25 * period)) * grain_at(u * 200, v * 200);
        break;
    }
    const float g = grain_at(u * grain_scale, v * grain_scale);
    double fold = 0;
    if (fold_amp > 0) {
      const double s = 0.5 + 0.5 * std::sin(fold_freq * u + fold_wave * std::sin(3 * v) + fold_phase);
      fold = (s * s) * (s * s);  // narrow dark creases
    }
    const double light = (1 + light_u * u + light_v * v) * (1 - fold_amp * fold) * (0.93 + 0.14 * g);
    return (base * static_cast<float>(1 - p) + accent * static_cast<float>(p)) * static_cast<float>(light);
  }
};

// Coverage of one drawn layer, for occlusion tests of the layers below it.
struct Layer {
  cv::Mat mask;  // [roi.height, roi.width] uint8, anti-aliased coverage
  cv::Rect roi;
  bool covers(Pt p) const {
    const cv::Point q(static_cast<int>(std::lround(p.x)) - roi.x, static_cast<int>(std::lround(p.y)) - roi.y);
    return q.x >= 0 && q.y >= 0 && q.x < roi.width && q.y < roi.height && mask.at<std::uint8_t>(q) >= 128;
  }
};

// Composites a filled polygon (image pixels) onto canvas [H, W] float BGR, coloured by `fabric`
// at texture coordinates tex(x, y); seams are darkened bands; edges get ambient-occlusion shade.
Layer draw_layer(cv::Mat& canvas, const std::vector<Pt>& polygon, const std::vector<std::vector<Pt>>& seams,
                 const Fabric& fabric, const Homography& tex, double texture_pixel, double edge_shade);

// Per-thread image buffers, reused from image to image (fresh full-size allocations cost more
// in page faults than the drawing itself at 256x256).
struct Scratch {
  cv::Mat background;  // [H, W] uint8 BGR
  cv::Mat canvas;      // [H, W] float BGR, 0..255
  cv::Mat noise;       // [H, W] float BGR
  cv::Mat image;       // [H, W] uint8 BGR, the written picture
};

// Cluttered background into scratch.canvas: smooth colour field, random shapes, optional floor,
// defocus.
void draw_background(Rng& rng, int width, int height, Scratch& scratch);

}  // namespace cspn::synth
