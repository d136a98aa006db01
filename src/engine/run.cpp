#include "cspn/engine/run.hpp"

#include <malloc.h>
#include <sched.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <thread>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "cspn/bench.hpp"
#include "cspn/data/readers.hpp"
#include "cspn/data/synth.hpp"
#include "cspn/detect/ap.hpp"
#include "cspn/engine/detection.hpp"
#include "cspn/engine/train.hpp"
#include "cspn/engine/evaluate.hpp"
#include "cspn/engine/landmarks_model.hpp"
#include "cspn/engine/progress.hpp"
#include "cspn/metrics.hpp"

namespace fs = std::filesystem;

namespace cspn {
namespace {

void write_atomically(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary);
    out << text;
    if (!out) throw std::runtime_error("cannot write " + tmp.string());
  }
  fs::rename(tmp, path);
}

Box whole_image(const Sample& s) {
  return {0.0f, 0.0f, static_cast<float>(s.width), static_cast<float>(s.height)};
}


// A loss curve (log scale, per logged iteration) with the validation NE per epoch, as a PNG.
void plot_log(const std::string& log_path, const fs::path& png) {
  std::ifstream in(log_path);
  std::vector<std::pair<double, double>> loss, val;
  std::string line;
  while (std::getline(in, line)) {
    const auto rec = nlohmann::json::parse(line, nullptr, false);
    if (rec.is_discarded()) continue;
    if (rec.value("type", "") == "train") loss.emplace_back(rec["iter"].get<double>(), rec["loss"].get<double>());
    if (rec.value("type", "") == "epoch" && rec.contains("val"))
      val.emplace_back(rec["epoch"].get<double>(), rec["val"]["ne_image"]["avg"].get<double>());
  }
  if (loss.size() < 2) return;
  const int w = 800, h = 400, m = 50;
  cv::Mat img(h, w, CV_8UC3, cv::Scalar(255, 255, 255));
  double x_max = loss.back().first, y_lo = 1e30, y_hi = -1e30;
  for (auto& [x, y] : loss) {
    y = std::log10(std::max(y, 1e-12));
    y_lo = std::min(y_lo, y);
    y_hi = std::max(y_hi, y);
  }
  if (y_hi - y_lo < 1e-6) y_hi = y_lo + 1;
  auto to_px = [&](double x, double y) {
    return cv::Point(m + static_cast<int>((w - 2 * m) * x / x_max), h - m - static_cast<int>((h - 2 * m) * (y - y_lo) / (y_hi - y_lo)));
  };
  cv::rectangle(img, cv::Point(m, m), cv::Point(w - m, h - m), cv::Scalar(0, 0, 0));
  for (size_t i = 1; i < loss.size(); ++i)
    cv::line(img, to_px(loss[i - 1].first, loss[i - 1].second), to_px(loss[i].first, loss[i].second),
             cv::Scalar(200, 80, 0), 1, cv::LINE_AA);
  char text[128];
  std::snprintf(text, sizeof text, "training loss (log10 %.2f .. %.2f) over %.0f iterations", y_lo, y_hi, x_max);
  cv::putText(img, text, cv::Point(m, m - 15), cv::FONT_HERSHEY_SIMPLEX, 0.5, cv::Scalar(0, 0, 0), 1, cv::LINE_AA);
  if (!val.empty()) {
    std::string s = "val ne_image by epoch:";
    for (const auto& [e, v] : val) {
      std::snprintf(text, sizeof text, " %.0f:%.4f", e, v);
      if (s.size() < 90) s += text;
    }
    cv::putText(img, s, cv::Point(m, h - 15), cv::FONT_HERSHEY_SIMPLEX, 0.45, cv::Scalar(0, 0, 160), 1, cv::LINE_AA);
  }
  cv::imwrite(png.string(), img);
}

}  // namespace

int use_threads(int requested) {
  int n = requested;
  if (n <= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 0;
    if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  }
  torch::set_num_threads(n);
  return n;
}

void keep_freed_memory() {
  // glibc's largest mmap threshold (32 MiB on 64-bit); larger blocks are mapped whatever is asked.
  mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
  mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max());
}

Dataset load_split(const std::string& path, const std::string& format, const std::string& split,
                   const Config& cfg, bool skip_bad) {
  ReadOptions ro;
  ro.skip_bad = skip_bad;
  Dataset data = read_dataset(path, format, ro);
  const bool has_splits = std::any_of(data.samples.begin(), data.samples.end(),
                                      [](const Sample& s) { return s.split != "train"; });
  if (!has_splits && cfg.data.holdout > 0) assign_holdout(data, cfg.data.holdout, cfg.data.holdout_seed);
  Dataset out = select_split(data, split);
  if (out.samples.empty())
    throw std::invalid_argument(path + ": no images in split '" + split + "'" +
                                (has_splits || cfg.data.holdout > 0
                                     ? std::string()
                                     : std::string(" (this data has no splits: use --split all, or hold images "
                                                   "out with --set data.holdout=0.3)")));
  return out;
}

