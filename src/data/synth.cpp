// Synthetic garments with exactly known landmarks. Each garment is a polygon built in a garment
// frame (x right = image left-to-right for a front view, y down, shoulder/waist at y ~ 0, units of
// roughly the garment's length) from random proportions; its landmarks are vertices of, or points
// on, that outline. One homography (scale, rotation, placement, perspective) maps the outline,
// the landmarks and the fabric texture coordinates into the image, so labels and pixels agree.
// Visibility follows the drawing: landmarks under a later layer (another garment, an occluder)
// are Occluded, landmarks outside the image Absent, the box is clipped to the image.
#include "cspn/data/synth.hpp"
#include "cspn/util.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "cspn/cspn.hpp"
#include "cspn/io/atomic_file.hpp"
#include "cspn/landmarks.hpp"
#include "cspn/sample.hpp"

namespace cspn {
namespace fs = std::filesystem;

namespace {

constexpr double kPi = 3.14159265358979323846;

// Portable generator (the std distributions differ between standard libraries, and the data set
// must be the same wherever it is generated).
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    state_ += 0x9E3779B97F4A7C15ull;
    return splitmix64(state_);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  int integer(int lo, int hi) { return std::min(hi, lo + static_cast<int>(uniform() * (hi - lo + 1))); }
  bool chance(double p) { return uniform() < p; }
  double normal() {
    const double u1 = std::max(uniform(), 1e-300), u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * kPi * u2);
  }

 private:
  std::uint64_t state_;
};

using Pt = cv::Point2d;

Pt lerp(Pt a, Pt b, double t) { return a + (b - a) * t; }

// Points after `a` up to and including `b` on a curve sagging `sag` downwards (+y) in the middle.
void append_curve(std::vector<Pt>& out, Pt a, Pt b, double sag, int n) {
  for (int i = 1; i <= n; ++i) {
    const double t = static_cast<double>(i) / n;
    out.push_back(lerp(a, b, t) + Pt(0, 4.0 * sag * t * (1 - t)));
  }
}

enum class Kind { Top, Trousers, Skirt, Dress };

// A garment (or body part) in the garment frame.
struct Outline {
  std::vector<Pt> polygon;
  std::vector<std::vector<Pt>> seams;  // open polylines drawn as darker stitching / bands
  std::array<Pt, 8> landmarks{};       // by DeepFashion slot
  std::array<bool, 8> has{};
};

// DeepFashion slots (LandmarkSchema::deepfashion()).
enum Slot { kLeftCollar, kRightCollar, kLeftSleeve, kRightSleeve, kLeftWaist, kRightWaist, kLeftHem, kRightHem };

void set_landmark(Outline& o, int slot, Pt p) {
  o.landmarks[slot] = p;
  o.has[slot] = true;
}

// Tops and dresses share the upper body: collars, shoulders, sleeves, armpits.
struct UpperBody {
  double neck, neck_dip, shoulder, shoulder_drop, body, armpit, cuff;
  double sleeve_len[2], sleeve_angle[2];  // per side (0 image-left, 1 image-right); angle below horizontal
};

struct Sleeve {
  Pt shoulder, outer, inner, armpit;
};

// Side 0 is the image left (x < 0), side 1 its mirror image.
Sleeve make_sleeve(const UpperBody& u, int side) {
  const double sx = side == 0 ? -1.0 : 1.0;
  const double a = u.sleeve_angle[side];
  Sleeve s;
  s.shoulder = {sx * u.shoulder, u.shoulder_drop};
  s.outer = s.shoulder + Pt(sx * std::cos(a), std::sin(a)) * u.sleeve_len[side];
  s.inner = s.outer + Pt(-sx * std::sin(a), std::cos(a)) * u.cuff;  // across the cuff, towards the body
  s.armpit = {sx * u.body, u.armpit};
  return s;
}

// A sleeve is drawable when its cuff ends clear of the body side and below the shoulder.
bool sleeve_ok(const Sleeve& s) {
  return std::abs(s.inner.x) > std::abs(s.armpit.x) + 0.03 && s.inner.y > s.shoulder.y;
}

UpperBody sample_upper_body(Rng& rng, double min_sleeve, double max_sleeve) {
  for (;;) {
    UpperBody u;
    u.neck = rng.uniform(0.07, 0.12);
    u.neck_dip = rng.uniform(0.03, 0.14);
    u.shoulder = rng.uniform(0.21, 0.30);
    u.shoulder_drop = rng.uniform(0.02, 0.07);
    u.body = u.shoulder * rng.uniform(0.78, 0.95);
    u.armpit = rng.uniform(0.24, 0.33);
    u.cuff = rng.uniform(0.08, 0.13);
    const double len = rng.uniform(min_sleeve, max_sleeve);
    for (int side = 0; side < 2; ++side) {
      u.sleeve_len[side] = len * rng.uniform(0.93, 1.07);
      u.sleeve_angle[side] = rng.uniform(15.0, 72.0) * kPi / 180.0;
    }
    if (sleeve_ok(make_sleeve(u, 0)) && sleeve_ok(make_sleeve(u, 1))) return u;
  }
}

