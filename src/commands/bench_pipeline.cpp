#include "cspn/commands/bench_pipeline.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <optional>
#include <stdexcept>
#include <vector>

#include <opencv2/imgproc.hpp>

#include "cspn/api/pipeline.hpp"
#include "cspn/commands/predict_files.hpp"
#include "cspn/core/bench.hpp"
#include "cspn/core/io/weights.hpp"
#include "cspn/core/model/info.hpp"
#include "cspn/core/model/losses.hpp"
#include "cspn/core/runtime.hpp"
#include "cspn/data/image.hpp"
#include "cspn/data/readers.hpp"
#include "cspn/engine/garment_detector.hpp"
#include "cspn/engine/landmark_predictor.hpp"
#include "cspn/engine/loader.hpp"

namespace cspn {

namespace {

// The model to time: a trained file, or untrained weights of a config (the built-in case when none).
ModelFile bench_model(const PipelineBenchOptions& opt) {
  if (!opt.model.empty()) {
    ModelFile file = load_model_file(opt.model);
    file.config = Config::resolve("", opt.sets, file.config);
    return file;
  }
  ModelFile file;
  file.schema = LandmarkSchema::deepfashion();
  Config base;
  if (opt.config.empty()) {
    auto& d = base.model.detector;
    d.enabled = true;
    d.backbone = opt.detector;
    auto& k = base.model.keypoints;
    k.backbone = opt.backbone;
    k.stages = opt.stages;
    k.input_size = opt.input_size;
  }
  file.config = Config::resolve(opt.config, opt.sets, base);
  if (!file.config.model.detector.enabled)
    throw std::invalid_argument("cspn bench --parts pipeline: the config has no detector (model.detector.enabled is false)");
  require_memory(file.config, /*training=*/false, torch::kCPU, "cspn bench");
  FasterRCNN detector(file.config.model.detector, file.schema.num_categories() + 1);
  CSPNNet landmarks(file.config.model.keypoints, file.schema.num_landmarks());
  for (auto& [name, t] : state_dict(*detector)) file.tensors.emplace_back("detector." + name, t);
  for (auto& [name, t] : state_dict(*landmarks)) file.tensors.emplace_back("keypoints." + name, t);
  return file;
}

std::vector<cv::Mat> bench_images(const PipelineBenchOptions& opt, int size) {
  if (!opt.images.empty()) {
    std::vector<cv::Mat> images;
    for (const auto& path : image_files({opt.images})) images.push_back(read_image(path));
    if (images.empty()) throw std::invalid_argument("--images " + opt.images + ": no image files there");
    return images;
  }
  cv::Mat image(size, size * 4 / 3, CV_8UC3);  // textured noise: the cost does not depend on content
  cv::randu(image, cv::Scalar::all(0), cv::Scalar::all(255));
  cv::GaussianBlur(image, image, cv::Size(0, 0), 3.0);
  return {image};
}

double percentile(std::vector<double> values, double q) {
  std::sort(values.begin(), values.end());
  const auto at = static_cast<size_t>(std::ceil(q * static_cast<double>(values.size()))) - 1;
  return values[std::min(at, values.size() - 1)];
}

// Per-image times (ms) of `fn(image)` over `passes` passes through all images, after one warm-up pass.
std::vector<double> time_each(const std::vector<cv::Mat>& images, int passes, const torch::Device& device,
                              const std::function<void(const cv::Mat&)>& fn) {
  std::vector<double> ms;
  for (int pass = -1; pass < passes; ++pass) {
    for (const auto& image : images) {
      const auto start = std::chrono::steady_clock::now();
      fn(image);
      synchronize(device);
      const double t = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
      if (pass >= 0) ms.push_back(t);
    }
  }
  return ms;
}

double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // kilobytes on Linux
}

}  // namespace

