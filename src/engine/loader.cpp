#include "cspn/engine/loader.hpp"

#include <filesystem>
#include <fstream>
#include <istream>
#include <random>

#include <opencv2/imgcodecs.hpp>

#include "cspn/data/jpeg.hpp"
#include "cspn/data/readers.hpp"
#include "cspn/engine/crop.hpp"
#include "cspn/io/atomic_file.hpp"

namespace cspn {

namespace {

// A read-only, seekable stream over bytes held elsewhere (the header checks seek within it).
class ByteStream : public std::streambuf {
 public:
  ByteStream(const char* data, size_t size) {
    char* p = const_cast<char*>(data);
    setg(p, p, p + size);
  }

 protected:
  pos_type seekoff(off_type off, std::ios_base::seekdir dir, std::ios_base::openmode) override {
    const off_type base = dir == std::ios_base::beg ? 0 : dir == std::ios_base::cur ? gptr() - eback() : egptr() - eback();
    return seekpos(pos_type(base + off), std::ios_base::in);
  }
  pos_type seekpos(pos_type pos, std::ios_base::openmode) override {
    if (pos < 0 || pos > egptr() - eback()) return pos_type(off_type(-1));
    setg(eback(), eback() + static_cast<off_type>(pos), egptr());
    return pos;
  }
};

void check_pixels(std::pair<int, int> size, const std::string& name, long max_pixels) {
  const auto [w, h] = size;
  if (static_cast<long>(w) * h > max_pixels)
    throw ImageError(ImageError::Kind::TooLarge, name + ": image is " + std::to_string(w) + "x" + std::to_string(h) +
                                                     ", more than the " + std::to_string(max_pixels) +
                                                     " pixels allowed");
}

}  // namespace

cv::Mat decode_image(const std::string& bytes, const std::string& name, long max_pixels) {
  ByteStream buffer(bytes.data(), bytes.size());
  std::istream in(&buffer);
  check_pixels(image_size(in, name), name, max_pixels);  // throws ImageError on empty, unknown or corrupt headers
  check_complete(in, name);
  if (bytes.size() >= 2 && static_cast<unsigned char>(bytes[0]) == 0xFF && static_cast<unsigned char>(bytes[1]) == 0xD8)
    return decode_jpeg(bytes, name);  // refuses damaged data that cv::imdecode would pass with a warning
  const cv::Mat encoded(1, static_cast<int>(bytes.size()), CV_8U, const_cast<char*>(bytes.data()));
  cv::Mat image = cv::imdecode(encoded, cv::IMREAD_COLOR);
  if (image.empty()) throw ImageError(ImageError::Kind::Corrupt, name + ": cannot decode image (corrupt or truncated file?)");
  return image;
}

void write_image(const std::string& path, const cv::Mat& bgr, const std::vector<int>& params) {
  std::vector<uchar> encoded;
  const std::string ext = std::filesystem::path(path).extension().string();
  if (!cv::imencode(ext.empty() ? ".png" : ext, bgr, encoded, params))
    throw std::runtime_error("cannot encode " + path + " as '" + ext + "'");
  write_file_atomically(path, std::string_view(reinterpret_cast<const char*>(encoded.data()), encoded.size()));
}

cv::Mat read_image(const std::string& path, long max_pixels) {
  check_pixels(image_size(path), path, max_pixels);  // before reading a huge file whole; refuses FIFOs
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw ImageError(ImageError::Kind::Unreadable, path + ": cannot read image file");
  return decode_image(bytes, path, max_pixels);
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

}  // namespace cspn