// Upper body of a top or dress: `sides` continues each side from the armpit down (image-left side
// top to bottom), the hem joins the two sides.
Outline build_upper(const UpperBody& u, const std::vector<Pt>& left_side, double hem_sag) {
  Outline o;
  const Sleeve l = make_sleeve(u, 0), r = make_sleeve(u, 1);
  const Pt lc(-u.neck, 0), rc(u.neck, 0);
  auto& p = o.polygon;
  p = {lc, l.shoulder, l.outer, l.inner, l.armpit};
  p.insert(p.end(), left_side.begin(), left_side.end());
  const Pt lh = left_side.back(), rh(-lh.x, lh.y);
  append_curve(p, lh, rh, hem_sag, 8);
  for (auto it = left_side.rbegin() + 1; it != left_side.rend(); ++it) p.push_back({-it->x, it->y});
  p.insert(p.end(), {r.armpit, r.inner, r.outer, r.shoulder, rc});
  std::vector<Pt> neckline{rc};
  append_curve(neckline, rc, lc, u.neck_dip, 8);
  p.insert(p.end(), neckline.begin() + 1, neckline.end() - 1);  // back to lc, which starts the polygon

  set_landmark(o, kLeftCollar, lc);
  set_landmark(o, kRightCollar, rc);
  set_landmark(o, kLeftSleeve, lerp(l.outer, l.inner, 0.5));
  set_landmark(o, kRightSleeve, lerp(r.outer, r.inner, 0.5));
  set_landmark(o, kLeftHem, lh);
  set_landmark(o, kRightHem, rh);
  o.seams.push_back(neckline);
  o.seams.push_back({lerp(l.outer, l.shoulder, 0.1), lerp(l.inner, l.armpit, 0.1)});  // cuff bands
  o.seams.push_back({lerp(r.outer, r.shoulder, 0.1), lerp(r.inner, r.armpit, 0.1)});
  o.seams.push_back({lh + Pt(0.01, -0.035), rh + Pt(-0.01, -0.035)});  // hem stitching
  return o;
}

Outline build_top(Rng& rng) {
  const UpperBody u = sample_upper_body(rng, 0.12, 0.62);
  const double length = rng.uniform(0.70, 1.0);
  const double hem = u.body * rng.uniform(0.9, 1.15);
  Outline o = build_upper(u, {{-hem, length}}, rng.uniform(-0.02, 0.04));
  if (rng.chance(0.35)) o.seams.push_back({{0, u.neck_dip}, {0, length}});  // button placket
  return o;
}

Outline build_dress(Rng& rng) {
  const UpperBody u = sample_upper_body(rng, 0.08, 0.5);
  const double waist_y = rng.uniform(0.36, 0.50), waist = u.body * rng.uniform(0.72, 0.92);
  const double length = rng.uniform(1.0, 1.55), hem = waist * rng.uniform(1.15, 2.3);
  Outline o = build_upper(u, {{-waist, waist_y}, {-hem, length}}, rng.uniform(0.0, 0.08));
  set_landmark(o, kLeftWaist, {-waist, waist_y});
  set_landmark(o, kRightWaist, {waist, waist_y});
  o.seams.push_back({{-waist, waist_y}, {waist, waist_y}});  // waist seam / belt
  return o;
}

Outline build_trousers(Rng& rng) {
  for (;;) {
    const double waist = rng.uniform(0.16, 0.23), hip = waist * rng.uniform(1.0, 1.15);
    const double hip_y = rng.uniform(0.10, 0.18), crotch_y = rng.uniform(0.24, 0.34);
    const double length = rng.chance(0.2) ? rng.uniform(0.38, 0.55) : rng.uniform(0.75, 1.05);
    const double spread = rng.uniform(-0.01, 0.12), leg = rng.uniform(0.10, 0.17);
    const Pt lw(-waist, 0), lhip(-hip, hip_y), lout(-hip - spread, length), lin(-hip - spread + leg, length);
    if (lin.x > -0.03) continue;  // the legs must part at the hem
    Outline o;
    const Pt crotch(0, crotch_y);
    o.polygon = {lw, lhip, lout, lin, crotch, {-lin.x, length}, {-lout.x, length}, {hip, hip_y}, {waist, 0}};
    set_landmark(o, kLeftWaist, lw);
    set_landmark(o, kRightWaist, {waist, 0});
    set_landmark(o, kLeftHem, lerp(lout, lin, 0.5));
    set_landmark(o, kRightHem, {-lerp(lout, lin, 0.5).x, length});
    o.seams.push_back({{-waist, 0.045}, {waist, 0.045}});   // waistband
    o.seams.push_back({{0, 0.045}, {0, crotch_y * 0.75}});  // fly
    o.seams.push_back({lout + Pt(0, -0.03), lin + Pt(0, -0.03)});
    o.seams.push_back({Pt(-lin.x, length - 0.03), Pt(-lout.x, length - 0.03)});
    return o;
  }
}

Outline build_skirt(Rng& rng) {
  const double waist = rng.uniform(0.15, 0.22), length = rng.uniform(0.35, 0.95);
  const double hem = waist * rng.uniform(1.1, 2.1), hip_y = length * rng.uniform(0.15, 0.3);
  const double hip = std::max(waist * 1.05, waist + (hem - waist) * hip_y / length * 1.2);
  Outline o;
  const Pt lw(-waist, 0), lh(-hem, length), rh(hem, length);
  o.polygon = {lw, {-hip, hip_y}, lh};
  append_curve(o.polygon, lh, rh, rng.uniform(0.0, 0.06) * hem / waist, 10);
  o.polygon.insert(o.polygon.end(), {{hip, hip_y}, {waist, 0}});
  set_landmark(o, kLeftWaist, lw);
  set_landmark(o, kRightWaist, {waist, 0});
  set_landmark(o, kLeftHem, lh);
  set_landmark(o, kRightHem, rh);
  o.seams.push_back({{-waist, 0.04}, {waist, 0.04}});
  return o;
}

