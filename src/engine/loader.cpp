#include "cspn/engine/loader.hpp"

#include <filesystem>
#include <random>

#include "cspn/data/image.hpp"
#include "cspn/data/readers.hpp"
#include "cspn/engine/crop.hpp"
#include "cspn/engine/garment_detector.hpp"

namespace cspn {

ImageStore::ImageStore(const Dataset& data, bool cache, std::map<int, cv::Mat> decoded)
    : data_(data), cache_enabled_(cache), cache_(std::move(decoded)) {}

cv::Mat ImageStore::get(int sample) const {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = cache_.find(sample);
    if (it != cache_.end()) return it->second;
  }
  cv::Mat decoded = read_image(data_.samples.at(sample).image);
  if (!cache_enabled_) return decoded;
  std::lock_guard<std::mutex> lock(mutex_);
  return cache_.emplace(sample, decoded).first->second;
}

CropBatcher::CropBatcher(const Dataset& data, std::vector<CropJob> jobs, const Config& cfg, bool augment,
                         std::map<int, cv::Mat> decoded)
    : data_(data),
      jobs_(std::move(jobs)),
      cfg_(cfg),
      codecs_(HeatmapCodec::for_network(cfg.model.keypoints)),
      augment_(augment),
      images_(data, cfg.data.cache_images, std::move(decoded)) {}

std::vector<CropJob> CropBatcher::ground_truth_jobs(const Dataset& data) {
  std::vector<CropJob> jobs;
  for (size_t s = 0; s < data.samples.size(); ++s) {
    const auto& garments = data.samples[s].garments;
    for (size_t g = 0; g < garments.size(); ++g) {
      if (has_landmarks(garments[g])) jobs.push_back({static_cast<int>(s), static_cast<int>(g), garments[g].category, garments[g].box});
    }
  }
  return jobs;
}

KeypointBatch CropBatcher::make(const std::vector<size_t>& job_indices, std::uint64_t seed) const {
  const int in_h = codecs_[0].input_h(), in_w = codecs_[0].input_w();
  const int k = data_.schema.num_landmarks();
  const auto n = static_cast<int64_t>(job_indices.size());
  KeypointBatch batch;
  batch.images = torch::empty({n, 3, in_h, in_w});
  for (const auto& codec : codecs_) batch.targets.push_back(torch::zeros({n, k, codec.heatmap_h(), codec.heatmap_w()}));
  batch.weights = torch::zeros({n, k});
  batch.crop_to_image = torch::empty({n, 2, 3});
  batch.jobs = job_indices;
  std::mt19937 rng(static_cast<std::uint32_t>(seed * 0x9E3779B97F4A7C15ULL >> 32));
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  for (int64_t i = 0; i < n; ++i) {
    const CropJob& job = jobs_.at(job_indices[i]);
    CropWindow win = fit_box(job.box, cfg_.data.box_expand, in_w, in_h);
    if (augment_) win = augment_window(win, cfg_.data, rng);
    const cv::Matx23d m = window_to_crop(win, in_w, in_h);
    cv::Mat crop = warp_crop(images_.get(job.sample), m, in_w, in_h);
    if (augment_) {
      jitter_colour(crop, cfg_.data.color_aug, rng);
      if (unit(rng) < cfg_.data.occlusion_aug) paste_occluder(crop, rng);
    }
    batch.images[i] = to_input_tensor(crop);
    batch.crop_to_image[i] = crop_to_image_tensor(m);
    if (job.garment >= 0) {
      const Garment& g = data_.samples[job.sample].garments[job.garment];
      auto kps = crop_keypoints(g, m, win.flip, data_.schema.flip, in_w, in_h);
      auto in_category = data_.schema.category_mask(torch::tensor({static_cast<int64_t>(g.category)}))[0];
      // A landmark is supervised where every map's Gaussian reaches into it.
      auto supervised = in_category;
      for (size_t c = 0; c < codecs_.size(); ++c) {
        auto [target, weight] = codecs_[c].encode(kps);
        batch.targets[c][i] = target;
        supervised = supervised * weight;
      }
      batch.weights[i] = supervised;
    }
  }
  return batch;
}

DetectionBatcher::DetectionBatcher(const Dataset& data, const Config& cfg, bool augment)
    : data_(data), cfg_(cfg), augment_(augment), images_(data, cfg.data.cache_images) {
  for (size_t s = 0; s < data.samples.size(); ++s)
    if (!data.samples[s].garments.empty()) samples_.push_back(static_cast<int>(s));
}

DetectorBatch DetectionBatcher::make(const std::vector<size_t>& indices, std::uint64_t seed) const {
  std::mt19937 rng(static_cast<std::uint32_t>(seed * 0x9E3779B97F4A7C15ULL >> 32));
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  std::vector<cv::Mat> images;
  std::vector<float> scales;
  DetectorBatch batch;
  for (size_t index : indices) {
    const Sample& sample = data_.samples[samples_.at(index)];
    cv::Mat image = images_.get(samples_[index]);
    float scale = detector_scale(image.cols, image.rows, cfg_.model.detector);
    bool flip = false;
    if (augment_) {
      scale *= 1.0f + cfg_.data.scale_aug * (2 * unit(rng) - 1);
      flip = cfg_.data.flip_aug && unit(rng) < 0.5f;
      image = image.clone();
      jitter_colour(image, cfg_.data.color_aug, rng);
      if (flip) cv::flip(image, image, 1);
    }
    const auto n = static_cast<int64_t>(sample.garments.size());
    auto boxes = torch::empty({n, 4});
    auto labels = torch::empty({n}, torch::kLong);
    const float w = static_cast<float>(image.cols);
    for (int64_t g = 0; g < n; ++g) {
      const Box& b = sample.garments[g].box;
      const float x1 = flip ? w - b.x2 : b.x1, x2 = flip ? w - b.x1 : b.x2;
      boxes[g] = torch::tensor({x1 * scale, b.y1 * scale, x2 * scale, b.y2 * scale});
      labels[g] = sample.garments[g].category + 1;
    }
    batch.targets.push_back({boxes, labels});
    images.push_back(image);
    scales.push_back(scale);
  }
  batch.images = detector_input(images, scales);
  return batch;
}

}  // namespace cspn