EvalResult evaluate_model(const ModelFile& model, const Dataset& test, const EvalOptions& opt) {
  const torch::Device device(opt.device);
  const Config& cfg = model.config;
  LandmarkPredictor predictor = LandmarkPredictor::from_model_file(model, device);
  StageMetrics metrics(test.schema, predictor.net()->num_stages());
  nlohmann::json facts{{"boxes", opt.boxes}};
  if (opt.boxes == "gt" || opt.boxes == "image") {
    auto jobs = CropBatcher::ground_truth_jobs(test);
    if (opt.boxes == "image")
      for (auto& job : jobs) job.box = whole_image(test.samples[job.sample]);
    CropBatcher batcher(test, jobs, cfg, false);
    Progress bar("eval", batcher.size(), "crop", opt.progress);
    const auto predictions =
        predictor.predict_jobs(batcher, [&](size_t done, size_t) { bar.update(done); }, /*all_stages=*/true);
    bar.finish();
    metrics.add(test, jobs, predictions.stage_coords);
    facts["crops"] = jobs.size();
  } else if (opt.boxes == "detector") {
    GarmentDetector detector = GarmentDetector::from_model_file(model, device);
    std::vector<std::string> names{"background"};
    for (const auto& c : test.schema.categories) names.push_back(c.name);
    detect::DetectionAP ap(names);
    long matched = 0, missed = 0, false_positives = 0, crops = 0;
    Progress bar("eval", test.samples.size(), "img", opt.progress);
    detect_dataset(detector, test, cfg, 4 * cfg.test.detector_batch_size,
                   [&](int first, const std::vector<cv::Mat>& images,
                       const std::vector<std::vector<DetectedGarment>>& detections) {
                     std::map<int, cv::Mat> decoded;
                     std::vector<CropJob> jobs;
                     for (size_t i = 0; i < images.size(); ++i) {
                       const int s = first + static_cast<int>(i);
                       const Sample& sample = test.samples[s];
                       decoded.emplace(s, images[i]);
                       add_to_ap(ap, detections[i], sample);
                       const auto match = match_detections(detections[i], sample.garments);
                       std::vector<bool> found(sample.garments.size(), false);
                       for (size_t d = 0; d < match.size(); ++d) {
                         if (match[d] < 0) {
                           ++false_positives;
                           continue;
                         }
                         found[match[d]] = true;
                         ++matched;
                         if (has_landmarks(sample.garments[match[d]]))
                           jobs.push_back({s, match[d], detections[i][d].category, detections[i][d].box});
                       }
                       // The documented rule for a missed garment: its landmarks are predicted on
                       // the whole image, as NCSPN would, so a miss costs accuracy instead of
                       // leaving the average.
                       for (size_t g = 0; g < found.size(); ++g) {
                         if (found[g]) continue;
                         ++missed;
                         if (has_landmarks(sample.garments[g]))
                           jobs.push_back({s, static_cast<int>(g), sample.garments[g].category, whole_image(sample)});
                       }
                     }
                     CropBatcher batcher(test, jobs, cfg, false, std::move(decoded));
                     metrics.add(test, jobs, predictor.predict_jobs(batcher, {}, /*all_stages=*/true).stage_coords);
                     crops += static_cast<long>(jobs.size());
                     bar.update(static_cast<size_t>(first) + images.size());
                   });
    bar.finish();
    const auto det = ap.result();
    facts.update({{"crops", crops}, {"matched", matched}, {"missed", missed}, {"false_positives", false_positives},
                  {"det_ap50", det["det_ap50"]}, {"det_ap", det["det_ap"]}, {"detection", det}});
  } else {
    throw std::invalid_argument("--boxes " + opt.boxes + ": expected gt, detector or image");
  }
  EvalResult result{metrics.last().result(), metrics.last().table()};
  result.metrics.update(facts);
  result.metrics["per_stage"] = metrics.per_stage();
  result.table += StageMetrics::describe(result.metrics["per_stage"]) + "\n";
  if (opt.boxes == "detector") {
    char line[256];
    std::snprintf(line, sizeof line,
                  "detector: AP50 %.4f, AP %.4f; %ld garments matched (IoU >= 0.5, same category), %ld missed "
                  "(scored on the whole image), %ld false positives\n",
                  facts["det_ap50"].is_number() ? facts["det_ap50"].get<double>() : 0.0,
                  facts["det_ap"].is_number() ? facts["det_ap"].get<double>() : 0.0,
                  facts["matched"].get<long>(), facts["missed"].get<long>(), facts["false_positives"].get<long>());
    result.table += line;
  }
  return result;
}