// Closed star-shaped blob (ellipse with wobble, or a rectangle) around `c`, radius ~r.
std::vector<Pt> make_blob(Rng& rng, Pt c, double rx, double ry) {
  const double rot = rng.uniform(0, kPi);
  const double cr = std::cos(rot), sr = std::sin(rot);
  std::vector<Pt> pts;
  if (rng.chance(0.35)) {
    for (Pt q : {Pt(-rx, -ry), Pt(rx, -ry), Pt(rx, ry), Pt(-rx, ry)})
      pts.push_back(c + Pt(cr * q.x - sr * q.y, sr * q.x + cr * q.y));
    return pts;
  }
  const double w2 = rng.uniform(0, 0.2), w3 = rng.uniform(0, 0.15), p2 = rng.uniform(0, 2 * kPi),
               p3 = rng.uniform(0, 2 * kPi);
  for (int k = 0; k < 28; ++k) {
    const double t = 2 * kPi * k / 28;
    const double wob = 1 + w2 * std::sin(2 * t + p2) + w3 * std::sin(3 * t + p3);
    const Pt q(rx * wob * std::cos(t), ry * wob * std::sin(t));
    pts.push_back(c + Pt(cr * q.x - sr * q.y, sr * q.x + cr * q.y));
  }
  return pts;
}

// Wearer parts drawn behind a garment (head/neck, hands, legs), in the garment frame.
std::vector<std::vector<Pt>> body_parts(Rng& rng, Kind kind, const Outline& o) {
  std::vector<std::vector<Pt>> parts;
  if ((kind == Kind::Top || kind == Kind::Dress) && rng.chance(0.45)) {
    const double neck = o.landmarks[kRightCollar].x * rng.uniform(0.55, 0.8);
    parts.push_back({{-neck, -0.16}, {neck, -0.16}, {neck, 0.08}, {-neck, 0.08}});
    parts.push_back(make_blob(rng, {0, -0.25}, rng.uniform(0.08, 0.1), rng.uniform(0.1, 0.13)));
    if (rng.chance(0.5)) {  // hands beyond the cuffs
      for (int slot : {kLeftSleeve, kRightSleeve}) {
        const Pt cuff = o.landmarks[slot];
        const Pt dir = cuff - Pt(cuff.x > 0 ? 0.2 : -0.2, 0.1);
        parts.push_back(make_blob(rng, cuff + dir * (0.07 / std::max(1e-6, std::hypot(dir.x, dir.y))), 0.045, 0.06));
      }
    }
  }
  if (kind != Kind::Top && rng.chance(0.45)) {
    const Pt lh = o.landmarks[kLeftHem], rh = o.landmarks[kRightHem];
    const double leg = rng.uniform(0.05, 0.075), down = rng.uniform(0.15, 0.4);
    // Trouser hem landmarks are the leg openings' centres; under a skirt or dress the legs stand apart.
    const double at = kind == Kind::Trousers ? 0.0 : 0.3;
    for (double x : {lerp(lh, rh, at).x, lerp(lh, rh, 1 - at).x}) {
      const double top = std::min(lh.y, rh.y) - 0.1;
      parts.push_back({{x - leg, top}, {x + leg, top}, {x + leg * 0.8, lh.y + down}, {x - leg * 0.8, lh.y + down}});
    }
  }
  return parts;
}

// 3x3 projective map of 2-D points.
struct Homography {
  cv::Matx33d m = cv::Matx33d::eye();
  Pt apply(Pt p) const {
    const double w = m(2, 0) * p.x + m(2, 1) * p.y + m(2, 2);
    return {(m(0, 0) * p.x + m(0, 1) * p.y + m(0, 2)) / w, (m(1, 0) * p.x + m(1, 1) * p.y + m(1, 2)) / w};
  }
  Homography inverse() const { return {m.inv()}; }
  Homography then(const Homography& outer) const { return {outer.m * m}; }
};

cv::Vec3f random_colour(Rng& rng, double s_lo = 0.05, double s_hi = 0.95, double v_lo = 0.12, double v_hi = 0.97) {
  cv::Mat hsv(1, 1, CV_32FC3, cv::Scalar(rng.uniform(0, 360), rng.uniform(s_lo, s_hi), rng.uniform(v_lo, v_hi)));
  cv::Mat bgr;
  cv::cvtColor(hsv, bgr, cv::COLOR_HSV2BGR);
  return bgr.at<cv::Vec3f>(0, 0) * 255.0f;
}

cv::Vec3f skin_colour(Rng& rng) {
  const double v = rng.uniform(0.3, 0.95);
  return cv::Vec3f(static_cast<float>(150 * v * rng.uniform(0.85, 1.0)), static_cast<float>(185 * v),
                   static_cast<float>(235 * v));
}

double smooth_step(double x) { return x <= 0 ? 0 : x >= 1 ? 1 : x * x * (3 - 2 * x); }

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

