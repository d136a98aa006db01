#include "cspn/engine/garment_detector.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>

#include <opencv2/imgproc.hpp>

#include "cspn/core/io/weights.hpp"
#include "cspn/core/model/batch_norm.hpp"
#include "cspn/core/model/resnet.hpp"
#include "cspn/core/runtime.hpp"
#include "cspn/data/image.hpp"
#include "cspn/engine/crop.hpp"
#include "cspn/engine/loader.hpp"

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

}  // namespace cspn
