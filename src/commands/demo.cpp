#include "cspn/commands/demo.hpp"

#include <cmath>
#include <filesystem>
#include <sstream>

#include "cspn/api/pipeline.hpp"
#include "cspn/commands/predict_files.hpp"
#include "cspn/commands/report.hpp"
#include "cspn/core/io/atomic_file.hpp"
#include "cspn/data/readers.hpp"
#include "cspn/data/synth.hpp"
#include "cspn/engine/evaluate.hpp"
#include "cspn/engine/progress.hpp"
#include "cspn/engine/train.hpp"
#include "demo_config.hpp"

namespace fs = std::filesystem;

namespace cspn {
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
                scenes, m["garments"].get<size_t>(), metric_value(m["det_ap50"]), metric_value(m["det_ap"]), metric_value(m["ne_image"]["avg"]),
                metric_value(m["epe_px"]), metric_value(gt.metrics["ne_image"]["avg"]));
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
  Config base;
  base.load_yaml_string(builtin_demo_config(), "configs/demo.yaml (built in)");
  base.train.time_limit_minutes = static_cast<float>(0.4 * opt.minutes);
  base.train_detector.time_limit_minutes = static_cast<float>(0.6 * opt.minutes);
  const Config cfg = Config::resolve("", {}, base);

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

  const Splits splits = read_splits(data_dir.string(), "coco", cfg, false);
  const Dataset& train_set = splits.get("train");
  const Dataset& val_set = splits.get("val");
  TrainOptions to;
  to.out_dir = run_dir.string();
  to.data_info = {{"path", fs::absolute(data_dir).string()}, {"format", "coco"}, {"synthetic_seed", 1}};
  const TrainSummary summary = train(cfg, train_set, val_set, to);

  const ModelFile model = load_model_file(summary.model_path);
  const Dataset& test = splits.get("test");
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
              metric_value(detected.metrics["det_ap50"]), metric_value(detected.metrics["ne_image"]["avg"]),
              metric_value(gt.metrics["ne_image"]["avg"]));
  return {(report / "index.html").string(), summary.model_path};
}

}  // namespace cspn
