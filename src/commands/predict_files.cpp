#include "cspn/commands/predict_files.hpp"

#include <algorithm>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <set>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "cspn/api/json.hpp"
#include "cspn/data/image.hpp"
#include "cspn/data/readers.hpp"
#include "cspn/engine/progress.hpp"

namespace fs = std::filesystem;

namespace cspn {
namespace {

cv::Scalar category_colour(int c) {
  static const cv::Scalar palette[] = {{40, 40, 230}, {230, 120, 30}, {40, 180, 40}, {200, 40, 200}, {30, 200, 220}};
  return palette[c % 5];
}

struct DecodedChunk {
  std::vector<size_t> which;                              // indices into the file list
  std::vector<cv::Mat> images;                            // decoded, one per `which`
  std::vector<std::pair<size_t, std::string>> errors;     // files that could not be decoded
};

DecodedChunk decode_chunk(const std::vector<std::string>& files, size_t first, size_t end) {
  DecodedChunk chunk;
  for (size_t i = first; i < end; ++i) {
    try {
      chunk.images.push_back(read_image(files[i]));
      chunk.which.push_back(i);
    } catch (const std::exception& e) {
      chunk.errors.emplace_back(i, e.what());
    }
  }
  return chunk;
}

// visit(chunk) for consecutive chunks of `files` in order, while up to opt.workers later chunks are
// decoded, each on its own thread.
void for_each_chunk(const std::vector<std::string>& files, const PredictFilesOptions& opt,
                    const std::function<void(DecodedChunk&)>& visit) {
  const size_t size = static_cast<size_t>(std::max(1, opt.chunk));
  const auto policy = opt.workers > 0 ? std::launch::async : std::launch::deferred;
  std::deque<std::future<DecodedChunk>> ahead;
  size_t next = 0;
  const auto launch = [&] {
    const size_t end = std::min(files.size(), next + size);
    ahead.push_back(std::async(policy, decode_chunk, std::cref(files), next, end));
    next = end;
  };
  while (next < files.size() && ahead.size() < static_cast<size_t>(std::max(1, opt.workers))) launch();
  while (!ahead.empty()) {
    DecodedChunk chunk = ahead.front().get();
    ahead.pop_front();
    if (next < files.size()) launch();
    visit(chunk);
  }
}

// Rendered copies of the photos, named after them (stem.jpg, stem-2.jpg on a clash), written
// atomically; never over one of the input photos: a folder that holds any of them is refused
// before the work starts, whatever the names (and the atomic rename replaces a link in the folder,
// never the photo it points to).
class Renderer {
 public:
  Renderer(std::string dir, const LandmarkSchema& schema, const std::vector<std::string>& inputs)
      : dir_(std::move(dir)), schema_(schema) {
    if (dir_.empty()) return;
    fs::create_directories(dir_);
    std::set<fs::path> folders;
    for (const auto& input : inputs) {
      const fs::path folder = fs::path(input).parent_path();
      std::error_code ec;
      if (folders.insert(folder).second && fs::equivalent(folder.empty() ? fs::path(".") : folder, dir_, ec))
        throw std::invalid_argument("--out " + dir_ + ": the folder holds input photos (" + input +
                                    ") that a rendering could overwrite; choose another folder");
    }
  }

  // The rendered file's name in the folder ("" when there is no folder).
  std::string render(const std::string& file, const cv::Mat& image, const std::vector<GarmentPrediction>& garments) {
    if (dir_.empty()) return "";
    const std::string stem = fs::path(file).stem().string();
    std::string name = stem + ".jpg";
    for (int n = 2; used_.count(name); ++n) name = stem + "-" + std::to_string(n) + ".jpg";
    used_.insert(name);
    const fs::path target = fs::path(dir_) / name;
    cv::Mat canvas = image.clone();
    render_garments(canvas, garments, schema_);
    write_image(target.string(), canvas);
    return name;
  }

 private:
  std::string dir_;
  const LandmarkSchema& schema_;
  std::set<std::string> used_;
};

// The files an existing JSON Lines output already answers. A last line without its newline (a run
// killed mid-write) is cut off; any other line that is not JSON is an error naming it.
std::set<std::string> files_in_jsonl(const std::string& path) {
  std::set<std::string> done;
  std::ifstream in(path, std::ios::binary);
  if (!in) return done;
  std::streamoff complete = 0;  // bytes up to the end of the last whole line
  size_t line_no = 0;
  for (std::string line; std::getline(in, line);) {
    if (in.eof()) break;  // no newline after it: cut short by a kill
    ++line_no;
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("file") || !j["file"].is_string())
      throw DataError(path + ":" + std::to_string(line_no) + ": not a line of cspn predict --jsonl; remove it to resume");
    done.insert(j["file"].get<std::string>());
    complete = in.tellg();
  }
  in.close();
  if (static_cast<std::uintmax_t>(complete) < fs::file_size(path)) fs::resize_file(path, static_cast<std::uintmax_t>(complete));
  return done;
}

}  // namespace

