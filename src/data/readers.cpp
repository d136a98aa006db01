// Reader plumbing shared by all formats: parsing helpers and the per-sample checks.
#include "cspn/data/readers.hpp"

#include "cspn/core/util.hpp"
#include "cspn/data/image.hpp"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "reader_common.hpp"

namespace cspn {
namespace fs = std::filesystem;

namespace data_detail {
namespace {

// A labelled keypoint may sit a little outside the image (annotators click at the border), but
// one further out than this fraction of the image size is a wrong coordinate system or a typo.
constexpr double kKeypointMargin = 0.1;
// Boxes are in pixel corners; rounding in converters moves them up to a pixel past the border.
constexpr double kBoxTolerance = 1.0;

std::string fmt(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

std::string box_text(const Box& b) {
  return "[" + fmt(b.x1) + ", " + fmt(b.y1) + ", " + fmt(b.x2) + ", " + fmt(b.y2) + "]";
}

}  // namespace

std::string at(const std::string& file, std::size_t line) { return file + ":" + std::to_string(line); }

void fail(const std::string& where, const std::string& what) { throw DataError(where + ": " + what); }

bool parse_number(std::string_view token, double& out) {
  if (!token.empty() && token.front() == '+') token.remove_prefix(1);
  if (token.empty()) return false;
  const auto [end, ec] = std::from_chars(token.data(), token.data() + token.size(), out);
  return ec == std::errc() && end == token.data() + token.size() && std::isfinite(out);
}

double number(std::string_view token, const std::string& where, const std::string& field) {
  double v = 0;
  if (!parse_number(token, v)) fail(where, field + ": expected a number, got '" + std::string(token) + "'");
  return v;
}

int whole_number(std::string_view token, const std::string& where, const std::string& field, int lo, int hi) {
  const double v = number(token, where, field);
  if (v != std::floor(v) || v < lo || v > hi)
    fail(where, field + ": expected a whole number in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got '" +
                    std::string(token) + "'");
  return static_cast<int>(v);
}

std::vector<std::string_view> split_whitespace(std::string_view line) {
  std::vector<std::string_view> out;
  std::size_t i = 0;
  const auto space = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f'; };
  while (i < line.size()) {
    while (i < line.size() && space(line[i])) ++i;
    const std::size_t start = i;
    while (i < line.size() && !space(line[i])) ++i;
    if (i > start) out.push_back(line.substr(start, i - start));
  }
  return out;
}

std::vector<std::string_view> split_char(std::string_view line, char sep) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  std::vector<std::string_view> out;
  std::size_t start = 0;
  for (;;) {
    const std::size_t end = line.find(sep, start);
    out.push_back(line.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
    if (end == std::string_view::npos) return out;
    start = end + 1;
  }
}

CsvHeader::CsvHeader(const std::string& file, std::string_view line) : file_(file), names_(split_char(line, ',')) {
  for (std::size_t c = 0; c < names_.size(); ++c)
    if (!index_.emplace(names_[c], c).second)
      throw DataError(at(file, 1) + ": duplicate column '" + std::string(names_[c]) + "'");
}

std::size_t CsvHeader::column(const std::string& name, const std::string& hint) const {
  const auto it = index_.find(name);
  if (it == index_.end()) throw DataError(at(file_, 1) + ": missing column '" + name + "'" + (hint.empty() ? "" : " " + hint));
  return it->second;
}

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw DataError(path + ": cannot open annotation file");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw DataError(path + ": invalid JSON: " + e.what());
  }
}

bool coco_visibility(double v, Visibility& out) {
  if (v != 0 && v != 1 && v != 2) return false;
  out = v == 2 ? Visibility::Visible : v == 1 ? Visibility::Occluded : Visibility::Absent;
  return true;
}

int coco_visibility(Visibility v) { return v == Visibility::Visible ? 2 : v == Visibility::Occluded ? 1 : 0; }

std::string relative_image(const std::string& root, const std::string& image) {
  const fs::path rel = fs::absolute(image).lexically_normal().lexically_relative(fs::absolute(root).lexically_normal());
  if (rel.empty() || *rel.begin() == "..")
    throw std::invalid_argument("writing " + root + ": image " + image + " is not under it");
  return rel.generic_string();
}

std::string category_list(const LandmarkSchema& schema) {
  std::string out;
  for (const auto& c : schema.categories)
    out += (out.empty() ? "" : ", ") + (c.id > 0 ? std::to_string(c.id) + " " : std::string()) + c.name;
  return out;
}

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw DataError(path + ": cannot open annotation file");
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(std::move(line));
  return lines;
}

