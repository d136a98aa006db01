#include "cspn/engine/pseudo_labels.hpp"

#include <algorithm>
#include <map>

#include "cspn/core/metrics.hpp"
#include "cspn/data/image.hpp"
#include "cspn/engine/garment_detector.hpp"
#include "cspn/engine/landmark_predictor.hpp"
#include "cspn/engine/loader.hpp"

namespace cspn {
namespace {

Box grown(const Box& b, float by) {
  const float cx = 0.5f * (b.x1 + b.x2), cy = 0.5f * (b.y1 + b.y2);
  const float hw = 0.5f * b.width() * (1 + by), hh = 0.5f * b.height() * (1 + by);
  return {cx - hw, cy - hh, cx + hw, cy + hh};
}

// The garments of one chunk's photos (frames, detections) with the landmarks that pass the checks.
void label_chunk(LandmarkPredictor& landmarks, Dataset& frames, std::map<int, cv::Mat> decoded,
                 const std::vector<std::vector<DetectedGarment>>& detections, const Config& cfg,
                 PseudoLabelCounts& counts) {
  const LandmarkSchema& schema = frames.schema;
  const SemiConfig& semi = cfg.semi;
  std::vector<CropJob> jobs;  // per garment: its box, then the grown box
  for (size_t i = 0; i < detections.size(); ++i) {
    int kept = 0;
    for (const auto& d : detections[i]) {  // by decreasing score
      if (d.score < semi.min_score || kept >= cfg.model.detector.detections_per_image) continue;
      Garment g{d.category, d.box, std::vector<Keypoint>(schema.num_landmarks()), 0};
      frames.samples[i].garments.push_back(std::move(g));
      jobs.push_back({static_cast<int>(i), -1, d.category, d.box});
      jobs.push_back({static_cast<int>(i), -1, d.category, grown(d.box, semi.scale_jitter)});
      ++kept;
    }
  }
  if (jobs.empty()) return;
  CropBatcher batcher(frames, jobs, cfg, false, std::move(decoded));
  const LandmarkPredictions p = landmarks.predict_jobs(batcher, {}, false, /*flip=*/true);
  const int64_t n = static_cast<int64_t>(jobs.size());
  std::vector<float> sizes;
  for (const auto& job : jobs) {
    sizes.push_back(static_cast<float>(frames.samples[job.sample].width));
    sizes.push_back(static_cast<float>(frames.samples[job.sample].height));
  }
  const auto image_size = torch::tensor(sizes).view({n, 2});
  const auto flip_gap = ne_image_lengths(p.flip_offsets, image_size);  // [2G,K]
  const auto even = torch::arange(0, n, 2), odd = torch::arange(1, n, 2);
  const auto at_box = p.coords.index_select(0, even), at_grown = p.coords.index_select(0, odd);
  const auto scale_gap = ne_image_lengths(at_box - at_grown, image_size.index_select(0, even));  // [G,K]
  const auto agree = (flip_gap.index_select(0, even) <= semi.max_disagreement) &
                     (flip_gap.index_select(0, odd) <= semi.max_disagreement) & (scale_gap <= semi.max_disagreement) &
                     (torch::minimum(p.scores.index_select(0, even), p.scores.index_select(0, odd)) >=
                      semi.min_landmark_score);
  const auto where = (0.5 * (at_box + at_grown)).contiguous();
  auto a = agree.accessor<bool, 2>();
  auto xy = where.accessor<float, 3>();
  size_t job = 0;
  for (auto& frame : frames.samples)
    for (auto& g : frame.garments) {
      const int64_t row = static_cast<int64_t>(job / 2);
      for (int k : schema.categories[g.category].landmarks) {
        ++counts.candidates;
        if (!a[row][k]) continue;
        g.keypoints[k] = {xy[row][k][0], xy[row][k][1], Visibility::Visible};
        ++counts.landmarks;
      }
      ++counts.garments;
      job += 2;
    }
}

}  // namespace

Dataset pseudo_label(GarmentDetector& detector, LandmarkPredictor& landmarks, const Dataset& unlabelled,
                     const Config& cfg, PseudoLabelCounts* counts, const std::function<void(size_t, size_t)>& progress) {
  PseudoLabelCounts local;
  PseudoLabelCounts& c = counts ? *counts : local;
  c = {};
  Dataset out{unlabelled.schema, {}, unlabelled.skipped};
  const size_t n = unlabelled.samples.size(), chunk = static_cast<size_t>(std::max(1, cfg.test.detector_batch_size));
  for (size_t first = 0; first < n; first += chunk) {
    Dataset frames{unlabelled.schema, {}, {}};
    std::vector<cv::Mat> images;
    std::map<int, cv::Mat> decoded;
    for (size_t i = first; i < std::min(n, first + chunk); ++i) {
      const Sample& s = unlabelled.samples[i];
      try {
        images.push_back(read_image(s.image));
      } catch (const DataError& e) {
        out.skipped.push_back(e.what());
        ++c.unreadable;
        continue;
      }
      Sample frame = s;
      frame.split = "train";
      frame.width = images.back().cols;
      frame.height = images.back().rows;
      frame.garments.clear();
      decoded.emplace(static_cast<int>(frames.samples.size()), images.back());
      frames.samples.push_back(std::move(frame));
    }
    if (!images.empty()) {
      c.images += static_cast<int>(images.size());
      label_chunk(landmarks, frames, std::move(decoded), detector.detect(images), cfg, c);
      for (auto& s : frames.samples) out.samples.push_back(std::move(s));
    }
    if (progress) progress(std::min(n, first + chunk), n);
  }
  return out;
}

}  // namespace cspn
