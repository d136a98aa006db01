#include "cspn/engine/run.hpp"

#include <malloc.h>
#include <sched.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
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
#include "cspn/engine/predict.hpp"
#include "cspn/engine/progress.hpp"
#include "cspn/io/atomic_file.hpp"
#include "cspn/metrics.hpp"

namespace fs = std::filesystem;

namespace cspn {
namespace {

Box whole_image(const Sample& s) {
  return {0.0f, 0.0f, static_cast<float>(s.width), static_cast<float>(s.height)};
}


// One training phase's loss curve (log scale, per logged iteration) with the validation NE per
// epoch, as a PNG. False when the log has too little of that phase to draw.
bool plot_log(const std::string& log_path, const std::string& phase, const fs::path& png) {
  std::ifstream in(log_path);
  std::vector<std::pair<double, double>> loss, val;
  std::string line;
  while (std::getline(in, line)) {
    const auto rec = nlohmann::json::parse(line, nullptr, false);
    if (rec.is_discarded() || rec.value("phase", "keypoints") != phase) continue;
    if (rec.value("type", "") == "train") loss.emplace_back(rec["iter"].get<double>(), rec["loss"].get<double>());
    if (rec.value("type", "") == "epoch" && rec.contains("val")) {
      const auto& v = rec["val"];  // the landmark network's NE, or the detector's AP50
      // A validation with no visible landmark has a null NE: nothing to draw for that epoch.
      if (v.contains("ne_image") && v["ne_image"]["avg"].is_number())
        val.emplace_back(rec["epoch"].get<double>(), v["ne_image"]["avg"].get<double>());
      if (v.contains("det_ap50") && v["det_ap50"].is_number())
        val.emplace_back(rec["epoch"].get<double>(), v["det_ap50"].get<double>());
    }
  }
  if (loss.size() < 2) return false;
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
  std::snprintf(text, sizeof text, "%s training loss (log10 %.2f .. %.2f) over %.0f iterations", phase.c_str(), y_lo,
                y_hi, x_max);
  cv::putText(img, text, cv::Point(m, m - 15), cv::FONT_HERSHEY_SIMPLEX, 0.5, cv::Scalar(0, 0, 0), 1, cv::LINE_AA);
  if (!val.empty()) {
    std::string s = phase == "detector" ? "val AP50 by epoch:" : "val ne_image by epoch:";
    for (const auto& [e, v] : val) {
      std::snprintf(text, sizeof text, " %.0f:%.4f", e, v);
      if (s.size() < 90) s += text;
    }
    cv::putText(img, s, cv::Point(m, h - 15), cv::FONT_HERSHEY_SIMPLEX, 0.45, cv::Scalar(0, 0, 160), 1, cv::LINE_AA);
  }
  write_image(png.string(), img);
  return true;
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
                   const Config& cfg, bool skip_bad, const LandmarkSchema* schema) {
  ReadOptions ro;
  ro.schema = schema ? *schema : LandmarkSchema::load(cfg.data.schema);
  ro.skip_bad = skip_bad;
  Dataset data = read_dataset(path, format, ro);
  const bool has_splits = std::any_of(data.samples.begin(), data.samples.end(),
                                      [](const Sample& s) { return s.split != "train"; });
  if (!has_splits && cfg.data.holdout > 0) assign_holdout(data, cfg.data.holdout, cfg.data.holdout_seed);
  Dataset out = select_split(data, split);
  if (out.samples.empty() && data.samples.empty() && !data.skipped.empty())
    throw DataError(path + ": all " + std::to_string(data.skipped.size()) +
                    " records were malformed and skipped; the first: " + data.skipped.front());
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
  write_file_atomically(out / "metrics.json", result.metrics.dump(2) + "\n");
  write_file_atomically(out / "metrics.md", "# Evaluation\n\n```\n" + result.table + "```\n\n" +
                                           "Config:\n\n```yaml\n" + model.config.to_yaml() + "\n```\n");
  if (!run_log.empty() && fs::exists(run_log)) {
    plot_log(run_log, "keypoints", out / "loss.png");
    plot_log(run_log, "detector", out / "loss-detector.png");
  }

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
    write_image((out / "examples" / fs::path(few.samples[sample].image).filename()).string(), img);
}

namespace {

std::string html_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// The demo's report page: the pipeline's answers drawn on photos, the evaluation tables, the loss
// curves, and what to run next.
void write_demo_page(const fs::path& report, const std::string& model_path, size_t scenes, const EvalResult& detected,
                     const EvalResult& gt, const nlohmann::json& predictions, const std::string& photos) {
  std::ostringstream html;
  html << "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>CSPN demo report</title><style>"
          "body{font:15px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222;padding:0 16px}"
          "pre{background:#f4f4f2;padding:10px;overflow:auto;font-size:13px}"
          ".grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(250px,1fr));gap:10px}"
          ".grid figure{margin:0}.grid img{width:100%;border-radius:4px}figcaption{font-size:12px;color:#555}"
          "</style></head><body>\n<h1>CSPN demo: garments and landmarks in photos</h1>\n";
  const auto& m = detected.metrics;
  char summary[512];
  std::snprintf(summary, sizeof summary,
                "On %zu held-out synthetic scenes (%zu garments), the detector finds the garments with AP50 %.3f "
                "(AP %.3f); with its boxes the landmarks land at ne_image %.4f (%.1f px mean error), against "
                "%.4f in the true boxes.",
                scenes, m["garments"].get<size_t>(), m["det_ap50"].is_number() ? m["det_ap50"].get<double>() : 0.0,
                m["det_ap"].is_number() ? m["det_ap"].get<double>() : 0.0, m["ne_image"]["avg"].get<double>(),
                m["epe_px"].get<double>(), gt.metrics["ne_image"]["avg"].get<double>());
  html << "<p>" << summary << " Model: <code>" << html_escape(model_path) << "</code>.</p>\n";
  html << "<h2>Predictions</h2>\n<p>Boxes with category and score; landmarks as dots (filled: visible) with their "
          "names. Held-out synthetic scenes"
       << (photos.empty() ? "" : ", then photos of <code>" + html_escape(photos) +
                                     "</code> (real photos: a model trained only on synthetic garments does poorly "
                                     "on them)")
       << ". All answers: <a href=\"predictions.json\">predictions.json</a>.</p>\n<div class=\"grid\">\n";
  for (const auto& im : predictions["images"]) {
    const fs::path source(im["file_name"].get<std::string>());
    html << "<figure><img src=\"pipeline/" << html_escape(im["rendered"].get<std::string>()) << "\" alt=\"\"><figcaption>"
         << html_escape(source.filename().string()) << ": " << im["garments"].get<size_t>() << " garment(s)</figcaption></figure>\n";
  }
  html << "</div>\n<h2>Evaluation: detected boxes (CSPN)</h2>\n<pre>" << html_escape(detected.table)
       << "</pre>\n<h2>Evaluation: true boxes</h2>\n<pre>" << html_escape(gt.table) << "</pre>\n<h2>Training</h2>\n";
  for (const char* png : {"loss.png", "loss-detector.png"})
    if (fs::exists(report / png)) html << "<p><img src=\"" << png << "\" alt=\"loss curve\" style=\"max-width:100%\"></p>\n";
  html << "<h2>Next</h2>\n<pre>build/cspn serve --model " << html_escape(model_path)
       << "     # then open http://127.0.0.1:8080/\nbuild/cspn predict --model " << html_escape(model_path)
       << " --out rendered/ PHOTOS...\n</pre>\n</body></html>\n";
  write_file_atomically(report / "index.html", html.str());
}

}  // namespace

DemoResult run_demo(const DemoOptions& opt) {
  // Both halves, small enough to learn in a few minutes on two CPU cores: a ResNet-18 CSPN (2 stages,
  // 128x128 crops) for 40% of the budget, then a Faster R-CNN on its backbone for the rest. The
  // synthetic crops are used as generated, as in configs/scenes.yaml.
  static const char* kDemoConfig = R"(
model:
  detector: {enabled: true, backbone: resnet18, backbone_from_keypoints: true, trainable_layers: 4, min_size: 192,
             max_size: 192, anchor_sizes: [32, 64, 128], rpn_post_nms_train: 256, rpn_post_nms_test: 100,
             box_batch: 64, head_dim: 256, detections_per_image: 8}
  keypoints: {backbone: resnet18, stages: 2, channels: 64, input_size: [128, 128], sigma: 2.0}
data: {rotate_aug: 0, scale_aug: 0, shift_aug: 0, occlusion_aug: 0, workers: 1}
train: {optimizer: adam, lr: 0.002, epochs: 40, batch_size: 16, schedule: cosine, warmup_iters: 50, val_every: 2}
train_detector: {optimizer: adam, lr: 0.001, weight_decay: 0.0001, epochs: 40, batch_size: 4, schedule: cosine,
                 warmup_iters: 50, val_every: 40}
test: {flip: true}
)";
  Config cfg;
  cfg.load_yaml_string(kDemoConfig, "built-in demo config");
  cfg.train.time_limit_minutes = static_cast<float>(0.4 * opt.minutes);
  cfg.train_detector.time_limit_minutes = static_cast<float>(0.6 * opt.minutes);
  cfg.validate();