EvalResult evaluate_mean_shape(const Dataset& train, const Dataset& test) {
  MeanShape baseline(train);
  const auto jobs = CropBatcher::ground_truth_jobs(test);
  LandmarkMetrics metrics(test.schema);
  score_jobs(test, jobs, baseline.predict(jobs), metrics);
  EvalResult result{metrics.result(), metrics.table()};
  result.metrics["boxes"] = "gt";
  result.metrics["crops"] = jobs.size();
  return result;
}

void write_report(const std::string& dir, const ModelFile& model, const Dataset& test, const EvalResult& result,
                  const std::string& run_log, int examples, const std::string& device) {
  const fs::path out(dir);
  fs::create_directories(out / "examples");
  write_atomically(out / "metrics.json", result.metrics.dump(2) + "\n");
  write_atomically(out / "metrics.md", "# Evaluation\n\n```\n" + result.table + "```\n\n" +
                                           "Config:\n\n```yaml\n" + model.config.to_yaml() + "\n```\n");
  if (!run_log.empty() && fs::exists(run_log)) plot_log(run_log, out / "loss.png");

  // A few test images with predictions (filled dots) and ground truth (rings).
  Dataset few{test.schema, {}, {}};
  for (size_t i = 0; i < test.samples.size() && static_cast<int>(few.samples.size()) < examples; ++i)
    few.samples.push_back(test.samples[i]);
  LandmarkPredictor predictor = LandmarkPredictor::from_model_file(model, torch::Device(device));
  CropBatcher batcher(few, CropBatcher::ground_truth_jobs(few), model.config, false);
  const auto coords = predictor.predict_jobs(batcher).coords;
  std::map<int, cv::Mat> canvases;
  for (size_t j = 0; j < batcher.size(); ++j) {
    const CropJob& job = batcher.job(j);
    auto it = canvases.find(job.sample);
    if (it == canvases.end()) it = canvases.emplace(job.sample, read_image(few.samples[job.sample].image)).first;
    cv::Mat& img = it->second;
    const float r = std::max(2.0f, img.cols / 150.0f);
    const Garment& g = few.samples[job.sample].garments[job.garment];
    for (int k : test.schema.categories[g.category].landmarks) {
      const cv::Scalar colour = cv::Scalar((k * 67) % 256, (k * 139 + 80) % 256, (k * 29 + 160) % 256);
      if (g.keypoints[k].v != Visibility::Absent)
        cv::circle(img, cv::Point2f(g.keypoints[k].x, g.keypoints[k].y), static_cast<int>(r * 1.8f), colour, 2, cv::LINE_AA);
      cv::circle(img, cv::Point2f(coords[j][k][0].item<float>(), coords[j][k][1].item<float>()), static_cast<int>(r),
                 colour, cv::FILLED, cv::LINE_AA);
    }
  }
  for (const auto& [sample, img] : canvases)
    cv::imwrite((out / "examples" / fs::path(few.samples[sample].image).filename()).string(), img);
}

