#include "cspn/engine/detection.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <random>

#include <opencv2/imgproc.hpp>

#include "cspn/detect/ap.hpp"
#include "cspn/device.hpp"
#include "cspn/engine/crop.hpp"
#include "cspn/engine/process.hpp"
#include "cspn/io/weights.hpp"
#include "cspn/model/batch_norm.hpp"

namespace cspn {
namespace {

cv::Size resized_size(const cv::Mat& bgr, float scale) {
  return {std::max(1, static_cast<int>(std::lround(bgr.cols * scale))),
          std::max(1, static_cast<int>(std::lround(bgr.rows * scale)))};
}

cv::Mat resized(const cv::Mat& bgr, float scale) {
  const cv::Size size = resized_size(bgr, scale);
  if (size == bgr.size()) return bgr;
  cv::Mat out;
  cv::resize(bgr, out, size, 0, 0, scale < 1 ? cv::INTER_AREA : cv::INTER_LINEAR);
  return out;
}

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

std::vector<std::string> class_names(const LandmarkSchema& schema) {
  std::vector<std::string> names{"background"};
  for (const auto& c : schema.categories) names.push_back(c.name);
  return names;
}

}  // namespace

float detector_scale(int width, int height, const DetectorModelConfig& cfg) {
  const float shorter = static_cast<float>(std::min(width, height));
  const float longer = static_cast<float>(std::max(width, height));
  return std::min(cfg.min_size / shorter, cfg.max_size / longer);
}

torch::Tensor detector_input(const std::vector<cv::Mat>& bgr, const std::vector<float>& scales) {
  std::vector<torch::Tensor> images;
  int64_t h = 0, w = 0;
  for (size_t i = 0; i < bgr.size(); ++i) {
    images.push_back(to_input_tensor(resized(bgr[i], scales[i])));
    h = std::max(h, images.back().size(1));
    w = std::max(w, images.back().size(2));
  }
  auto batch = torch::zeros({static_cast<int64_t>(images.size()), 3, round_up(h, FasterRCNNImpl::kStride),
                             round_up(w, FasterRCNNImpl::kStride)});
  for (size_t i = 0; i < images.size(); ++i)
    batch[static_cast<int64_t>(i)].narrow(1, 0, images[i].size(1)).narrow(2, 0, images[i].size(2)).copy_(images[i]);
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

GarmentDetector::GarmentDetector(FasterRCNN net, const Config& cfg, LandmarkSchema schema, torch::Device device)
    : net_(std::move(net)), cfg_(cfg), schema_(std::move(schema)), device_(device) {
  net_->to(device_);
  net_->eval();
}

GarmentDetector GarmentDetector::from_model_file(const ModelFile& file, torch::Device device) {
  if (!file.config.model.detector.enabled)
    throw std::invalid_argument("the model file has no garment detector (model.detector.enabled is false); "
                                "use ground-truth boxes (--boxes gt) or train one");
  require_memory(file.config, /*training=*/false, device, "the garment detector");
  FasterRCNN net(file.config.model.detector, file.schema.num_categories() + 1);
  const LoadReport report = load_state_dict(*net, file.tensors, "detector.");
  if (!report.missing.empty() || !report.mismatched.empty())
    throw std::runtime_error("model file does not match its own detector config:\n" + report.summary());
  fold_batch_norm(*net);
  use_channels_last(*net);
  if (device.is_cpu()) net->backbone()->box_head_for_inference();  // measured on the CPU only
  return GarmentDetector(net, file.config, file.schema, device);
}

std::vector<std::vector<DetectedGarment>> GarmentDetector::detect(const std::vector<cv::Mat>& images) {
  std::vector<std::vector<DetectedGarment>> out;
  const size_t bs = static_cast<size_t>(cfg_.test.detector_batch_size);
  for (size_t first = 0; first < images.size(); first += bs) {
    const std::vector<cv::Mat> chunk(images.begin() + first, images.begin() + std::min(images.size(), first + bs));
    std::vector<float> scales;
    for (const auto& im : chunk) scales.push_back(detector_scale(im.cols, im.rows, cfg_.model.detector));
    std::vector<std::array<int64_t, 2>> sizes;  // each image's own area in the padded batch
    for (size_t i = 0; i < chunk.size(); ++i) {
      const cv::Size size = resized_size(chunk[i], scales[i]);
      sizes.push_back({size.height, size.width});
    }
    c10::InferenceMode inference;
    const auto input = detector_input(chunk, scales).to(device_).contiguous(torch::MemoryFormat::ChannelsLast);
    const auto detections = net_->detect(input, sizes, cfg_.test.detector_flip);
    for (size_t i = 0; i < chunk.size(); ++i) {
      const auto boxes = (detections[i].boxes.cpu() / scales[i]).contiguous();
      const auto scores = detections[i].scores.cpu().contiguous();
      const auto labels = detections[i].labels.cpu().contiguous();
      auto b = boxes.accessor<float, 2>();
      const float w = static_cast<float>(chunk[i].cols), h = static_cast<float>(chunk[i].rows);
      std::vector<DetectedGarment> garments;
      for (int64_t d = 0; d < boxes.size(0); ++d)
        garments.push_back({{std::clamp(b[d][0], 0.0f, w), std::clamp(b[d][1], 0.0f, h), std::clamp(b[d][2], 0.0f, w),
                             std::clamp(b[d][3], 0.0f, h)},
                            scores[d].item<float>(),
                            static_cast<int>(labels[d].item<int64_t>() - 1)});
      out.push_back(std::move(garments));
    }
  }
  return out;
}

void detect_dataset(GarmentDetector& detector, const Dataset& data, const Config& cfg, int chunk,
                    const std::function<void(int, const std::vector<cv::Mat>&,
                                             const std::vector<std::vector<DetectedGarment>>&)>& visit) {
  const auto n = static_cast<int>(data.samples.size());
  const int chunks = (n + chunk - 1) / chunk;
  BatchLoader<std::vector<cv::Mat>> loader(
      [&](size_t c) {
        std::vector<cv::Mat> images;
        for (int s = static_cast<int>(c) * chunk; s < std::min(n, static_cast<int>(c + 1) * chunk); ++s)
          images.push_back(read_image(data.samples[s].image));
        return images;
      },
      chunks, cfg.data.workers, cfg.data.prefetch);
  int first = 0;
  while (auto images = loader.next()) {
    visit(first, *images, detector.detect(*images));
    first += static_cast<int>(images->size());
  }
}

void add_to_ap(detect::DetectionAP& ap, const std::vector<DetectedGarment>& detections, const Sample& truth) {
  const auto d = static_cast<int64_t>(detections.size()), g = static_cast<int64_t>(truth.garments.size());
  auto det_boxes = torch::empty({d, 4}), det_scores = torch::empty({d});
  auto det_labels = torch::empty({d}, torch::kLong);
  for (int64_t i = 0; i < d; ++i) {
    const Box& b = detections[i].box;
    det_boxes[i] = torch::tensor({b.x1, b.y1, b.x2, b.y2});
    det_scores[i] = detections[i].score;
    det_labels[i] = detections[i].category + 1;
  }
  auto gt_boxes = torch::empty({g, 4});
  auto gt_labels = torch::empty({g}, torch::kLong);
  for (int64_t i = 0; i < g; ++i) {
    const Box& b = truth.garments[i].box;
    gt_boxes[i] = torch::tensor({b.x1, b.y1, b.x2, b.y2});
    gt_labels[i] = truth.garments[i].category + 1;
  }
  ap.add(det_boxes, det_scores, det_labels, gt_boxes, gt_labels);
}

nlohmann::json detector_ap(GarmentDetector& detector, const Dataset& data, const Config& cfg,
                           const std::function<void(size_t, size_t)>& progress) {
  detect::DetectionAP ap(class_names(data.schema));
  size_t done = 0;
  detect_dataset(detector, data, cfg, cfg.test.detector_batch_size * 4,
                 [&](int first, const std::vector<cv::Mat>&, const std::vector<std::vector<DetectedGarment>>& dets) {
                   for (size_t i = 0; i < dets.size(); ++i) add_to_ap(ap, dets[i], data.samples[first + i]);
                   done += dets.size();
                   if (progress) progress(done, data.samples.size());
                 });
  return ap.result();
}

std::vector<int> match_detections(const std::vector<DetectedGarment>& detections,
                                  const std::vector<Garment>& truth, float min_iou) {
  std::vector<size_t> order(detections.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return detections[a].score > detections[b].score; });
  std::vector<int> match(detections.size(), -1);
  std::vector<bool> taken(truth.size(), false);
  for (size_t d : order) {
    const Box& a = detections[d].box;
    float best = min_iou;
    for (size_t g = 0; g < truth.size(); ++g) {
      if (taken[g] || truth[g].category != detections[d].category) continue;
      const float overlap = iou(a, truth[g].box);
      if (overlap >= best) {
        best = overlap;
        match[d] = static_cast<int>(g);
      }
    }
    if (match[d] >= 0) taken[match[d]] = true;
  }
  return match;
}

struct Pipeline::Impl {
  GarmentDetector detector;
  LandmarkPredictor landmarks;
  float min_score;
};

Pipeline::Pipeline(const ModelFile& file, torch::Device device)
    : impl_(std::make_unique<Impl>(Impl{GarmentDetector::from_model_file(file, device),
                                        LandmarkPredictor::from_model_file(file, device), file.config.test.min_score})) {}
Pipeline::~Pipeline() = default;
Pipeline::Pipeline(Pipeline&&) noexcept = default;
Pipeline& Pipeline::operator=(Pipeline&&) noexcept = default;

float Pipeline::min_score() const { return impl_->min_score; }
void Pipeline::set_min_score(float score) { impl_->min_score = score; }
const LandmarkSchema& Pipeline::schema() const { return impl_->landmarks.schema(); }
const Config& Pipeline::config() const { return impl_->landmarks.config(); }
torch::Device Pipeline::device() const { return impl_->landmarks.device(); }
GarmentDetector& Pipeline::detector() { return impl_->detector; }
LandmarkPredictor& Pipeline::landmarks() { return impl_->landmarks; }

std::vector<std::vector<GarmentPrediction>> Pipeline::predict(const std::vector<cv::Mat>& images) {
  return predict(images, {PredictOptions{}});
}

std::vector<std::vector<GarmentPrediction>> Pipeline::predict(const std::vector<cv::Mat>& images,
                                                              const std::vector<PredictOptions>& options,
                                                              PredictTimings* timings) {
  if (options.size() != images.size() && options.size() != 1)
    throw std::invalid_argument("Pipeline::predict: " + std::to_string(options.size()) + " options for " +
                                std::to_string(images.size()) + " images (give one per image, or one for all)");
  const auto option = [&](size_t i) -> const PredictOptions& { return options[options.size() == 1 ? 0 : i]; };
  using clock = std::chrono::steady_clock;
  const auto ms_since = [](clock::time_point t) {
    return std::chrono::duration<double, std::milli>(clock::now() - t).count();
  };
  const auto start = clock::now();
  const auto detections = impl_->detector.detect(images);
  synchronize(device());
  const double detector_ms = ms_since(start);

  // Crops go through the landmark network in two groups at most: images with and without the flip
  // test. An image's garments stay in one group, by decreasing detection score.
  const auto landmarks_start = clock::now();
  const LandmarkSchema& schema = this->schema();
  std::vector<std::vector<GarmentPrediction>> out(images.size());
  int crops = 0;
  for (const bool flip : {true, false}) {
    Dataset frames{schema, {}, {}};
    std::map<int, cv::Mat> decoded;
    std::vector<CropJob> jobs;
    std::vector<const DetectedGarment*> garment_of_job;
    for (size_t i = 0; i < images.size(); ++i) {
      Sample s;
      s.width = images[i].cols;
      s.height = images[i].rows;
      frames.samples.push_back(s);
      const PredictOptions& o = option(i);
      if (o.flip.value_or(config().test.flip) != flip) continue;
      decoded.emplace(static_cast<int>(i), images[i]);
      const float min_score = o.min_score.value_or(impl_->min_score);
      int kept = 0;
      for (const auto& d : detections[i]) {  // by decreasing score
        if (d.score < min_score || (o.max_garments > 0 && kept >= o.max_garments)) continue;
        jobs.push_back({static_cast<int>(i), -1, d.category, d.box});
        garment_of_job.push_back(&d);
        ++kept;
      }
    }
    if (jobs.empty()) continue;
    crops += static_cast<int>(jobs.size());
    const Config& cfg = config();
    CropBatcher batcher(frames, jobs, cfg, false, std::move(decoded));
    const auto predictions = impl_->landmarks.predict_jobs(batcher, {}, false, flip);
    auto c = predictions.coords.accessor<float, 3>();
    auto s = predictions.scores.accessor<float, 2>();
    for (size_t j = 0; j < jobs.size(); ++j) {
      const DetectedGarment& d = *garment_of_job[j];
      GarmentPrediction g{d.category, d.score, d.box, std::vector<LandmarkPoint>(schema.num_landmarks())};
      for (int k : schema.categories[d.category].landmarks)
        g.landmarks[k] = {c[j][k][0], c[j][k][1], s[j][k], s[j][k] >= cfg.test.visible_score};
      out[jobs[j].sample].push_back(std::move(g));
    }
  }
  if (timings) *timings = {detector_ms, ms_since(landmarks_start), crops};
  return out;
}

}  // namespace cspn