nlohmann::json bench_pipeline(const PipelineBenchOptions& opt, std::ostream& out) {
  const torch::Device device = parse_device(opt.device);
  ModelFile file = bench_model(opt);
  auto& d = file.config.model.detector;
  d.score_thresh = 0.0f;  // exactly `garments` boxes per image, trained or not
  d.detections_per_image = opt.garments;
  file.config.test.min_score = 0.0f;
  std::vector<int> sizes = opt.sizes;
  const bool built_in = opt.model.empty() && opt.config.empty();
  if (sizes.empty()) sizes = built_in ? std::vector<int>{320, 608} : std::vector<int>{d.min_size};
  const auto& k = file.config.model.keypoints;
  out << "whole pipeline per image: detector " << d.backbone << ", landmarks " << k.backbone << " " << k.stages
      << " stages " << k.input_size[0] << "x" << k.input_size[1] << ", " << opt.garments << " garment(s) per image"
      << ", flip test " << (file.config.test.flip ? "on" : "off") << " (landmarks) / "
      << (file.config.test.detector_flip ? "on" : "off") << " (detector), "
      << (opt.model.empty() ? "untrained weights" : opt.model) << ", "
      << (opt.images.empty() ? "synthetic images" : opt.images) << ", precision " << file.config.test.precision
      << (blas_core().empty() ? "" : ", OpenBLAS kernel " + blas_core()) << "\n";
  char line[320];
  std::snprintf(line, sizeof line, "%-10s %-10s %12s %12s %12s %10s %10s %14s %9s\n", "image", "detector", "detector ms",
                "+flip ms", "pipeline ms", "p90 ms", "images/s", "best batch/s", "peak MB");
  out << line << std::flush;

  nlohmann::json rows = nlohmann::json::array();
  for (int size : sizes) {
    d.min_size = size;
    d.max_size = size * 4 / 3;
    file.config.validate();
    Pipeline pipeline(file, device);  // test.detector_flip as configured (the default: on)
    Config unflipped_config = file.config;
    unflipped_config.test.detector_flip = false;
    ModelFile unflipped_file{unflipped_config, file.schema, {}, file.tensors};
    Pipeline unflipped(unflipped_file, device);
    const std::vector<cv::Mat> images = bench_images(opt, size);
    const std::vector<PredictOptions> options{PredictOptions{0.0f, opt.garments, std::nullopt}};

    const float scale = detector_scale(images[0].cols, images[0].rows, d);
    const int input_w = static_cast<int>(std::lround(images[0].cols * scale));
    const int input_h = static_cast<int>(std::lround(images[0].rows * scale));
    size_t garments = 0;
    for (const auto& m : images) garments += pipeline.predict({m}, options)[0].size();
    const auto detector = time_each(images, opt.iters, device, [&](const cv::Mat& m) { unflipped.detector().detect({m}); });
    const auto detector_flip = time_each(images, opt.iters, device, [&](const cv::Mat& m) { pipeline.detector().detect({m}); });
    const auto whole = time_each(images, opt.iters, device, [&](const cv::Mat& m) { pipeline.predict({m}, options); });
    const double pipeline_ms = percentile(whole, 0.5);

    nlohmann::json throughput = nlohmann::json::array();
    int best_batch = 1;
    double best = 1000.0 / pipeline_ms;
    for (int b : opt.batches) {
      double per_s = 1000.0 / pipeline_ms;
      if (b > 1) {
        std::vector<cv::Mat> batch;
        for (int i = 0; i < b; ++i) batch.push_back(images[static_cast<size_t>(i) % images.size()]);
        per_s = b * 1000.0 / median_ms([&] { pipeline.predict(batch, options); }, opt.iters, device);
      }
      throughput.push_back({{"batch", b}, {"images_per_s", per_s}});
      if (per_s > best) best = per_s, best_batch = b;
    }
    char image_text[32], input_text[32];
    std::snprintf(image_text, sizeof image_text, "%dx%d", images[0].cols, images[0].rows);
    std::snprintf(input_text, sizeof input_text, "%dx%d", input_w, input_h);
    std::snprintf(line, sizeof line, "%-10s %-10s %12.1f %12.1f %12.1f %10.1f %10.2f %9.2f (%2d) %9.0f\n", image_text,
                  input_text, percentile(detector, 0.5), percentile(detector_flip, 0.5), pipeline_ms,
                  percentile(whole, 0.9), 1000.0 / pipeline_ms, best, best_batch, peak_rss_mb());
    out << line << std::flush;
    rows.push_back({{"image", {images[0].cols, images[0].rows}},
                    {"images", images.size()},
                    {"detector_input", {input_w, input_h}},
                    {"garments", static_cast<double>(garments) / static_cast<double>(images.size())},
                    {"detector_ms", percentile(detector, 0.5)},
                    {"detector_flip_ms", percentile(detector_flip, 0.5)},
                    {"pipeline_ms", pipeline_ms},
                    {"pipeline_p90_ms", percentile(whole, 0.9)},
                    {"throughput", throughput},
                    {"best_batch", best_batch},
                    {"best_images_per_s", best},
                    {"peak_rss_mb", peak_rss_mb()}});
  }
  return rows;
}

