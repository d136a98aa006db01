#include "label_store.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "cspn/core/errors.hpp"
#include "cspn/core/io/atomic_file.hpp"
#include "cspn/data/image.hpp"
#include "cspn/data/readers.hpp"
#include "cspn/engine/mean_shape.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace cspn {
namespace {

std::string normal(const std::string& path) { return fs::absolute(path).lexically_normal().string(); }

// file_name as written: relative to the file's folder where the photo lies under it, else absolute.
std::string file_name_for(const std::string& out, const std::string& image) {
  const fs::path rel = fs::path(image).lexically_relative(fs::absolute(out).parent_path().lexically_normal());
  return rel.empty() || *rel.begin() == ".." ? image : rel.generic_string();
}

// Box and landmarks inside the image: what `cspn train` reads back without complaint.
void clamp_to_image(Garment& g, int width, int height) {
  const auto clamp = [](float v, int hi) { return std::min(std::max(v, 0.0f), static_cast<float>(hi)); };
  g.box = {clamp(g.box.x1, width), clamp(g.box.y1, height), clamp(g.box.x2, width), clamp(g.box.y2, height)};
  for (auto& p : g.keypoints)
    if (p.v != Visibility::Absent) p = {clamp(p.x, width), clamp(p.y, height), p.v};
}

}  // namespace

const char* status_name(LabelStatus s) {
  return s == LabelStatus::Labelled ? "labelled" : s == LabelStatus::Skipped ? "skipped" : "left";
}

LabelStore::LabelStore(const std::string& images, const std::string& out, LandmarkSchema schema)
    : schema_(std::move(schema)), images_(normal(images)), out_(normal(out)) {
  if (!fs::is_directory(images_)) throw std::invalid_argument("--images " + images + ": not a folder");
  std::map<std::string, size_t> by_path;
  const std::string runs = runs_folder() + "/";
  for (const std::string& file : image_files({images_})) {
    std::string ext = fs::path(file).extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
    const bool shown = ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".webp" || ext == ".bmp";
    if (!shown || normal(file).rfind(runs, 0) == 0) continue;  // what a browser shows; not the runs' links
    LabelEntry e;
    e.path = normal(file);
    e.name = fs::path(e.path).lexically_relative(images_).generic_string();
    by_path.emplace(e.path, entries_.size());
    entries_.push_back(std::move(e));
  }
  if (entries_.empty()) throw std::invalid_argument("--images " + images + ": no image files in it");
  if (!fs::exists(out_)) return;

  std::ifstream in(out_);
  json doc;
  try {
    doc = json::parse(in);
  } catch (const json::exception& e) {
    throw DataError(out_ + ": not JSON (" + std::string(e.what()) + "); move it away to start a new file");
  }
  ReadOptions ro;
  ro.schema = schema_;
  ro.check_images = false;  // photos that moved away keep their labels
  const Dataset saved = read_coco(out_, ro);
  const json state = doc.value("cspn_label", json::object());
  const json versions = state.value("versions", json::object());
  const auto version_of = [&](const std::string& name) {
    const auto it = versions.find(name);
    return it != versions.end() && it->is_number_integer() ? it->get<int>() : 1;
  };
  for (const Sample& s : saved.samples) {
    const auto it = by_path.find(normal(s.image));
    if (it == by_path.end()) {
      kept_.push_back(s);
      continue;
    }
    LabelEntry& e = entries_[it->second];
    e.status = LabelStatus::Labelled;
    e.garments = s.garments;
    e.width = s.width;
    e.height = s.height;
    e.version = version_of(e.name);
  }
  for (const auto& name : state.value("skipped", json::array())) {
    if (!name.is_string()) continue;
    const auto it = by_path.find(normal((fs::path(images_) / name.get<std::string>()).string()));
    if (it == by_path.end() || entries_[it->second].status != LabelStatus::Left) continue;
    entries_[it->second].status = LabelStatus::Skipped;
    entries_[it->second].version = version_of(name.get<std::string>());
  }
}

std::string LabelStore::runs_folder() const { return fs::path(out_).replace_extension("").string() + "-runs"; }

LabelEntry LabelStore::entry(size_t i) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return entries_.at(i);
}

cv::Mat LabelStore::load(size_t i) {
  const std::string path = entry(i).path;
  cv::Mat image;
  std::string error;
  try {
    image = read_image(path);
  } catch (const std::exception& e) {
    error = e.what();
  }
  std::lock_guard<std::mutex> lock(mutex_);
  LabelEntry& e = entries_.at(i);
  e.error = error;
  if (!image.empty()) {
    e.width = image.cols;
    e.height = image.rows;
  }
  return image;
}

void LabelStore::suggest(size_t i, std::vector<GarmentPrediction> garments, std::optional<float> uncertainty) {
  std::lock_guard<std::mutex> lock(mutex_);
  entries_.at(i).suggestion = std::move(garments);
  entries_.at(i).uncertainty = uncertainty;
}