nlohmann::json bench_pipeline(const PipelineBenchOptions& opt, std::ostream& out) {
  const torch::Device device(opt.device);
  if (device.is_cuda() && !torch::cuda::is_available())
    throw std::invalid_argument("--device " + opt.device + ": no CUDA device available");
  nlohmann::json result = nlohmann::json::array();
  char line[256];
  std::snprintf(line, sizeof line, "%-12s %10s %14s %18s %14s %10s\n", "image", "garments", "detector ms",
                "detector+flip ms", "pipeline ms", "images/s");
  out << "whole pipeline per image: detector " << opt.detector << ", landmarks " << opt.backbone << " " << opt.stages
      << " stages " << opt.input_size[0] << "x" << opt.input_size[1]
      << ", flip test in both (the pipeline column), untrained weights\n"
      << line << std::flush;
  for (int size : opt.sizes) {
    ModelFile file;
    file.schema = LandmarkSchema::deepfashion();
    auto& d = file.config.model.detector;
    d.enabled = true;
    d.backbone = opt.detector;
    d.min_size = size;
    d.max_size = size * 4 / 3;
    d.score_thresh = 0.0f;  // untrained scores are arbitrary: keep exactly `garments` boxes per image
    d.detections_per_image = opt.garments;
    file.config.test.min_score = 0.0f;
    auto& k = file.config.model.keypoints;
    k.backbone = opt.backbone;
    k.stages = opt.stages;
    k.input_size = opt.input_size;
    file.config.data.workers = 0;
    file.config.validate();
    FasterRCNN detector(d, file.schema.num_categories() + 1);
    CSPNNet landmarks(k, file.schema.num_landmarks());
    for (auto& [name, t] : state_dict(*detector)) file.tensors.emplace_back("detector." + name, t);
    for (auto& [name, t] : state_dict(*landmarks)) file.tensors.emplace_back("keypoints." + name, t);
    Pipeline pipeline(file, device);  // test.detector_flip as configured (the default: on)
    file.config.test.detector_flip = false;
    Pipeline unflipped(file, device);

    cv::Mat image(size, size * 4 / 3, CV_8UC3);
    cv::randu(image, cv::Scalar::all(0), cv::Scalar::all(255));
    cv::GaussianBlur(image, image, cv::Size(0, 0), 3.0);
    const std::vector<cv::Mat> images{image};
    size_t garments = 0;
    const double detector_ms = median_ms([&] { unflipped.detector().detect(images); }, opt.iters, device.is_cuda());
    const double flip_ms = median_ms([&] { pipeline.detector().detect(images); }, opt.iters, device.is_cuda());
    const double pipeline_ms =
        median_ms([&] { garments = pipeline.predict(images)[0].size(); }, opt.iters, device.is_cuda());
    char size_text[32];
    std::snprintf(size_text, sizeof size_text, "%dx%d", image.cols, image.rows);
    std::snprintf(line, sizeof line, "%-12s %10zu %14.1f %18.1f %14.1f %10.2f\n", size_text, garments, detector_ms,
                  flip_ms, pipeline_ms, 1000.0 / pipeline_ms);
    out << line << std::flush;
    result.push_back({{"image", {image.cols, image.rows}}, {"garments", garments}, {"detector_ms", detector_ms},
                      {"detector_flip_ms", flip_ms}, {"pipeline_ms", pipeline_ms}});
  }
  return result;
}

std::string run_demo(const DemoOptions& opt) {
  // The demo's model: small enough to learn in a few minutes on two CPU cores. The synthetic crops
  // are used as generated, as in configs/synthetic.yaml (augmentation slows learning this short).
  static const char* kDemoConfig = R"(
model:
  keypoints: {backbone: resnet18, stages: 2, channels: 128, input_size: [128, 128], sigma: 2.0}
data: {rotate_aug: 0, scale_aug: 0, shift_aug: 0, occlusion_aug: 0, workers: 1}
train: {optimizer: adam, lr: 0.002, epochs: 60, batch_size: 16, schedule: cosine, warmup_iters: 50, val_every: 5}
test: {flip: true}
)";
  Config cfg;
  cfg.load_yaml_string(kDemoConfig, "built-in demo config");
  cfg.train.time_limit_minutes = static_cast<float>(opt.minutes);
  cfg.validate();

  const fs::path root(opt.out_dir), data_dir = root / "data";
  if (!fs::exists(data_dir / "Anno" / "list_landmarks.txt")) {
    SynthOptions so;
    so.count = opt.count;
    so.seed = 1;
    Progress bar("synth", so.count, "img");
    synthesize(data_dir.string(), so, [&](int done, int) { bar.update(done); });
    bar.finish();
  }
  int n = 1;
  while (fs::exists(root / ("run-" + std::to_string(n)))) ++n;
  const fs::path run_dir = root / ("run-" + std::to_string(n)), report_dir = root / ("report-" + std::to_string(n));

  const Dataset train_set = load_split(data_dir.string(), "fld", "train", cfg, false);
  const Dataset val_set = load_split(data_dir.string(), "fld", "val", cfg, false);
  TrainOptions to;
  to.out_dir = run_dir.string();
  to.data_info = {{"path", fs::absolute(data_dir).string()}, {"format", "fld"}, {"synthetic_seed", 1}};
  const TrainSummary summary = train(cfg, train_set, val_set, to);

  const ModelFile model = load_model_file(summary.model_path);
  const Dataset test = load_split(data_dir.string(), "fld", "test", cfg, false);
  EvalResult result = evaluate_model(model, test, EvalOptions{});
  result.metrics["mean_shape_baseline"] = evaluate_mean_shape(train_set, test).metrics;
  write_report(report_dir.string(), model, test, result, (run_dir / "log.jsonl").string(), 6, "cpu");
  std::printf("%s", result.table.c_str());
  std::printf("held-out synthetic images: ne_image %.4f (mean-shape baseline %.4f), ne_paper %.4f\n",
              result.metrics["ne_image"]["avg"].get<double>(),
              result.metrics["mean_shape_baseline"]["ne_image"]["avg"].get<double>(),
              result.metrics["ne_paper"]["avg"].get<double>());
  return report_dir.string();
}

}  // namespace cspn