std::string file_or_only_child(const std::string& path, const std::string& ext) {
  if (!fs::is_directory(path)) {
    if (!fs::exists(path)) throw DataError(path + ": no such file or folder");
    return path;
  }
  std::vector<std::string> found;
  for (const auto& entry : fs::directory_iterator(path))
    if (entry.is_regular_file() && entry.path().extension() == "." + ext) found.push_back(entry.path().string());
  if (found.size() == 1) return found.front();
  if (found.empty()) throw DataError(path + ": folder holds no *." + ext + " file");
  std::string names;
  for (const auto& f : found) names += " " + fs::path(f).filename().string();
  throw DataError(path + ": folder holds " + std::to_string(found.size()) + " *." + ext +
                  " files, expected exactly one (found:" + names + "); pass the file itself");
}

CsvTable read_csv_table(const std::string& path) {
  std::vector<std::string> lines = read_lines(path);
  if (lines.empty()) throw DataError(path + ": empty file, expected a header row");
  CsvHeader header(path, lines[0]);
  return {path, std::move(lines), std::move(header)};
}

void add_garment(Sample& s, Garment g, const LandmarkSchema& schema, const ReadOptions& opt) {
  if (opt.garment_left.value_or(false)) mirror_left_right(g, schema);
  s.garments.push_back(std::move(g));
}

void add_sample(Dataset& data, Sample s, const ReadOptions& opt, const std::string& box_where) {
  finish_sample(s, data.schema, opt, box_where);
  data.samples.push_back(std::move(s));
}

void mirror_left_right(Garment& g, const LandmarkSchema& schema) {
  std::vector<Keypoint> mirrored(g.keypoints.size());
  for (std::size_t k = 0; k < g.keypoints.size(); ++k) mirrored[schema.flip[k]] = g.keypoints[k];
  g.keypoints = std::move(mirrored);
}

void finish_sample(Sample& s, const LandmarkSchema& schema, const ReadOptions& opt, const std::string& box_where) {
  if (opt.check_images) {
    std::pair<int, int> size;
    try {
      size = image_size(s.image);
    } catch (const DataError& e) {
      fail(s.where, e.what());
    }
    if (s.width > 0 && (s.width != size.first || s.height != size.second))
      fail(s.where, "image " + s.image + " is " + std::to_string(size.first) + "x" + std::to_string(size.second) +
                        " but the annotation says " + std::to_string(s.width) + "x" + std::to_string(s.height));
    s.width = size.first;
    s.height = size.second;
  }
  const bool sized = s.width > 0 && s.height > 0;
  const std::string image_dims = std::to_string(s.width) + "x" + std::to_string(s.height);
  const int num_slots = schema.num_landmarks();
  for (std::size_t gi = 0; gi < s.garments.size(); ++gi) {
    Garment& g = s.garments[gi];
    const std::string who = s.garments.size() > 1 ? "garment " + std::to_string(gi) + ": " : "";
    if (g.category < 0 || g.category >= schema.num_categories())
      fail(s.where, who + "category index " + std::to_string(g.category) + " outside the schema's " +
                        std::to_string(schema.num_categories()));
    if (static_cast<int>(g.keypoints.size()) != num_slots)
      fail(s.where, who + std::to_string(g.keypoints.size()) + " keypoints, expected " + std::to_string(num_slots));
    const Box& b = g.box;
    const std::string& bw = box_where.empty() ? s.where : box_where;
    if (!(b.x2 > b.x1 && b.y2 > b.y1)) fail(bw, who + "empty box " + box_text(b));
    if (sized && (b.x1 < -kBoxTolerance || b.y1 < -kBoxTolerance || b.x2 > s.width + kBoxTolerance ||
                  b.y2 > s.height + kBoxTolerance))
      fail(bw, who + "box " + box_text(b) + " lies outside the " + image_dims + " image (" + s.image + ")");

    std::vector<bool> has(num_slots, false);
    for (int k : schema.categories[g.category].landmarks) has[k] = true;
    for (int k = 0; k < num_slots; ++k) {
      Keypoint& p = g.keypoints[k];
      if (p.v == Visibility::Absent) {
        p.x = p.y = 0;  // absent landmarks carry no position
        continue;
      }
      if (!has[k])
        fail(s.where, who + schema.landmarks[k] + " is labelled but category " + schema.categories[g.category].name +
                          " has no such landmark");
      const double mx = kKeypointMargin * s.width, my = kKeypointMargin * s.height;
      if (sized && (p.x < -mx || p.y < -my || p.x > s.width + mx || p.y > s.height + my))
        fail(s.where, who + schema.landmarks[k] + " at (" + fmt(p.x) + ", " + fmt(p.y) + ") is far outside the " +
                          image_dims + " image");
    }
  }
}

}  // namespace data_detail

}  // namespace cspn
