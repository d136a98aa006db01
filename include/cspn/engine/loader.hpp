#pragma once
// Garment crops as training/evaluation batches, built by worker threads ahead of the consumer.
#include <algorithm>
#include <condition_variable>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <opencv2/core.hpp>
#include <torch/torch.h>

#include "cspn/core/codec.hpp"
#include "cspn/core/config.hpp"
#include "cspn/core/detect/faster_rcnn.hpp"
#include "cspn/core/sample.hpp"
#include "cspn/engine/crop.hpp"

namespace cspn {

// Decoded images of a dataset by sample index: those handed in, else read from their files and,
// with `cache`, kept for the next call. Thread-safe.
class ImageStore {
 public:
  ImageStore(const Dataset& data, bool cache, std::map<int, cv::Mat> decoded = {});
  cv::Mat get(int sample) const;

 private:
  const Dataset& data_;
  bool cache_enabled_;
  mutable std::mutex mutex_;
  mutable std::map<int, cv::Mat> cache_;
};

struct KeypointBatch {
  torch::Tensor images;         // [B,3,H,W] ImageNet-normalised RGB crops
  std::vector<torch::Tensor> targets;  // Gaussian heatmaps (zeros without a garment), one per heatmap
                                       // size of the network: [B,K,h,w] at stage 1's stride, then
                                       // [B,K,2h,2w] where the later stages answer at stride 2
  torch::Tensor weights;        // [B,K] 1 where supervised (present, in the crop, in the category)
  torch::Tensor crop_to_image;  // [B,2,3] affine crop pixels -> image pixels
  std::vector<size_t> jobs;     // index of each row's CropJob
};

// Turns crop jobs over a dataset into batches. Training batches are augmented with an RNG seeded
// from (seed, batch index), so a batch is the same whichever thread makes it. Images come from
// `decoded` (by sample index) where given, else from their files.
class CropBatcher {
 public:
  CropBatcher(const Dataset& data, std::vector<CropJob> jobs, const Config& cfg, bool augment,
              std::map<int, cv::Mat> decoded = {});

  // One job per garment that has at least one landmark present.
  static std::vector<CropJob> ground_truth_jobs(const Dataset& data);

  size_t size() const { return jobs_.size(); }
  const CropJob& job(size_t i) const { return jobs_[i]; }
  const Dataset& data() const { return data_; }
  KeypointBatch make(const std::vector<size_t>& job_indices, std::uint64_t seed) const;

 private:
  const Dataset& data_;
  std::vector<CropJob> jobs_;
  Config cfg_;
  std::vector<HeatmapCodec> codecs_;  // HeatmapCodec::for_network
  bool augment_;
  ImageStore images_;
};

struct DetectorBatch {
  torch::Tensor images;            // [B,3,H,W]
  std::vector<DetTarget> targets;  // boxes in network-input pixels, label = category + 1
};

// Whole training images with at least one garment; augmented with a random horizontal flip, scale
// jitter (data.scale_aug around detector_scale) and colour jitter.
class DetectionBatcher {
 public:
  DetectionBatcher(const Dataset& data, const Config& cfg, bool augment);
  size_t size() const { return samples_.size(); }
  DetectorBatch make(const std::vector<size_t>& indices, std::uint64_t seed) const;

 private:
  const Dataset& data_;
  Config cfg_;
  bool augment_;
  std::vector<int> samples_;
  ImageStore images_;
};

// Runs make(i) for i in [0, count) on `workers` threads, at most `prefetch` batches ahead of the
// consumer, and hands them out in order. workers = 0 makes each batch on the calling thread.
// An exception in a worker is rethrown by next().
template <class Batch>
class BatchLoader {
 public:
  BatchLoader(std::function<Batch(size_t)> make, size_t count, int workers, int prefetch)
      : make_(std::move(make)), count_(count), prefetch_(static_cast<size_t>(std::max(prefetch, 1))) {
    for (int i = 0; i < workers; ++i) threads_.emplace_back([this] { work(); });
  }
  ~BatchLoader() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  std::optional<Batch> next() {
    if (next_to_give_ >= count_) return std::nullopt;
    if (threads_.empty()) return make_(next_to_give_++);
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait(lock, [&] { return error_ || ready_.count(next_to_give_) > 0; });
    if (error_) std::rethrow_exception(error_);
    Batch batch = std::move(ready_.at(next_to_give_));
    ready_.erase(next_to_give_++);
    lock.unlock();
    cv_.notify_all();
    return batch;
  }

 private:
  void work() {
    while (true) {
      size_t index;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [&] { return stop_ || (next_to_make_ < count_ && next_to_make_ < next_to_give_ + prefetch_); });
        if (stop_) return;
        index = next_to_make_++;
      }
      try {
        Batch batch = make_(index);
        std::lock_guard<std::mutex> lock(mutex_);
        ready_.emplace(index, std::move(batch));
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!error_) error_ = std::current_exception();
      }
      cv_.notify_all();
    }
  }

  std::function<Batch(size_t)> make_;
  size_t count_, prefetch_;
  size_t next_to_make_ = 0, next_to_give_ = 0;
  bool stop_ = false;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::map<size_t, Batch> ready_;
  std::exception_ptr error_;
  std::vector<std::thread> threads_;
};

}  // namespace cspn