  const fs::path root(opt.out_dir), data_dir = root / "scenes";
  if (!fs::exists(data_dir / "annotations.json")) {
    SynthOptions so;
    so.count = opt.count;
    so.seed = 1;
    so.scenes = true;
    so.width = so.height = 192;
    Progress bar("synth", so.count, "img");
    synthesize(data_dir.string(), so, [&](int done, int) { bar.update(done); });
    bar.finish();
  }
  int n = 1;
  while (fs::exists(root / ("run-" + std::to_string(n)))) ++n;
  const fs::path run_dir = root / ("run-" + std::to_string(n)), report = root / ("report-" + std::to_string(n));

  const Dataset train_set = load_split(data_dir.string(), "coco", "train", cfg, false);
  const Dataset val_set = load_split(data_dir.string(), "coco", "val", cfg, false);
  TrainOptions to;
  to.out_dir = run_dir.string();
  to.data_info = {{"path", fs::absolute(data_dir).string()}, {"format", "coco"}, {"synthetic_seed", 1}};
  const TrainSummary summary = train(cfg, train_set, val_set, to);

  const ModelFile model = load_model_file(summary.model_path);
  const Dataset test = load_split(data_dir.string(), "coco", "test", cfg, false);
  EvalOptions eo;
  eo.boxes = "detector";
  const EvalResult detected = evaluate_model(model, test, eo);
  eo.boxes = "gt";
  const EvalResult gt = evaluate_model(model, test, eo);
  write_report(report.string(), model, test, gt, (run_dir / "log.jsonl").string(), 6, "cpu");