nlohmann::json bench_landmark_gflops(const PipelineBenchOptions& opt, std::ostream& out) {
  const torch::Device device = parse_device(opt.device);
  const ModelFile file = bench_model(opt);
  LandmarkPredictor predictor = LandmarkPredictor::from_model_file(file, device);
  // In a lower precision, the same network in float32 is timed in turn with it: their ratio then
  // does not depend on how the machine's speed drifts between two runs.
  std::optional<LandmarkPredictor> float32;
  if (file.config.test.precision != "float32") {
    ModelFile float32_file = file;
    float32_file.config.test.precision = "float32";
    float32.emplace(LandmarkPredictor::from_model_file(float32_file, device));
  }
  const auto& k = file.config.model.keypoints;
  const auto crops = [&](int64_t batch) {
    return torch::randn({batch, 3, k.input_size[0], k.input_size[1]}, torch::TensorOptions().device(device));
  };
  // Every batch's backbone, network (and float32 network) timed in turn, one call of each per round:
  // the network-to-backbone and batch-to-batch ratios then do not depend on the machine's drift.
  struct Case {
    int64_t batch = 0;
    torch::Tensor input, float32_input;
    double backbone_flops = 0, network_flops = 0;
  };
  std::vector<Case> cases;
  CSPNNet counted(k, file.schema.num_landmarks());  // float32 on the CPU, for the FLOP counter
  counted->eval();
  for (const int64_t batch : {int64_t{1}, int64_t{2}, int64_t{16}}) {
    Case c;
    c.batch = batch;
    const auto x = crops(batch);
    {
      torch::NoGradGuard no_grad;  // the FLOP counter observes ATen calls in float32
      CSPNNet& net = counted;
      c.backbone_flops = count_flops([&] { net->backbone->features(x.cpu()); });
      c.network_flops = count_flops([&] { net->forward(x.cpu()); });
    }
    c.input = predictor.network_input(x);
    if (float32) c.float32_input = float32->network_input(x);
    cases.push_back(c);
  }
  std::vector<std::function<void()>> timed;
  for (const auto& c : cases) {
    timed.push_back([&] {
      c10::InferenceMode inference;
      predictor.net()->backbone->features(c.input);
    });
    timed.push_back([&] { predictor.run_network(c.input); });
    if (float32) timed.push_back([&] { float32->run_network(c.float32_input); });
  }
  const auto ms = median_ms_alternating(timed, opt.iters, device);

  nlohmann::json rows = nlohmann::json::array();
  char line[320];
  const size_t per_case = float32 ? 3 : 2;
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    const int64_t batch = c.batch;
    const double backbone_ms = ms[i * per_case], network_ms = ms[i * per_case + 1];
    const double float32_ms = float32 ? ms[i * per_case + 2] : network_ms;
    const double backbone_rate = c.backbone_flops / backbone_ms / 1e6, network_rate = c.network_flops / network_ms / 1e6;
    std::snprintf(line, sizeof line,
                  "landmark network, batch %2lld, %s: backbone %7.1f ms %6.1f GFLOP/s | whole network %7.1f ms "
                  "(%6.1f ms/crop) %6.1f GFLOP/s = %3.0f%% of the backbone's rate\n",
                  static_cast<long long>(batch), file.config.test.precision.c_str(), backbone_ms, backbone_rate,
                  network_ms, network_ms / batch, network_rate, 100.0 * network_rate / backbone_rate);
    out << line;
    if (float32) {
      std::snprintf(line, sizeof line, "  float32 timed in turn with it: %7.1f ms (%6.1f ms/crop), %s %.2fx faster\n",
                    float32_ms, float32_ms / batch, file.config.test.precision.c_str(), float32_ms / network_ms);
      out << line;
    }
    out << std::flush;
    nlohmann::json row{{"batch", batch},
                       {"backbone_ms", backbone_ms},
                       {"network_ms", network_ms},
                       {"ms_per_crop", network_ms / batch},
                       {"backbone_gflops", c.backbone_flops / 1e9},
                       {"network_gflops", c.network_flops / 1e9},
                       {"backbone_gflop_s", backbone_rate},
                       {"network_gflop_s", network_rate},
                       {"ratio", network_rate / backbone_rate}};
    if (float32) {
      row["float32_ms_per_crop"] = float32_ms / batch;
      row["speedup_vs_float32"] = float32_ms / network_ms;
    }
    rows.push_back(row);
  }
  nlohmann::json result{{"precision", file.config.test.precision}, {"inference", rows}};
  if (!opt.train_step) return result;
  float32.reset();  // its memory is not the training step's

  // One training step as `cspn train` takes it (float32, channels-last, the config's loss and batch
  // size, Adam, glibc mapping its large blocks afresh).
  keep_freed_memory(/*heap_only=*/false);
  CSPNNet net(k, file.schema.num_landmarks());
  load_state_dict(*net, file.tensors, "keypoints.");
  net->to(device);
  net->train();
  use_channels_last(*net);
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(1e-4));
  const int64_t batch = file.config.train.batch_size;
  const auto x = crops(batch).contiguous(torch::MemoryFormat::ChannelsLast);
  std::vector<torch::Tensor> targets;
  for (const auto& codec : HeatmapCodec::for_network(k))
    targets.push_back(torch::rand({batch, file.schema.num_landmarks(), codec.heatmap_h(), codec.heatmap_w()},
                                  torch::TensorOptions().device(device)));
  const auto weight = torch::ones({batch, file.schema.num_landmarks()}, torch::TensorOptions().device(device));
  const double step_ms = median_ms([&] {
    optimizer.zero_grad();
    cspn_loss(net->forward(x), targets, weight, file.config.loss, k.sigma).total.backward();
    optimizer.step();
  }, opt.iters, device);
  std::snprintf(line, sizeof line, "training step, batch %lld (float32, Adam): %.1f ms, %.1f crops/s\n",
                static_cast<long long>(batch), step_ms, batch * 1000.0 / step_ms);
  out << line << std::flush;
  result["train_step"] = {{"batch", batch}, {"ms", step_ms}, {"crops_per_s", batch * 1000.0 / step_ms}};
  return result;
}

