#pragma once
// Garment geometry of the synthetic data set (synth.cpp): a portable random generator, garment and
// wearer outlines in the garment frame (x right = image left-to-right for a front view, y down,
// shoulder/waist at y ~ 0, units of roughly the garment's length) with their DeepFashion landmarks,
// and the projective maps that place them in the image.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

#include <opencv2/core.hpp>

#include "cspn/core/util.hpp"

namespace cspn::synth {

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

enum class Kind { Top, Trousers, Skirt, Dress };

// A part of a garment drawn over its own body, in its fabric: a sleeve hanging down its side.
struct Piece {
  std::vector<Pt> polygon;
  std::vector<std::vector<Pt>> seams;
  int slot = -1;  // the landmark on it; the garment's others that it covers are occluded
};

// A garment (or body part) in the garment frame.
struct Outline {
  std::vector<Pt> polygon;
  std::vector<std::vector<Pt>> seams;  // open polylines drawn as darker stitching / bands
  std::vector<Piece> pieces;           // drawn over the polygon
  std::vector<Pt> holds;               // where a hanging garment is held (grippers, clips)
  std::array<Pt, 8> landmarks{};       // by DeepFashion slot
  std::array<bool, 8> has{};
};

// A random garment of `kind`: its outline, seams and landmarks. With probability `hanging` it hangs
// as from a robot's grippers or a hanger: held at its shoulders (or waist), and a top's or dress's
// sleeves mostly hang down its sides. `hanging` 0 draws no random number for it, so that data sets
// of earlier versions come out the same.
Outline build_garment(Rng& rng, Kind kind, double hanging);

// Closed star-shaped blob (ellipse with wobble, or a rectangle) around `c`, radius ~r.
std::vector<Pt> make_blob(Rng& rng, Pt c, double rx, double ry);

// Wearer parts drawn behind a garment (head/neck, hands, legs), in the garment frame.
std::vector<std::vector<Pt>> body_parts(Rng& rng, Kind kind, const Outline& o);

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

// Scales by `scale` and rotates by `angle` about `from`, which lands on `to`.
Homography similarity(double scale, double angle, Pt from, Pt to);

}  // namespace cspn::synth
