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
  check_complete(path);
  cv::Mat image = cv::imread(path, cv::IMREAD_COLOR);
  if (image.empty()) throw DataError(path + ": cannot decode image (corrupt or truncated file?)");
  return image;
}

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
      codec_(cfg.model.keypoints),
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
      auto [target, weight] = codec_.encode(kps);
      auto in_category = data_.schema.category_mask(torch::tensor({static_cast<int64_t>(g.category)}))[0];
      batch.targets[i] = target;
      batch.weights[i] = weight * in_category;
    }
  }
  return batch;
}

}  // namespace cspn
