// Synthetic garments with exactly known landmarks: placement, rendering and the thread pool here,
// outlines in synth/geometry, drawing in synth/paint, the annotation files by write_fld and
// write_coco. Each garment is a polygon built in a garment frame from random proportions; its
// landmarks are vertices of, or points on, that outline. One homography (scale, rotation,
// placement, perspective) maps the outline, the landmarks and the fabric texture coordinates into
// the image, so labels and pixels agree. Visibility follows the drawing: landmarks under a later
// layer (another garment, an occluder) are Occluded, landmarks outside the image Absent, the box is
// clipped to the image.
#include "cspn/core/util.hpp"
#include "cspn/data/synth.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <mutex>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "cspn/core/sample.hpp"
#include "cspn/core/schema.hpp"
#include "cspn/data/image.hpp"
#include "cspn/data/readers.hpp"
#include "synth/geometry.hpp"
#include "synth/paint.hpp"

namespace cspn {
namespace fs = std::filesystem;
using namespace synth;

namespace {

struct Placed {
  Kind kind;
  Outline outline;      // garment frame
  Homography to_image;  // garment frame -> image pixels
  double scale = 1;     // image pixels per garment unit (before perspective)
  double angle = 0;
  Garment garment;      // image labels, variation_type included
};

Kind random_kind(Rng& rng) {
  const double r = rng.uniform();
  return r < 0.4 ? Kind::Top : r < 0.6 ? Kind::Trousers : r < 0.75 ? Kind::Skirt : Kind::Dress;
}

const char* category_name(Kind k) { return k == Kind::Top ? "upper" : k == Kind::Dress ? "full" : "lower"; }

// Samples a garment and a placement whose landmarks are at least half inside the image.
Placed place_garment(Rng& rng, int width, int height, bool scene, double hanging) {
  const LandmarkSchema& schema = LandmarkSchema::deepfashion();
  Placed pl;
  pl.kind = random_kind(rng);
  pl.outline = build_garment(rng, pl.kind, hanging);
  const Outline& o = pl.outline;
  std::vector<Pt> drawn = o.polygon;  // the outline and the pieces over it
  for (const Piece& piece : o.pieces) drawn.insert(drawn.end(), piece.polygon.begin(), piece.polygon.end());
  double gx0 = 1e9, gy0 = 1e9, gx1 = -1e9, gy1 = -1e9;
  for (Pt p : drawn)
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
    for (Pt q : drawn) {
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
    g.variation = truncated > 0 ? (truncated >= 2 ? 5 : 4) : deg < 12 ? 1 : deg < 25 ? 2 : 3;
    return pl;
  }
}

constexpr float kMaxCover = 0.4f;

bool covers_too_much(const Box& top, const std::vector<Placed>& below) {
  for (const Placed& p : below) {
    const Box& b = p.garment.box;
    if (overlap_area(top, b) > kMaxCover * b.width() * b.height()) return true;
  }
  return false;
}

// Draws image `index`, writes it as JPEG to `path` and returns its garments.
std::vector<Garment> render(std::uint64_t seed, int index, const SynthOptions& opt, const std::string& path) {
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
    Placed pl = place_garment(rng, W, H, opt.scenes, opt.hanging);
    // A garment may overlap the ones below it but not bury one: it covers at most kMaxCover of
    // any earlier garment's box (placement retried, else the garment is left out).
    int tries = 1;
    while (covers_too_much(pl.garment.box, placed) && tries++ < 20) pl = place_garment(rng, W, H, opt.scenes, opt.hanging);
    if (covers_too_much(pl.garment.box, placed)) continue;
    const Homography from_image = pl.to_image.inverse();
    const double pixel = 1.0 / pl.scale;
    const Fabric skin = Fabric::plain(skin_colour(rng), &grain);
    const auto parts = pl.outline.holds.empty() ? body_parts(rng, pl.kind, pl.outline) : std::vector<std::vector<Pt>>{};
    for (const auto& part : parts) {  // a hanging garment has no wearer
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
    const double shade = rng.uniform(0.25, 0.5);  // drawn before the fabric, as in earlier versions
    const Fabric fabric = Fabric::random(rng, &grain);
    occlude(draw_layer(canvas, poly, seams, fabric, from_image, pixel, shade));
    // Hanging sleeves over the body, in its fabric: they hide the garment's own landmarks they cover.
    for (const Piece& piece : pl.outline.pieces) {
      std::vector<Pt> ppoly;
      for (Pt p : piece.polygon) ppoly.push_back(pl.to_image.apply(p));
      std::vector<std::vector<Pt>> pseams;
      for (const auto& seam : piece.seams) {
        pseams.emplace_back();
        for (Pt p : seam) pseams.back().push_back(pl.to_image.apply(p));
      }
      const Layer layer = draw_layer(canvas, ppoly, pseams, fabric, from_image, pixel, shade);
      occlude(layer);
      for (int k = 0; k < static_cast<int>(pl.garment.keypoints.size()); ++k) {
        Keypoint& kp = pl.garment.keypoints[k];
        if (k != piece.slot && kp.v == Visibility::Visible && layer.covers(Pt(kp.x, kp.y))) kp.v = Visibility::Occluded;
      }
    }
    placed.push_back(std::move(pl));
  }

  // What holds a hanging garment (gripper fingers, hanger clips): plain grey or white blocks.
  for (const Placed& pl : placed)
    for (Pt hold : pl.outline.holds) {
      const double r = pl.scale * rng.uniform(0.05, 0.09);
      const auto block = make_blob(rng, pl.to_image.apply(hold + Pt(0, -0.02)), r, r * rng.uniform(0.5, 1.0));
      const float grey = static_cast<float>(rng.uniform(90, 235));
      const Fabric metal = Fabric::plain({grey, grey, grey}, &grain);
      occlude(draw_layer(canvas, block, {}, metal, similarity(1.0 / pl.scale, 0.0, Pt(0, 0), Pt(0, 0)), 1.0 / pl.scale, 0.3));
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

  std::vector<Garment> out;
  for (Placed& p : placed) out.push_back(std::move(p.garment));
  return out;
}

std::string image_name(int index) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "img/%06d.jpg", index);
  return buf;
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
  if (!(opt.hanging >= 0 && opt.hanging <= 1)) bad("hanging should be a share from 0 to 1, got " + std::to_string(opt.hanging));
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

  Dataset data;
  data.schema = LandmarkSchema::deepfashion();
  data.samples.resize(opt.count);
  for (int i = 0; i < opt.count; ++i) {
    Sample& s = data.samples[i];
    s.image = (dir / image_name(i)).string();
    s.width = opt.width;
    s.height = opt.height;
    s.split = splits[i];
  }
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
          data.samples[i].garments = render(opt.seed, i, opt, data.samples[i].image);
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
    write_coco(out_dir, data, "CSPN synthetic garment scenes", opt.seed);
  else
    write_fld(out_dir, data);
}

void require_synthesizable(const LandmarkSchema& schema, const std::string& what, const std::string& remedy) {
  if (schema.name != LandmarkSchema::deepfashion().name)
    throw std::invalid_argument(what + ": synthetic garments carry DeepFashion's 8 landmarks only, not schema " +
                                schema.name + "'s: " + remedy);
}

}  // namespace cspn