std::vector<cv::Point> fixed_point(const std::vector<Pt>& pts, cv::Point origin) {
  constexpr int kShift = 4;  // OpenCV sub-pixel drawing: coordinates in 1/16 pixel
  std::vector<cv::Point> out;
  out.reserve(pts.size());
  for (Pt p : pts)
    out.emplace_back(static_cast<int>(std::lround((p.x - origin.x) * (1 << kShift))),
                     static_cast<int>(std::lround((p.y - origin.y) * (1 << kShift))));
  return out;
}

// Composites a filled polygon (image pixels) onto canvas [H, W] float BGR, coloured by `fabric`
// at texture coordinates tex(x, y); seams are darkened bands; edges get ambient-occlusion shade.
Layer draw_layer(cv::Mat& canvas, const std::vector<Pt>& polygon, const std::vector<std::vector<Pt>>& seams,
                 const Fabric& fabric, const Homography& tex, double texture_pixel, double edge_shade) {
  double x0 = 1e18, y0 = 1e18, x1 = -1e18, y1 = -1e18;
  for (Pt p : polygon) {
    x0 = std::min(x0, p.x), y0 = std::min(y0, p.y), x1 = std::max(x1, p.x), y1 = std::max(y1, p.y);
  }
  Layer layer;
  layer.roi = cv::Rect(cv::Point(static_cast<int>(std::floor(x0)) - 1, static_cast<int>(std::floor(y0)) - 1),
                       cv::Point(static_cast<int>(std::ceil(x1)) + 2, static_cast<int>(std::ceil(y1)) + 2)) &
              cv::Rect(0, 0, canvas.cols, canvas.rows);
  if (layer.roi.empty()) return layer;
  const cv::Point origin = layer.roi.tl();
  layer.mask = cv::Mat::zeros(layer.roi.size(), CV_8U);
  cv::fillPoly(layer.mask, std::vector<std::vector<cv::Point>>{fixed_point(polygon, origin)}, cv::Scalar(255),
               cv::LINE_AA, 4);
  cv::Mat seam_mask = cv::Mat::zeros(layer.roi.size(), CV_8U);
  if (!seams.empty()) {
    std::vector<std::vector<cv::Point>> lines;
    for (const auto& s : seams) lines.push_back(fixed_point(s, origin));
    cv::polylines(seam_mask, lines, false, cv::Scalar(255), 1, cv::LINE_AA, 4);
  }
  // Blurred coverage: darker towards the outline, like a rounded surface. Two box filters
  // approximate a Gaussian at a cost independent of its width.
  cv::Mat shade;
  const int k = 2 * std::max(1, static_cast<int>(0.03 * std::max(layer.roi.width, layer.roi.height))) + 1;
  cv::blur(layer.mask, shade, cv::Size(k, k));
  cv::blur(shade, shade, cv::Size(k, k));

  for (int y = 0; y < layer.roi.height; ++y) {
    const auto* m = layer.mask.ptr<std::uint8_t>(y);
    const auto* sm = seam_mask.ptr<std::uint8_t>(y);
    const auto* sh = shade.ptr<std::uint8_t>(y);
    auto* out = canvas.ptr<cv::Vec3f>(y + origin.y) + origin.x;
    for (int x = 0; x < layer.roi.width; ++x) {
      if (m[x] == 0) continue;
      const Pt t = tex.apply(Pt(x + origin.x, y + origin.y));
      const float light =
          static_cast<float>((1 - edge_shade + edge_shade * sh[x] / 255.0) * (1 - 0.45 * sm[x] / 255.0));
      const float a = m[x] / 255.0f;
      out[x] = out[x] * (1 - a) + fabric.at(t.x, t.y, texture_pixel) * (light * a);
    }
  }
  return layer;
}

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
void draw_background(Rng& rng, int width, int height, Scratch& scratch) {
  cv::Mat field(3, 3, CV_8UC3);
  const cv::Vec3f tone = random_colour(rng, 0.0, 0.6, 0.2, 0.95);
  for (int i = 0; i < 9; ++i) {
    const cv::Vec3f c = tone + random_colour(rng) * 0.35f - cv::Vec3f(45, 45, 45);
    field.at<cv::Vec3b>(i / 3, i % 3) =
        cv::Vec3b(cv::saturate_cast<std::uint8_t>(c[0]), cv::saturate_cast<std::uint8_t>(c[1]),
                  cv::saturate_cast<std::uint8_t>(c[2]));
  }
  cv::Mat& bg = scratch.background;
  cv::resize(field, bg, cv::Size(width, height), 0, 0, cv::INTER_CUBIC);
  const double size = std::min(width, height);
  if (rng.chance(0.4)) {  // floor or table plane
    const double y0 = rng.uniform(0.5, 0.9) * height, y1 = rng.uniform(0.5, 0.9) * height;
    const cv::Vec3f c = random_colour(rng, 0.0, 0.5);
    std::vector<cv::Point> floor = {
        {0, static_cast<int>(y0)}, {width, static_cast<int>(y1)}, {width, height}, {0, height}};
    cv::fillConvexPoly(bg, floor, cv::Scalar(c[0], c[1], c[2]), cv::LINE_AA);
  }
  const int shapes = rng.integer(3, 14);
  for (int i = 0; i < shapes; ++i) {
    const cv::Vec3f c = random_colour(rng);
    const cv::Scalar colour(c[0], c[1], c[2]);
    const cv::Point centre(rng.integer(0, width - 1), rng.integer(0, height - 1));
    const int r = std::max(2, static_cast<int>(rng.uniform(0.03, 0.3) * size));
    const int thickness = rng.chance(0.3) ? rng.integer(1, 4) : cv::FILLED;
    switch (rng.integer(0, 3)) {
      case 0:
        cv::circle(bg, centre, r, colour, thickness, cv::LINE_AA);
        break;
      case 1:
        cv::ellipse(bg, centre, cv::Size(r, std::max(1, static_cast<int>(r * rng.uniform(0.2, 1.0)))),
                    rng.uniform(0, 180), 0, 360, colour, thickness, cv::LINE_AA);
        break;
      case 2:
        cv::rectangle(bg, centre, centre + cv::Point(r, static_cast<int>(r * rng.uniform(0.2, 1.5))), colour, thickness,
                      cv::LINE_AA);
        break;
      default:
        cv::line(bg, centre, cv::Point(rng.integer(0, width - 1), rng.integer(0, height - 1)), colour,
                 rng.integer(1, 6), cv::LINE_AA);
    }
  }
  if (rng.chance(0.6)) cv::GaussianBlur(bg, bg, cv::Size(0, 0), rng.uniform(0.5, 2.0));
  bg.convertTo(scratch.canvas, CV_32FC3);
}