std::optional<int> LabelStore::save(size_t i, int version, LabelStatus status, std::vector<Garment> garments) {
  std::lock_guard<std::mutex> lock(mutex_);
  LabelEntry& e = entries_.at(i);
  if (version != e.version) return std::nullopt;
  if (!e.error.empty()) throw std::invalid_argument(e.name + " cannot be decoded: " + e.error);
  for (size_t g = 0; g < garments.size(); ++g) {
    clamp_to_image(garments[g], e.width, e.height);
    if (!(garments[g].box.width() >= 1 && garments[g].box.height() >= 1))
      throw std::invalid_argument("garments[" + std::to_string(g) + "]: the box lies outside the " +
                                  std::to_string(e.width) + "x" + std::to_string(e.height) + " photo");
  }
  LabelEntry before = e;
  e.status = status;
  e.garments = status == LabelStatus::Labelled ? std::move(garments) : std::vector<Garment>{};
  ++e.version;
  try {
    write();
  } catch (...) {
    e = std::move(before);  // the file kept its old content: so does the page's view of it
    throw;
  }
  return e.version;
}

void LabelStore::write() const {
  Dataset data{schema_, kept_, {}};
  json skipped = json::array(), versions = json::object();
  for (const LabelEntry& e : entries_) {
    if (e.version > 0) versions[e.name] = e.version;
    if (e.status == LabelStatus::Skipped) skipped.push_back(e.name);
    if (e.status != LabelStatus::Labelled) continue;
    Sample s;
    s.image = e.path;
    s.width = e.width;
    s.height = e.height;
    s.split = "train";
    s.garments = e.garments;
    data.samples.push_back(std::move(s));
  }
  json doc = coco_json(data, [&](const Sample& s) { return file_name_for(out_, s.image); }, "cspn label", 0);
  doc["cspn_label"] = {{"images", images_}, {"skipped", skipped}, {"versions", versions}};
  write_file_atomically(out_, doc.dump(1) + "\n");
}

std::vector<size_t> LabelStore::order(bool by_uncertainty) const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<size_t> idx(entries_.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  const auto rank = [&](size_t i) {
    const LabelEntry& e = entries_[i];
    if (!e.error.empty()) return -2.0f;
    if (!by_uncertainty) return 0.0f;
    if (e.status != LabelStatus::Left) return -1.0f;
    return e.uncertainty ? *e.uncertainty : e.suggestion.empty() ? INFINITY : 0.0f;
  };
  std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return rank(a) > rank(b); });
  return idx;
}

std::vector<std::string> LabelStore::left_photos() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<std::string> out;
  for (const LabelEntry& e : entries_)
    if (e.status == LabelStatus::Left && e.error.empty()) out.push_back(e.path);
  return out;
}

json LabelStore::mean_layout() const {
  Dataset saved{schema_, {}, {}};
  std::set<int> seen;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const LabelEntry& e : entries_)
      if (e.status == LabelStatus::Labelled) {
        saved.samples.push_back({e.path, e.width, e.height, "train", e.garments, ""});
        for (const auto& g : e.garments)
          if (has_landmarks(g)) seen.insert(g.category);
      }
  }
  json out = json::object();
  for (int c = 0; c < schema_.num_categories(); ++c) {
    const auto& slots = schema_.categories[c].landmarks;
    json layout = json::object();
    if (seen.count(c)) {
      const torch::Tensor unit = MeanShape(saved).predict({{0, -1, c, {0, 0, 1, 1}}})[0];
      for (int k : slots) layout[schema_.landmarks[k]] = {unit[k][0].item<float>(), unit[k][1].item<float>()};
    } else {
      // Each left/right pair at mirrored angles of an ellipse, the others down its middle.
      std::vector<int> firsts;
      for (int k : slots)
        if (schema_.flip[k] >= k) firsts.push_back(k);
      for (size_t j = 0; j < firsts.size(); ++j) {
        const int k = firsts[j];
        const float t = (j + 0.5f) / firsts.size();
        if (schema_.flip[k] == k) {
          layout[schema_.landmarks[k]] = {0.5f, 0.1f + 0.8f * t};
          continue;
        }
        const float angle = static_cast<float>(M_PI) * (0.1f + 0.8f * t);
        const float x = 0.5f - 0.4f * std::sin(angle), y = 0.5f - 0.4f * std::cos(angle);
        layout[schema_.landmarks[k]] = {x, y};
        if (std::find(slots.begin(), slots.end(), schema_.flip[k]) != slots.end())
          layout[schema_.landmarks[schema_.flip[k]]] = {1 - x, y};
      }
    }
    out[schema_.categories[c].name] = layout;
  }
  return out;
}

}  // namespace cspn
