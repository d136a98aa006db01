#include "cspn/engine/predict.hpp"

#include <algorithm>
#include <filesystem>
#include <set>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "cspn/data/readers.hpp"
#include "cspn/engine/progress.hpp"

namespace fs = std::filesystem;

namespace cspn {
namespace {

bool has_image_extension(const fs::path& p) {
  static const std::set<std::string> known{".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"};
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return known.count(ext) > 0;
}

cv::Scalar category_colour(int c) {
  static const cv::Scalar palette[] = {{40, 40, 230}, {230, 120, 30}, {40, 180, 40}, {200, 40, 200}, {30, 200, 220}};
  return palette[c % 5];
}

nlohmann::json garment_json(const GarmentPrediction& g, const LandmarkSchema& schema, int image_id) {
  nlohmann::json keypoints = nlohmann::json::array(), named = nlohmann::json::object();
  const auto& in_category = schema.categories[g.category].landmarks;
  for (int k = 0; k < schema.num_landmarks(); ++k) {
    const LandmarkPoint& p = g.landmarks[k];
    const bool ours = std::find(in_category.begin(), in_category.end(), k) != in_category.end();
    // COCO visibility: 2 visible, 1 predicted but below test.visible_score, 0 not in the category.
    keypoints.insert(keypoints.end(), {ours ? p.x : 0.0f, ours ? p.y : 0.0f, ours ? (p.visible ? 2 : 1) : 0});
    if (ours) named[schema.landmarks[k]] = {{"x", p.x}, {"y", p.y}, {"score", p.score}, {"visible", p.visible}};
  }
  return {{"image_id", image_id},
          {"category_id", g.category + 1},
          {"category", schema.categories[g.category].name},
          {"bbox", {g.box.x1, g.box.y1, g.box.width(), g.box.height()}},
          {"score", g.score},
          {"keypoints", keypoints},
          {"landmarks", named}};
}

}  // namespace

std::vector<std::string> image_files(const std::vector<std::string>& inputs) {
  std::vector<std::string> files;
  for (const auto& input : inputs) {
    const fs::path p(input);
    if (fs::is_directory(p)) {
      std::vector<std::string> found;
      for (const auto& entry : fs::recursive_directory_iterator(p))
        if (entry.is_regular_file() && has_image_extension(entry.path())) found.push_back(entry.path().string());
      std::sort(found.begin(), found.end());
      files.insert(files.end(), found.begin(), found.end());
    } else {
      files.push_back(input);  // a missing or unreadable file is reported by predict_files
    }
  }
  return files;
}

void render_garments(cv::Mat& bgr, const std::vector<GarmentPrediction>& garments, const LandmarkSchema& schema) {
  const double unit = std::max(1.0, std::min(bgr.cols, bgr.rows) / 400.0);
  const int thick = std::max(1, static_cast<int>(unit * 1.5));
  for (const auto& g : garments) {
    const cv::Scalar colour = category_colour(g.category);
    cv::rectangle(bgr, cv::Point2f(g.box.x1, g.box.y1), cv::Point2f(g.box.x2, g.box.y2), colour, thick, cv::LINE_AA);
    char label[64];
    std::snprintf(label, sizeof label, "%s %.2f", schema.categories[g.category].name.c_str(), g.score);
    cv::putText(bgr, label, cv::Point2f(g.box.x1 + 3, std::max(g.box.y1 - 4 * static_cast<float>(unit), 12.0f)),
                cv::FONT_HERSHEY_SIMPLEX, 0.45 * unit, colour, thick, cv::LINE_AA);
    for (int k : schema.categories[g.category].landmarks) {
      const LandmarkPoint& p = g.landmarks[k];
      const cv::Point2f at(p.x, p.y);
      cv::circle(bgr, at, static_cast<int>(3 * unit), colour, p.visible ? cv::FILLED : thick, cv::LINE_AA);
      cv::putText(bgr, schema.landmarks[k], at + cv::Point2f(4 * static_cast<float>(unit), 0),
                  cv::FONT_HERSHEY_SIMPLEX, 0.35 * unit, colour, 1, cv::LINE_AA);
    }
  }
}

nlohmann::json predict_files(Pipeline& pipeline, const std::vector<std::string>& files, const PredictOptions& opt) {
  const LandmarkSchema& schema = pipeline.schema();
  nlohmann::json images = nlohmann::json::array(), annotations = nlohmann::json::array(),
                 errors = nlohmann::json::array(), categories = nlohmann::json::array();
  for (int c = 0; c < schema.num_categories(); ++c) {
    nlohmann::json names = nlohmann::json::array();
    for (int k : schema.categories[c].landmarks) names.push_back(schema.landmarks[k]);
    categories.push_back({{"id", c + 1}, {"name", schema.categories[c].name}, {"landmarks", names}});
  }
  if (!opt.out_dir.empty()) fs::create_directories(opt.out_dir);
  std::set<std::string> rendered_names;
  Progress bar("predict", files.size(), "img", opt.progress);
  const size_t chunk = static_cast<size_t>(std::max(1, opt.chunk));
  for (size_t first = 0; first < files.size(); first += chunk) {
    std::vector<cv::Mat> decoded;
    std::vector<size_t> which;
    for (size_t i = first; i < std::min(files.size(), first + chunk); ++i) {
      try {
        decoded.push_back(read_image(files[i]));
        which.push_back(i);
      } catch (const std::exception& e) {
        errors.push_back({{"file", files[i]}, {"error", e.what()}});
      }
    }
    const auto garments = pipeline.predict(decoded);
    for (size_t j = 0; j < decoded.size(); ++j) {
      const int id = static_cast<int>(which[j]) + 1;
      images.push_back({{"id", id}, {"file_name", files[which[j]]}, {"width", decoded[j].cols},
                        {"height", decoded[j].rows}, {"garments", garments[j].size()}});
      for (const auto& g : garments[j]) annotations.push_back(garment_json(g, schema, id));
      if (opt.out_dir.empty()) continue;
      cv::Mat canvas = decoded[j].clone();
      render_garments(canvas, garments[j], schema);
      std::string name = fs::path(files[which[j]]).stem().string() + ".jpg";
      for (int n = 2; rendered_names.count(name); ++n)
        name = fs::path(files[which[j]]).stem().string() + "-" + std::to_string(n) + ".jpg";
      rendered_names.insert(name);
      const fs::path target = fs::path(opt.out_dir) / name;
      const fs::path tmp = target.string() + ".tmp.jpg";
      if (!cv::imwrite(tmp.string(), canvas)) throw std::runtime_error("cannot write " + tmp.string());
      fs::rename(tmp, target);
    }
    bar.update(std::min(files.size(), first + chunk));
  }
  bar.finish();
  return {{"images", images}, {"categories", categories}, {"annotations", annotations}, {"errors", errors}};
}

}  // namespace cspn