// Scales by `scale` and rotates by `angle` about `from`, which lands on `to`.
Homography similarity(double scale, double angle, Pt from, Pt to) {
  const double c = std::cos(angle) * scale, s = std::sin(angle) * scale;
  return {cv::Matx33d(c, -s, to.x - c * from.x + s * from.y, s, c, to.y - s * from.x - c * from.y, 0, 0, 1)};
}

struct Placed {
  Kind kind;
  Outline outline;      // garment frame
  Homography to_image;  // garment frame -> image pixels
  double scale = 1;     // image pixels per garment unit (before perspective)
  double angle = 0;
  Garment garment;    // image labels
  int variation = 1;  // FLD variation_type
};

Kind random_kind(Rng& rng) {
  const double r = rng.uniform();
  return r < 0.4 ? Kind::Top : r < 0.6 ? Kind::Trousers : r < 0.75 ? Kind::Skirt : Kind::Dress;
}

const char* category_name(Kind k) { return k == Kind::Top ? "upper" : k == Kind::Dress ? "full" : "lower"; }

// Samples a garment and a placement whose landmarks are at least half inside the image.
Placed place_garment(Rng& rng, int width, int height, bool scene) {
  const LandmarkSchema& schema = LandmarkSchema::deepfashion();
  Placed pl;
  pl.kind = random_kind(rng);
  switch (pl.kind) {
    case Kind::Top:
      pl.outline = build_top(rng);
      break;
    case Kind::Trousers:
      pl.outline = build_trousers(rng);
      break;
    case Kind::Skirt:
      pl.outline = build_skirt(rng);
      break;
    case Kind::Dress:
      pl.outline = build_dress(rng);
      break;
  }
  const Outline& o = pl.outline;
  double gx0 = 1e9, gy0 = 1e9, gx1 = -1e9, gy1 = -1e9;
  for (Pt p : o.polygon)
    gx0 = std::min(gx0, p.x), gy0 = std::min(gy0, p.y), gx1 = std::max(gx1, p.x), gy1 = std::max(gy1, p.y);
  const Pt centre((gx0 + gx1) / 2, (gy0 + gy1) / 2);
  const double extent = std::max(gx1 - gx0, gy1 - gy0), size = std::min(width, height);

  const int category = schema.category_index(category_name(pl.kind));
  const auto& slots = schema.categories[category].landmarks;
  for (int attempt = 0;; ++attempt) {
    const bool zoom = attempt < 10 && rng.chance(scene ? 0.1 : 0.2);
    pl.scale = (scene ? rng.uniform(0.3, 0.7) : rng.uniform(0.55, 0.92)) * size / extent;
    if (zoom) pl.scale *= rng.uniform(1.15, 1.6);
    pl.angle = std::clamp(rng.normal() * 12.0, -40.0, 40.0) * kPi / 180.0;
    const double spread = scene ? 0.35 : zoom ? 0.25 : 0.08;
    const Pt at(width * (0.5 + rng.uniform(-spread, spread)), height * (0.5 + rng.uniform(-spread, spread)));
    const Homography a = similarity(pl.scale, pl.angle, centre, at);
    // Perspective: the image corners move by up to 7% (a camera not quite facing the garment).
    const double j = rng.chance(0.7) ? rng.uniform(0.0, 0.07) : 0.0;
    std::vector<cv::Point2f> src = {{0, 0}, {float(width), 0}, {float(width), float(height)}, {0, float(height)}}, dst;
    for (auto c : src)
      dst.emplace_back(c.x + float(rng.uniform(-j, j) * width), c.y + float(rng.uniform(-j, j) * height));
    pl.to_image = a.then({cv::Matx33d(cv::getPerspectiveTransform(src, dst))});

    Garment& g = pl.garment;
    g.category = category;
    g.keypoints.assign(schema.num_landmarks(), Keypoint{});
    int inside = 0, truncated = 0;
    for (int k : slots) {
      const Pt p = pl.to_image.apply(o.landmarks[k]);
      Keypoint& kp = g.keypoints[k];
      kp.x = static_cast<float>(std::round(p.x * 100) / 100);  // as written to the annotation files
      kp.y = static_cast<float>(std::round(p.y * 100) / 100);
      const bool in = kp.x >= 0 && kp.y >= 0 && kp.x < width && kp.y < height;
      kp.v = in ? Visibility::Visible : Visibility::Absent;
      inside += in;
      truncated += !in;
    }
    double x0 = 1e18, y0 = 1e18, x1 = -1e18, y1 = -1e18;
    for (Pt q : o.polygon) {
      const Pt p = pl.to_image.apply(q);
      x0 = std::min(x0, p.x), y0 = std::min(y0, p.y), x1 = std::max(x1, p.x), y1 = std::max(y1, p.y);
    }
    g.box = {static_cast<float>(std::clamp(std::floor(x0), 0.0, double(width))),
             static_cast<float>(std::clamp(std::floor(y0), 0.0, double(height))),
             static_cast<float>(std::clamp(std::ceil(x1), 0.0, double(width))),
             static_cast<float>(std::clamp(std::ceil(y1), 0.0, double(height)))};
    const bool enough = 2 * inside >= static_cast<int>(slots.size()) && g.box.width() >= 8 && g.box.height() >= 8;
    if (!enough && attempt < 50) continue;
    const double deg = std::abs(pl.angle) * 180 / kPi;
    pl.variation = truncated > 0 ? (truncated >= 2 ? 5 : 4) : deg < 12 ? 1 : deg < 25 ? 2 : 3;
    return pl;
  }
}