void write_landmark_io(const PipelineBenchOptions& opt, const std::string& path) {
  const ModelFile file = bench_model(opt);
  LandmarkPredictor predictor = LandmarkPredictor::from_model_file(file, parse_device(opt.device));
  const auto& k = file.config.model.keypoints;
  const auto generator = at::detail::createCPUGenerator(/*seed_val=*/20261201);
  StateDict io{{"input", torch::randn({2, 3, k.input_size[0], k.input_size[1]}, generator)}};
  const auto stages = predictor.run_network(io.front().second);
  for (size_t s = 0; s < stages.size(); ++s) io.emplace_back("stage" + std::to_string(s + 1), stages[s].cpu());
  for (const auto& [name, t] : file.tensors)
    if (name.rfind("keypoints.", 0) == 0) io.emplace_back(name, t);
  write_safetensors(path, io, {{"cspn.config", file.config.to_json().dump()}});
}

nlohmann::json bench_data(const PipelineBenchOptions& opt, const std::string& data_path, const std::string& format,
                          std::ostream& out) {
  Config cfg = bench_model(opt).config;
  cfg.data.cache_images = false;  // every crop decodes its photo, as in an epoch over a large data set
  const Dataset data = read_dataset(data_path, format);
  CropBatcher batcher(data, CropBatcher::ground_truth_jobs(data), cfg, /*augment=*/true);
  if (batcher.size() == 0) throw std::invalid_argument(data_path + ": no garment with landmarks to crop");
  const size_t bs = static_cast<size_t>(cfg.train.batch_size);
  const size_t batches = std::max<size_t>(8, 2 * static_cast<size_t>(cfg.data.workers));
  nlohmann::json rows = nlohmann::json::array();
  for (const int workers : {0, cfg.data.workers}) {
    const auto start = std::chrono::steady_clock::now();
    BatchLoader<KeypointBatch> loader(
        [&](size_t i) {
          std::vector<size_t> idx;
          for (size_t j = 0; j < bs; ++j) idx.push_back((i * bs + j) % batcher.size());
          return batcher.make(idx, i);
        },
        batches, workers, cfg.data.prefetch);
    while (loader.next()) {
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double rate = static_cast<double>(batches * bs) / seconds;
    char line[160];
    std::snprintf(line, sizeof line, "data pipeline (decode, crop, augment, targets), %s: %.1f crops/s\n",
                  workers ? (std::to_string(workers) + " worker thread(s)").c_str() : "on the calling thread", rate);
    out << line << std::flush;
    rows.push_back({{"workers", workers}, {"crops_per_s", rate}, {"batch", bs}, {"batches", batches}});
    if (cfg.data.workers == 0) break;
  }
  return rows;
}

}  // namespace cspn
