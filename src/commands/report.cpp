#include "cspn/commands/report.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include <opencv2/imgproc.hpp>

#include "cspn/core/io/atomic_file.hpp"
#include "cspn/core/runtime.hpp"
#include "cspn/data/image.hpp"
#include "cspn/engine/landmark_predictor.hpp"

namespace fs = std::filesystem;

namespace cspn {
namespace {

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
  LandmarkPredictor predictor = LandmarkPredictor::from_model_file(model, parse_device(device));
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

}  // namespace cspn
