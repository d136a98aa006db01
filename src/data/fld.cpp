// DeepFashion's layout (the Fashion Landmark Detection benchmark, and Category & Attribute
// Prediction, `deepfashion-c`, whose landmark file has the same rows). Every list file is
//   line 1: row count, line 2: column names, then one whitespace-separated row per image.
// list_landmarks.txt rows: image_name clothes_type variation_type, then per landmark of the
// clothes type (the schema category with that id; deepfashion: 1 upper 6, 2 lower 4, 3 full 8,
// in the category's order) visibility x y, with visibility 0 visible, 1 occluded, 2 truncated.
// Some copies (Category & Attribute's) pad every row to 8 landmarks; both forms are read.
#include <algorithm>
#include <climits>
#include <cstdio>
#include <cmath>
#include <filesystem>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "cspn/core/io/atomic_file.hpp"
#include "cspn/data/readers.hpp"
#include "reader_common.hpp"

namespace cspn {
namespace fs = std::filesystem;
using namespace data_detail;

namespace {

struct Row {
  std::size_t line = 0;  // 1-based line number in the file
  std::vector<std::string_view> fields;
};

struct ListFile {
  std::string path;
  std::vector<std::string> lines;  // owns the text the rows' fields point into
  std::vector<Row> rows;
};

// Reads a list file and checks its count line against the rows found (blank lines ignored).
void read_list(const std::string& path, const ReadOptions& opt, Dataset& data, ListFile& f) {
  f.path = path;
  f.lines = read_lines(path);
  if (f.lines.size() < 2)
    throw DataError(path + ": expected a count line and a header line, the file has " + std::to_string(f.lines.size()) +
                    " lines");
  for (std::size_t i = 2; i < f.lines.size(); ++i) {
    auto fields = split_whitespace(f.lines[i]);
    if (!fields.empty()) f.rows.push_back({i + 1, std::move(fields)});
  }
  guarded(opt, data, [&] {
    const auto count = split_whitespace(f.lines[0]);
    if (count.size() != 1) fail(at(path, 1), "expected the row count alone, got '" + f.lines[0] + "'");
    const int n = whole_number(count[0], at(path, 1), "row count", 0, INT_MAX);
    if (static_cast<std::size_t>(n) != f.rows.size())
      fail(at(path, 1),
           "count line says " + std::to_string(n) + " rows, the file has " + std::to_string(f.rows.size()));
  });
}

// Rows keyed by image name; each must have `num_fields` fields (`layout` names them).
std::unordered_map<std::string_view, const Row*> index_rows(const ListFile& f, std::size_t num_fields,
                                                            const std::string& layout, const ReadOptions& opt,
                                                            Dataset& data) {
  std::unordered_map<std::string_view, const Row*> index;
  for (const Row& row : f.rows) {
    guarded(opt, data, [&] {
      const std::string where = at(f.path, row.line);
      if (row.fields.size() != num_fields)
        fail(where, "expected " + std::to_string(num_fields) + " fields (" + layout + "), got " +
                        std::to_string(row.fields.size()));
      const auto [it, inserted] = index.emplace(row.fields[0], &row);
      if (!inserted)
        fail(where, "duplicate image '" + std::string(row.fields[0]) + "' (first at line " +
                        std::to_string(it->second->line) + ")");
    });
  }
  return index;
}

}  // namespace

Dataset read_fld(const std::string& root, const ReadOptions& opt) {
  Dataset data{opt.schema, {}, {}};
  const LandmarkSchema& schema = data.schema;
  if (std::none_of(schema.categories.begin(), schema.categories.end(), [](const Category& c) { return c.id > 0; }))
    throw DataError(root + ": the DeepFashion layout names categories by clothes_type, and schema " + schema.name +
                    " gives its categories no id");
  const fs::path base(root);
  if (!fs::is_directory(base)) throw DataError(root + ": FLD root folder not found");

  ListFile landmarks, boxes, partition;
  read_list((base / "Anno" / "list_landmarks.txt").string(), opt, data, landmarks);
  read_list((base / "Anno" / "list_bbox.txt").string(), opt, data, boxes);
  read_list((base / "Eval" / "list_eval_partition.txt").string(), opt, data, partition);
  const auto box_rows = index_rows(boxes, 5, "image_name x_1 y_1 x_2 y_2", opt, data);
  const auto split_rows = index_rows(partition, 2, "image_name evaluation_status", opt, data);

  const int num_slots = schema.num_landmarks();
  std::unordered_map<std::string_view, std::size_t> seen;  // image name -> first line
  for (const Row& row : landmarks.rows) {
    guarded(opt, data, [&] {
      const std::string where = at(landmarks.path, row.line);
      const auto& f = row.fields;
      if (f.size() < 3)
        fail(where, "expected image_name clothes_type variation_type and landmarks, got " + std::to_string(f.size()) +
                        " fields");
      const std::string name(f[0]);
      const auto [first, fresh] = seen.emplace(f[0], row.line);
      if (!fresh) fail(where, "duplicate image '" + name + "' (first at line " + std::to_string(first->second) + ")");

      const double type = number(f[1], where, "clothes_type");
      Garment g;
      const bool id_like = type == std::floor(type) && std::abs(type) <= 1e6;  // no int conversion of 1e300
      g.category = id_like ? schema.category_with_id(static_cast<int>(type)) : -1;
      if (g.category < 0) fail(where, "unknown clothes_type '" + std::string(f[1]) + "' (expected " + category_list(schema) + ")");
      g.variation = whole_number(f[2], where, "variation_type", 1, 5);
      const std::vector<int>& slots = schema.categories[g.category].landmarks;
      const std::size_t listed = 3 + 3 * slots.size(), padded = 3 + 3 * static_cast<std::size_t>(num_slots);
      if (f.size() != listed && f.size() != padded)
        fail(where, "clothes_type " + std::string(f[1]) + " (" + schema.categories[g.category].name + ") needs " +
                        std::to_string(listed) + " fields (or " + std::to_string(padded) + " padded), got " +
                        std::to_string(f.size()));
      g.keypoints.assign(num_slots, Keypoint{});
      for (std::size_t i = 0; i < slots.size(); ++i) {
        const std::string n = std::to_string(i + 1);
        Keypoint& p = g.keypoints[slots[i]];
        p.v = static_cast<Visibility>(whole_number(f[3 + 3 * i], where, "landmark_visibility_" + n, 0, 2));
        p.x = static_cast<float>(number(f[4 + 3 * i], where, "landmark_location_x_" + n));
        p.y = static_cast<float>(number(f[5 + 3 * i], where, "landmark_location_y_" + n));
      }

      const auto box_it = box_rows.find(f[0]);
      if (box_it == box_rows.end()) fail(where, "image '" + name + "' has no row in " + boxes.path);
      const Row& b = *box_it->second;
      const std::string box_where = at(boxes.path, b.line);
      g.box = {static_cast<float>(number(b.fields[1], box_where, "x_1")),
               static_cast<float>(number(b.fields[2], box_where, "y_1")),
               static_cast<float>(number(b.fields[3], box_where, "x_2")),
               static_cast<float>(number(b.fields[4], box_where, "y_2"))};

      const auto split_it = split_rows.find(f[0]);
      if (split_it == split_rows.end()) fail(where, "image '" + name + "' has no row in " + partition.path);
      const Row& p = *split_it->second;
      const std::string_view split = p.fields[1];
      if (split != "train" && split != "val" && split != "test")
        fail(at(partition.path, p.line),
             "evaluation_status: expected train, val or test, got '" + std::string(split) + "'");

      Sample s;
      s.image = (base / name).string();
      s.split = std::string(split);
      s.where = where;
      add_garment(s, std::move(g), schema, opt);
      add_sample(data, std::move(s), opt, box_where);
    });
  }
  return data;
}

void write_fld(const std::string& root, const Dataset& data) {
  const LandmarkSchema& schema = data.schema;
  const auto two_decimals = [](float v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f", v);
    return std::string(buf);
  };
  // Boxes as DeepFashion writes them, whole pixels, unless they have a fraction.
  const auto box_side = [&](float v) { return v == std::floor(v) ? std::to_string(static_cast<long>(v)) : two_decimals(v); };
  const std::string count = std::to_string(data.samples.size()) + "\n";
  std::string landmarks = count + "image_name clothes_type variation_type";
  const size_t most = std::max_element(schema.categories.begin(), schema.categories.end(), [](const auto& a, const auto& b) {
                        return a.landmarks.size() < b.landmarks.size();
                      })->landmarks.size();
  for (size_t k = 1; k <= most; ++k) {
    const std::string n = std::to_string(k);
    landmarks += " landmark_visibility_" + n + " landmark_location_x_" + n + " landmark_location_y_" + n;
  }
  landmarks += "\n";
  std::string boxes = count + "image_name x_1 y_1 x_2 y_2\n";
  std::string partition = count + "image_name evaluation_status\n";
  for (const Sample& s : data.samples) {
    if (s.garments.size() != 1)
      throw std::invalid_argument("write_fld: the FLD layout holds one garment per image, " + s.image + " has " +
                                  std::to_string(s.garments.size()));
    const std::string name = relative_image(root, s.image);
    if (name.find_first_of(" \t\r\n") != std::string::npos)
      throw std::invalid_argument("write_fld: the FLD layout separates fields by spaces, image '" + name + "' has one");
    const Garment& g = s.garments.front();
    const Category& category = schema.categories.at(g.category);
    if (category.id <= 0)
      throw std::invalid_argument("write_fld: category " + category.name + " of schema " + schema.name + " has no id");
    landmarks += name + " " + std::to_string(category.id) + " " + std::to_string(g.variation > 0 ? g.variation : 1);
    for (int k : category.landmarks) {
      const Keypoint& p = g.keypoints[k];
      const bool absent = p.v == Visibility::Absent;
      landmarks += " " + std::to_string(static_cast<int>(p.v)) + " " + two_decimals(absent ? 0.f : p.x) + " " +
                   two_decimals(absent ? 0.f : p.y);
    }
    landmarks += "\n";
    boxes += name + " " + box_side(g.box.x1) + " " + box_side(g.box.y1) + " " + box_side(g.box.x2) + " " +
             box_side(g.box.y2) + "\n";
    partition += name + " " + s.split + "\n";
  }
  const fs::path dir(root);
  fs::create_directories(dir / "Anno");
  fs::create_directories(dir / "Eval");
  write_file_atomically((dir / "Anno" / "list_landmarks.txt").string(), landmarks);
  write_file_atomically((dir / "Anno" / "list_bbox.txt").string(), boxes);
  write_file_atomically((dir / "Eval" / "list_eval_partition.txt").string(), partition);
}

}  // namespace cspn