constexpr float kMaxCover = 0.4f;

bool covers_too_much(const Box& top, const std::vector<Placed>& below) {
  for (const Placed& p : below) {
    const Box& b = p.garment.box;
    const float iw = std::max(0.0f, std::min(top.x2, b.x2) - std::max(top.x1, b.x1));
    const float ih = std::max(0.0f, std::min(top.y2, b.y2) - std::max(top.y1, b.y1));
    if (iw * ih > kMaxCover * b.width() * b.height()) return true;
  }
  return false;
}

struct Rendered {
  std::vector<Garment> garments;
  std::vector<int> variations;
};

// Draws image `index` and writes it as JPEG to `path`.
Rendered render(std::uint64_t seed, int index, const SynthOptions& opt, const std::string& path) {
  Rng rng(splitmix64(splitmix64(seed) ^ (static_cast<std::uint64_t>(index) * 0xD1B54A32D192ED03ull + 1)));
  const int W = opt.width, H = opt.height;
  cv::Mat grain(64, 64, CV_32F);
  cv::RNG cv_rng(rng.next());
  cv_rng.fill(grain, cv::RNG::UNIFORM, 0.0, 1.0);
  cv::GaussianBlur(grain, grain, cv::Size(0, 0), 0.8);
  cv::normalize(grain, grain, 0, 1, cv::NORM_MINMAX);

  thread_local Scratch scratch;
  draw_background(rng, W, H, scratch);
  cv::Mat& canvas = scratch.canvas;
  const int n = opt.scenes ? rng.integer(1, opt.max_garments) : 1;
  std::vector<Placed> placed;
  // Marks landmarks of every garment drawn so far that `layer` hides.
  const auto occlude = [&](const Layer& layer) {
    for (Placed& p : placed)
      for (Keypoint& kp : p.garment.keypoints)
        if (kp.v == Visibility::Visible && layer.covers(Pt(kp.x, kp.y))) kp.v = Visibility::Occluded;
  };
  for (int i = 0; i < n; ++i) {
    Placed pl = place_garment(rng, W, H, opt.scenes);
    // A garment may overlap the ones below it but not bury one: it covers at most kMaxCover of
    // any earlier garment's box (placement retried, else the garment is left out).
    int tries = 1;
    while (covers_too_much(pl.garment.box, placed) && tries++ < 20) pl = place_garment(rng, W, H, opt.scenes);
    if (covers_too_much(pl.garment.box, placed)) continue;
    const Homography from_image = pl.to_image.inverse();
    const double pixel = 1.0 / pl.scale;
    const Fabric skin = Fabric::plain(skin_colour(rng), &grain);
    for (const auto& part : body_parts(rng, pl.kind, pl.outline)) {
      std::vector<Pt> poly;
      for (Pt p : part) poly.push_back(pl.to_image.apply(p));
      occlude(draw_layer(canvas, poly, {}, skin, from_image, pixel, 0.35));
    }
    std::vector<Pt> poly;
    for (Pt p : pl.outline.polygon) poly.push_back(pl.to_image.apply(p));
    std::vector<std::vector<Pt>> seams;
    for (const auto& s : pl.outline.seams) {
      seams.emplace_back();
      for (Pt p : s) seams.back().push_back(pl.to_image.apply(p));
    }
    occlude(draw_layer(canvas, poly, seams, Fabric::random(rng, &grain), from_image, pixel, rng.uniform(0.25, 0.5)));
    placed.push_back(std::move(pl));
  }

  // Occluders (bags, hands, props) dropped near random landmarks.
  const int occluders = rng.chance(opt.scenes ? 0.5 : 0.45) ? rng.integer(1, 2) : 0;
  const double size = std::min(W, H);
  for (int i = 0; i < occluders; ++i) {
    const Placed& target = placed[rng.integer(0, static_cast<int>(placed.size()) - 1)];
    std::vector<Pt> visible;
    for (const Keypoint& kp : target.garment.keypoints)
      if (kp.v == Visibility::Visible) visible.emplace_back(kp.x, kp.y);
    if (visible.empty()) continue;
    const Pt at = visible[rng.integer(0, static_cast<int>(visible.size()) - 1)];
    const double r = rng.uniform(0.04, 0.13) * size;
    const Pt centre = at + Pt(rng.uniform(-0.6, 0.6) * r, rng.uniform(-0.6, 0.6) * r);
    const auto blob = make_blob(rng, centre, r, r * rng.uniform(0.4, 1.0));
    const Homography tex = similarity(1.0 / size, 0.0, Pt(0, 0), Pt(0, 0));
    occlude(draw_layer(canvas, blob, {}, Fabric::random(rng, &grain), tex, 1.0 / size, 0.3));
  }

  // Camera: slight defocus, uneven exposure with a colour cast (gain bilinear between the four
  // corners), sensor noise; one pass applies gain and noise and converts to 8 bit.
  if (rng.chance(0.3)) cv::GaussianBlur(canvas, canvas, cv::Size(0, 0), rng.uniform(0.4, 0.9));
  const cv::Vec3f cast(float(rng.uniform(0.9, 1.1)), float(rng.uniform(0.95, 1.05)), float(rng.uniform(0.9, 1.1)));
  cv::Vec3f corner[4];
  for (auto& c : corner) c = cast * static_cast<float>(rng.uniform(0.75, 1.15));
  scratch.noise.create(canvas.size(), CV_32FC3);
  cv_rng.fill(scratch.noise, cv::RNG::NORMAL, 0.0, rng.uniform(1.0, 6.0));
  cv::Mat& image = scratch.image;
  image.create(canvas.size(), CV_8UC3);
  for (int y = 0; y < H; ++y) {
    const float fy = static_cast<float>(y) / static_cast<float>(H - 1);
    const cv::Vec3f left = corner[0] * (1 - fy) + corner[2] * fy, right = corner[1] * (1 - fy) + corner[3] * fy;
    const auto* in = canvas.ptr<cv::Vec3f>(y);
    const auto* nz = scratch.noise.ptr<cv::Vec3f>(y);
    auto* out = image.ptr<cv::Vec3b>(y);
    for (int x = 0; x < W; ++x) {
      const float fx = static_cast<float>(x) / static_cast<float>(W - 1);
      const cv::Vec3f v = in[x].mul(left * (1 - fx) + right * fx) + nz[x];
      out[x] = cv::Vec3b(cv::saturate_cast<std::uint8_t>(v[0]), cv::saturate_cast<std::uint8_t>(v[1]),
                         cv::saturate_cast<std::uint8_t>(v[2]));
    }
  }
  write_image(path, image, {cv::IMWRITE_JPEG_QUALITY, 90});

  Rendered out;
  for (Placed& p : placed) {
    out.garments.push_back(std::move(p.garment));
    out.variations.push_back(p.variation);
  }
  return out;
}