std::vector<std::string> read_list_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::invalid_argument(path + ": cannot open list file");
  const fs::path base = fs::path(path).parent_path();
  std::vector<std::string> files;
  for (std::string line; std::getline(in, line);) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    files.push_back(fs::path(line).is_absolute() ? line : (base / line).string());
  }
  return files;
}

size_t drop_duplicates(std::vector<std::string>& files) {
  std::set<std::string> seen;
  std::vector<std::string> kept;
  for (auto& f : files) {
    std::error_code error;  // a missing file: its path as given (predict reports it)
    fs::path key = fs::weakly_canonical(fs::absolute(f), error);
    if (error) key = fs::absolute(f).lexically_normal();
    if (seen.insert(key.string()).second) kept.push_back(std::move(f));
  }
  const size_t dropped = files.size() - kept.size();
  files = std::move(kept);
  return dropped;
}

std::vector<std::string> shard_files(const std::vector<std::string>& files, int index, int count) {
  if (count < 1 || index < 0 || index >= count)
    throw std::invalid_argument("--shard " + std::to_string(index) + "/" + std::to_string(count) +
                                ": need 0 <= I < N");
  std::vector<std::string> mine;
  for (const auto& f : files) {
    std::uint64_t h = 1469598103934665603ULL;  // FNV-1a
    for (unsigned char c : f) h = (h ^ c) * 1099511628211ULL;
    if (h % static_cast<std::uint64_t>(count) == static_cast<std::uint64_t>(index)) mine.push_back(f);
  }
  return mine;
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

nlohmann::json predict_files(Pipeline& pipeline, const std::vector<std::string>& files, const PredictFilesOptions& opt) {
  nlohmann::json images = nlohmann::json::array(), annotations = nlohmann::json::array(),
                 errors = nlohmann::json::array();
  Renderer renderer(opt.out_dir, pipeline.schema(), files);
  Progress bar("predict", files.size(), "img", opt.progress);
  size_t done = 0;
  for_each_chunk(files, opt, [&](DecodedChunk& chunk) {
    for (auto& [i, message] : chunk.errors) errors.push_back({{"file", files[i]}, {"error", message}});
    const auto garments = pipeline.predict(chunk.images);
    for (size_t j = 0; j < chunk.images.size(); ++j) {
      const int id = static_cast<int>(chunk.which[j]) + 1;
      nlohmann::json image = {{"id", id}, {"file_name", files[chunk.which[j]]}, {"width", chunk.images[j].cols},
                               {"height", chunk.images[j].rows}, {"garments", garments[j].size()}};
      const std::string rendered = renderer.render(files[chunk.which[j]], chunk.images[j], garments[j]);
      if (!rendered.empty()) image["rendered"] = rendered;
      images.push_back(std::move(image));
      for (const auto& g : garments[j]) {
        nlohmann::json a = {{"image_id", id}};
        a.update(garment_json(g, pipeline.schema()));
        annotations.push_back(std::move(a));
      }
    }
    done += chunk.which.size() + chunk.errors.size();
    bar.update(done);
  });
  bar.finish();
  return {{"images", images}, {"categories", categories_json(pipeline.schema())}, {"annotations", annotations},
          {"errors", errors}};
}

JsonlSummary predict_jsonl(Pipeline& pipeline, const std::vector<std::string>& files, const std::string& path,
                           const PredictFilesOptions& opt) {
  JsonlSummary summary;
  const std::set<std::string> done = files_in_jsonl(path);
  std::vector<std::string> todo;
  for (const auto& f : files) {
    if (done.count(f))
      ++summary.done_before;
    else
      todo.push_back(f);
  }
  Renderer renderer(opt.out_dir, pipeline.schema(), files);
  std::ofstream out(path, std::ios::app | std::ios::binary);
  if (!out) throw IoError("cannot write " + path + ": cannot open it for appending");
  Progress bar("predict", todo.size(), "img", opt.progress);
  for_each_chunk(todo, opt, [&](DecodedChunk& chunk) {
    std::string lines;
    for (auto& [i, message] : chunk.errors) {
      lines += nlohmann::json{{"file", todo[i]}, {"error", message}}.dump() + "\n";
      ++summary.errors;
    }
    const auto garments = pipeline.predict(chunk.images);
    for (size_t j = 0; j < chunk.images.size(); ++j) {
      nlohmann::json list = nlohmann::json::array();
      for (const auto& g : garments[j]) list.push_back(garment_json(g, pipeline.schema()));
      lines += nlohmann::json{{"file", todo[chunk.which[j]]}, {"width", chunk.images[j].cols},
                              {"height", chunk.images[j].rows}, {"garments", list}}.dump() + "\n";
      renderer.render(todo[chunk.which[j]], chunk.images[j], garments[j]);
    }
    out << lines << std::flush;
    if (!out) throw IoError("cannot write " + path + ": write failed (disk full?); rerun to continue from the last full line");
    summary.written += chunk.which.size() + chunk.errors.size();
    bar.update(summary.written);
  });
  bar.finish();
  return summary;
}

}  // namespace cspn
