#include "geometry.hpp"

namespace cspn::synth {
namespace {

Pt lerp(Pt a, Pt b, double t) { return a + (b - a) * t; }

// Points after `a` up to and including `b` on a curve sagging `sag` downwards (+y) in the middle.
void append_curve(std::vector<Pt>& out, Pt a, Pt b, double sag, int n) {
  for (int i = 1; i <= n; ++i) {
    const double t = static_cast<double>(i) / n;
    out.push_back(lerp(a, b, t) + Pt(0, 4.0 * sag * t * (1 - t)));
  }
}

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
  bool hangs[2] = {false, false};         // the sleeve hangs down the body's side, drawn over it
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

UpperBody sample_upper_body(Rng& rng, double min_sleeve, double max_sleeve, bool hanging) {
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
      // Held at the shoulders, a sleeve falls: from slanting out to swinging in under its shoulder.
      if (hanging && rng.chance(0.85)) {
        u.hangs[side] = true;
        u.sleeve_angle[side] = rng.uniform(76.0, 100.0) * kPi / 180.0;
      }
    }
    if ((u.hangs[0] || sleeve_ok(make_sleeve(u, 0))) && (u.hangs[1] || sleeve_ok(make_sleeve(u, 1)))) return u;
  }
}

// Upper body of a top or dress: `sides` continues each side from the armpit down (image-left side
// top to bottom), the hem joins the two sides.
Outline build_upper(const UpperBody& u, const std::vector<Pt>& left_side, double hem_sag) {
  Outline o;
  const Sleeve l = make_sleeve(u, 0), r = make_sleeve(u, 1);
  const Pt lc(-u.neck, 0), rc(u.neck, 0);
  auto& p = o.polygon;
  // A sleeve out to the side is part of the outline; a hanging one a piece of its own over the body.
  p = {lc, l.shoulder};
  if (!u.hangs[0]) p.insert(p.end(), {l.outer, l.inner});
  p.push_back(l.armpit);
  p.insert(p.end(), left_side.begin(), left_side.end());
  const Pt lh = left_side.back(), rh(-lh.x, lh.y);
  append_curve(p, lh, rh, hem_sag, 8);
  for (auto it = left_side.rbegin() + 1; it != left_side.rend(); ++it) p.push_back({-it->x, it->y});
  p.push_back(r.armpit);
  if (!u.hangs[1]) p.insert(p.end(), {r.inner, r.outer});
  p.insert(p.end(), {r.shoulder, rc});
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
  for (int side = 0; side < 2; ++side) {
    const Sleeve& s = side == 0 ? l : r;
    const std::vector<Pt> cuff_band = {lerp(s.outer, s.shoulder, 0.1), lerp(s.inner, s.armpit, 0.1)};
    if (!u.hangs[side]) {
      o.seams.push_back(cuff_band);
      continue;
    }
    const std::vector<Pt> sleeve = {s.shoulder, s.outer, s.inner, s.armpit};
    o.pieces.push_back({sleeve, {cuff_band, {s.outer, s.inner, s.armpit}}, side == 0 ? kLeftSleeve : kRightSleeve});
  }
  if (u.hangs[0] || u.hangs[1]) o.holds = {l.shoulder, r.shoulder};
  o.seams.push_back({lh + Pt(0.01, -0.035), rh + Pt(-0.01, -0.035)});  // hem stitching
  return o;
}

Outline build_top(Rng& rng, bool hanging) {
  const UpperBody u = sample_upper_body(rng, 0.12, 0.62, hanging);
  const double length = rng.uniform(0.70, 1.0);
  const double hem = u.body * rng.uniform(0.9, 1.15);
  Outline o = build_upper(u, {{-hem, length}}, rng.uniform(-0.02, 0.04));
  if (rng.chance(0.35)) o.seams.push_back({{0, u.neck_dip}, {0, length}});  // button placket
  return o;
}

Outline build_dress(Rng& rng, bool hanging) {
  const UpperBody u = sample_upper_body(rng, 0.08, 0.5, hanging);
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

}  // namespace

Outline build_garment(Rng& rng, Kind kind, double hanging) {
  const bool hangs = hanging > 0 && rng.chance(hanging);
  if (kind == Kind::Top) return build_top(rng, hangs);
  if (kind == Kind::Dress) return build_dress(rng, hangs);
  Outline o = kind == Kind::Trousers ? build_trousers(rng) : build_skirt(rng);
  if (hangs) o.holds = {o.landmarks[kLeftWaist], o.landmarks[kRightWaist]};  // held by the waistband
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

// Scales by `scale` and rotates by `angle` about `from`, which lands on `to`.
Homography similarity(double scale, double angle, Pt from, Pt to) {
  const double c = std::cos(angle) * scale, s = std::sin(angle) * scale;
  return {cv::Matx33d(c, -s, to.x - c * from.x + s * from.y, s, c, to.y - s * from.x - c * from.y, 0, 0, 1)};
}

}  // namespace cspn::synth