  // The main job: photos in, garments and named landmarks out.
  std::vector<std::string> files;
  for (size_t i = 0; i < test.samples.size() && files.size() < 8; ++i) files.push_back(test.samples[i].image);
  const bool photos = !opt.photos.empty() && fs::is_directory(opt.photos);
  if (photos) {
    const auto found = image_files({opt.photos});
    files.insert(files.end(), found.begin(), found.begin() + std::min<size_t>(found.size(), 6));
  }
  Pipeline pipeline(model, torch::kCPU);
  PredictFilesOptions po;
  po.out_dir = (report / "pipeline").string();
  po.progress = false;
  const nlohmann::json predictions = predict_files(pipeline, files, po);
  write_file_atomically(report / "predictions.json", predictions.dump(2) + "\n");
  write_demo_page(report, summary.model_path, test.samples.size(), detected, gt, predictions, photos ? opt.photos : "");

  std::printf("%s", detected.table.c_str());
  std::printf("held-out synthetic scenes: detector AP50 %.3f; landmarks ne_image %.4f with detected boxes, %.4f with "
              "true boxes\n",
              detected.metrics["det_ap50"].is_number() ? detected.metrics["det_ap50"].get<double>() : 0.0,
              detected.metrics["ne_image"]["avg"].get<double>(), gt.metrics["ne_image"]["avg"].get<double>());
  return {(report / "index.html").string(), summary.model_path};
}

}  // namespace cspn
