#include "cspn/engine/loader.hpp"

#include <random>

#include <opencv2/imgcodecs.hpp>

#include "cspn/data/readers.hpp"
#include "cspn/engine/crop.hpp"

namespace cspn {

cv::Mat read_image(const std::string& path, long max_pixels) {
  const auto [w, h] = image_size(path);  // throws DataError on missing or unreadable files
  if (static_cast<long>(w) * h > max_pixels)
    throw DataError(path + ": image is " + std::to_string(w) + "x" + std::to_string(h) +
                    ", more than the " + std::to_string(max_pixels) + " pixels allowed");
  cv::Mat image = cv::imread(path, cv::IMREAD_COLOR);
  if (image.empty()) throw DataError(path + ": cannot decode image (corrupt or truncated file?)");
  return image;
}

CropBatcher::CropBatcher(const Dataset& data, std::vector<CropJob> jobs, const Config& cfg, bool augment)
    : data_(data),
      jobs_(std::move(jobs)),
      cfg_(cfg),
      codec_(cfg.model.keypoints),
      augment_(augment),
      cache_enabled_(cfg.data.cache_images) {}

std::vector<CropJob> CropBatcher::ground_truth_jobs(const Dataset& data) {
  std::vector<CropJob> jobs;
  for (size_t s = 0; s < data.samples.size(); ++s) {
    const auto& garments = data.samples[s].garments;
    for (size_t g = 0; g < garments.size(); ++g) {
      bool any = false;
      for (const auto& p : garments[g].keypoints) any |= p.v != Visibility::Absent;
      if (any) jobs.push_back({static_cast<int>(s), static_cast<int>(g), garments[g].category, garments[g].box});
    }
  }
  return jobs;
}

cv::Mat CropBatcher::image(int sample) const {
  if (!cache_enabled_) return read_image(data_.samples[sample].image);
  {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto it = cache_.find(sample);
    if (it != cache_.end()) return it->second;
  }
  cv::Mat decoded = read_image(data_.samples[sample].image);
  std::lock_guard<std::mutex> lock(cache_mutex_);
  return cache_.emplace(sample, decoded).first->second;
}

KeypointBatch CropBatcher::make(const std::vector<size_t>& job_indices, std::uint64_t seed) const {
  const int in_h = codec_.input_h(), in_w = codec_.input_w();
  const int k = data_.schema.num_landmarks();
  const auto n = static_cast<int64_t>(job_indices.size());
  KeypointBatch batch;
  batch.images = torch::empty({n, 3, in_h, in_w});
  batch.targets = torch::zeros({n, k, codec_.heatmap_h(), codec_.heatmap_w()});
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
    cv::Mat crop = warp_crop(image(job.sample), m, in_w, in_h);
    if (augment_) {
      jitter_colour(crop, cfg_.data.color_aug, rng);
      if (unit(rng) < cfg_.data.occlusion_aug) paste_occluder(crop, rng);
    }
    batch.images[i] = to_input_tensor(crop);
    batch.crop_to_image[i] = crop_to_image_tensor(m);
    if (job.garment >= 0) {
      const Garment& g = data_.samples[job.sample].garments[job.garment];
      auto kps = crop_keypoints(g, m, win.flip, data_.schema.flip, in_w, in_h);
      auto [target, weight] = codec_.encode(kps);
      auto in_category = data_.schema.category_mask(torch::tensor({static_cast<int64_t>(g.category)}))[0];
      batch.targets[i] = target;
      batch.weights[i] = weight * in_category;
    }
  }
  return batch;
}

}  // namespace cspn
