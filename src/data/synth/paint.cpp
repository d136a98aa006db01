#include "paint.hpp"

#include <algorithm>

#include <opencv2/imgproc.hpp>

namespace cspn::synth {
namespace {

std::vector<cv::Point> fixed_point(const std::vector<Pt>& pts, cv::Point origin) {
  constexpr int kShift = 4;  // OpenCV sub-pixel drawing: coordinates in 1/16 pixel
  std::vector<cv::Point> out;
  out.reserve(pts.size());
  for (Pt p : pts)
    out.emplace_back(static_cast<int>(std::lround((p.x - origin.x) * (1 << kShift))),
                     static_cast<int>(std::lround((p.y - origin.y) * (1 << kShift))));
  return out;
}

}  // namespace

cv::Vec3f random_colour(Rng& rng, double s_lo, double s_hi, double v_lo, double v_hi) {
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

}  // namespace cspn::synth