std::string two_decimals(float v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

std::string image_name(int index) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "img/%06d.jpg", index);
  return buf;
}

void write_fld(const fs::path& dir, const std::vector<Rendered>& items, const std::vector<std::string>& splits) {
  const LandmarkSchema& schema = LandmarkSchema::deepfashion();
  const std::string count = std::to_string(items.size()) + "\n";
  std::string landmarks = count + "image_name clothes_type variation_type";
  for (int k = 1; k <= schema.num_landmarks(); ++k) {
    const std::string n = std::to_string(k);
    landmarks += " landmark_visibility_" + n + " landmark_location_x_" + n + " landmark_location_y_" + n;
  }
  landmarks += "\n";
  std::string boxes = count + "image_name x_1 y_1 x_2 y_2\n";
  std::string partition = count + "image_name evaluation_status\n";
  for (std::size_t i = 0; i < items.size(); ++i) {
    const Garment& g = items[i].garments.front();
    const std::string name = image_name(static_cast<int>(i));
    landmarks += name + " " + std::to_string(g.category + 1) + " " + std::to_string(items[i].variations.front());
    for (int k : schema.categories[g.category].landmarks) {
      const Keypoint& p = g.keypoints[k];
      const bool absent = p.v == Visibility::Absent;
      landmarks += " " + std::to_string(static_cast<int>(p.v)) + " " + two_decimals(absent ? 0.f : p.x) + " " +
                   two_decimals(absent ? 0.f : p.y);
    }
    landmarks += "\n";
    boxes += name + " " + std::to_string(int(g.box.x1)) + " " + std::to_string(int(g.box.y1)) + " " +
             std::to_string(int(g.box.x2)) + " " + std::to_string(int(g.box.y2)) + "\n";
    partition += name + " " + splits[i] + "\n";
  }
  fs::create_directories(dir / "Anno");
  fs::create_directories(dir / "Eval");
  write_file_atomically(dir / "Anno" / "list_landmarks.txt", landmarks);
  write_file_atomically(dir / "Anno" / "list_bbox.txt", boxes);
  write_file_atomically(dir / "Eval" / "list_eval_partition.txt", partition);
}

void write_coco(const fs::path& dir, const std::vector<Rendered>& items, const std::vector<std::string>& splits,
                const SynthOptions& opt) {
  using json = nlohmann::json;
  const LandmarkSchema& schema = LandmarkSchema::deepfashion();
  json cats = json::array();
  std::vector<std::string> names;
  for (const auto& n : schema.landmarks) names.push_back(n);
  for (int c = 0; c < schema.num_categories(); ++c)
    cats.push_back({{"id", c + 1},
                    {"name", schema.categories[c].name},
                    {"supercategory", "garment"},
                    {"keypoints", names},
                    {"skeleton", json::array()}});
  json images = json::array(), annotations = json::array();
  const auto round2 = [](float v) { return std::round(static_cast<double>(v) * 100) / 100; };
  int ann_id = 1;
  for (std::size_t i = 0; i < items.size(); ++i) {
    images.push_back({{"id", i + 1},
                      {"file_name", image_name(static_cast<int>(i))},
                      {"width", opt.width},
                      {"height", opt.height},
                      {"split", splits[i]}});
    for (const Garment& g : items[i].garments) {
      json kps = json::array();
      int labelled = 0;
      for (const Keypoint& p : g.keypoints) {
        const int v = p.v == Visibility::Visible ? 2 : p.v == Visibility::Occluded ? 1 : 0;
        kps.insert(kps.end(), {v ? round2(p.x) : 0.0, v ? round2(p.y) : 0.0, v});
        labelled += v > 0;
      }
      annotations.push_back({{"id", ann_id++},
                             {"image_id", i + 1},
                             {"category_id", g.category + 1},
                             {"bbox", {g.box.x1, g.box.y1, g.box.width(), g.box.height()}},
                             {"area", g.box.width() * g.box.height()},
                             {"iscrowd", 0},
                             {"num_keypoints", labelled},
                             {"keypoints", kps}});
    }
  }
  const json doc = {{"info", {{"description", "CSPN synthetic garment scenes"}, {"seed", opt.seed}}},
                    {"categories", cats},
                    {"images", images},
                    {"annotations", annotations}};
  write_file_atomically(dir / "annotations.json", doc.dump(1) + "\n");
}

void check_options(const SynthOptions& opt) {
  const auto bad = [](const std::string& what) { throw std::invalid_argument("synthesize: " + what); };
  if (opt.count < 1) bad("count should be >= 1, got " + std::to_string(opt.count));
  if (opt.width < 32 || opt.height < 32)
    bad("image size should be at least 32x32, got " + std::to_string(opt.width) + "x" + std::to_string(opt.height));
  if (!(opt.val_fraction >= 0 && opt.test_fraction >= 0 && opt.val_fraction + opt.test_fraction <= 1))
    bad("val_fraction and test_fraction should be >= 0 with sum <= 1, got " + std::to_string(opt.val_fraction) +
        " and " + std::to_string(opt.test_fraction));
  if (opt.max_garments < 1) bad("max_garments should be >= 1, got " + std::to_string(opt.max_garments));
  if (opt.threads < 0) bad("threads should be >= 0, got " + std::to_string(opt.threads));
}

}  // namespace

void synthesize(const std::string& out_dir, const SynthOptions& opt, const std::function<void(int, int)>& progress) {
  check_options(opt);
  const fs::path dir(out_dir);
  fs::create_directories(dir / "img");

  // Exact split sizes from a seeded permutation.
  std::vector<std::string> splits(opt.count, "train");
  {
    std::vector<int> order(opt.count);
    for (int i = 0; i < opt.count; ++i) order[i] = i;
    Rng rng(splitmix64(opt.seed ^ 0x5EEDu));
    for (int i = opt.count - 1; i > 0; --i) std::swap(order[i], order[rng.integer(0, i)]);
    const int n_test = static_cast<int>(std::lround(opt.count * opt.test_fraction));
    const int n_val = std::min(opt.count - n_test, static_cast<int>(std::lround(opt.count * opt.val_fraction)));
    for (int i = 0; i < n_test + n_val; ++i) splits[order[i]] = i < n_test ? "test" : "val";
  }

  std::vector<Rendered> items(opt.count);
  const int threads = std::max(
      1, std::min(opt.count, opt.threads > 0 ? opt.threads : static_cast<int>(std::thread::hardware_concurrency())));
  std::atomic<int> next{0};
  std::atomic<bool> stop{false};
  std::mutex mutex;
  std::condition_variable changed;
  int done = 0;
  std::exception_ptr error;
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      for (int i = next++; i < opt.count && !stop; i = next++) {
        try {
          items[i] = render(opt.seed, i, opt, (dir / image_name(i)).string());
        } catch (...) {
          std::lock_guard<std::mutex> lock(mutex);
          if (!error) error = std::current_exception();
          stop = true;
          changed.notify_all();
          return;
        }
        std::lock_guard<std::mutex> lock(mutex);
        ++done;
        changed.notify_all();
      }
    });
  }
  {
    std::unique_lock<std::mutex> lock(mutex);
    int reported = 0;
    while (!error && reported < opt.count) {
      changed.wait(lock, [&] { return error || done > reported; });
      if (error) break;
      reported = done;
      if (progress) {
        lock.unlock();
        progress(reported, opt.count);
        lock.lock();
      }
    }
  }
  for (auto& w : workers) w.join();
  if (error) std::rethrow_exception(error);

  if (opt.scenes)
    write_coco(dir, items, splits, opt);
  else
    write_fld(dir, items, splits);
}

}  // namespace cspn
