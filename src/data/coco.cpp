// COCO keypoint JSON with one keypoint per schema slot per annotation: the 8 DeepFashion ones (as
// mmpose's FLD files and the synthetic scenes are written), or DeepFashion2's 294 (its COCO
// conversion: every category's slots, only the garment's own labelled). bbox is [x, y, w, h];
// keypoints K x [x, y, v] with COCO visibility 2 visible, 1 occluded, 0 unlabelled. Messages
// name the JSON path ("images[3]").
#include <climits>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "cspn/core/io/atomic_file.hpp"
#include "cspn/data/readers.hpp"
#include "reader_common.hpp"

namespace cspn {
namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace data_detail;

namespace {

constexpr std::int64_t kMaxImageSide = 1 << 16;  // JPEG's limit; anything larger is a damaged record

const json& field(const json& obj, const char* key, const std::string& where) {
  if (!obj.is_object()) fail(where, std::string("expected an object, got ") + obj.type_name());
  const auto it = obj.find(key);
  if (it == obj.end()) fail(where, std::string("missing field '") + key + "'");
  return *it;
}

double json_number(const json& v, const std::string& where, const std::string& key) {
  if (!v.is_number()) fail(where, key + ": expected a number, got " + v.dump());
  const double d = v.get<double>();
  if (!std::isfinite(d)) fail(where, key + ": expected a finite number, got " + v.dump());
  return d;
}

std::int64_t json_integer(const json& v, const std::string& where, const std::string& key) {
  const double d = json_number(v, where, key);
  if (d != std::floor(d)) fail(where, key + ": expected a whole number, got " + v.dump());
  // Beyond 2^53 a double no longer holds every integer, and beyond 2^63 the conversion is undefined.
  if (std::fabs(d) > 9007199254740992.0) fail(where, key + ": " + v.dump() + " is out of range");
  return v.is_number_integer() ? v.get<std::int64_t>() : static_cast<std::int64_t>(d);
}

std::string json_string(const json& v, const std::string& where, const std::string& key) {
  if (!v.is_string()) fail(where, key + ": expected a string, got " + v.dump());
  return v.get<std::string>();
}

std::optional<int> category_named(const LandmarkSchema& schema, const std::string& name) {
  for (int c = 0; c < schema.num_categories(); ++c)
    if (schema.categories[c].name == name) return c;
  return std::nullopt;
}

// The category with the fewest slots that holds every labelled slot (DeepFashion: only waist/hem
// slots -> lower, no waist slots -> upper, else full).
int infer_category(const LandmarkSchema& schema, const Garment& g, const std::string& where) {
  int best = -1;
  for (int c = 0; c < schema.num_categories(); ++c) {
    std::vector<bool> has(schema.num_landmarks(), false);
    for (int k : schema.categories[c].landmarks) has[k] = true;
    bool fits = true;
    for (int k = 0; k < schema.num_landmarks(); ++k) fits = fits && (g.keypoints[k].v == Visibility::Absent || has[k]);
    if (fits && (best < 0 || schema.categories[c].landmarks.size() < schema.categories[best].landmarks.size()))
      best = c;
  }
  if (best < 0) fail(where, "the labelled keypoints fit no category of the " + schema.name + " schema");
  return best;
}

Garment parse_annotation(const json& a, const std::string& where, const LandmarkSchema& schema,
                         const std::unordered_map<std::int64_t, std::string>& category_names) {
  const int num_slots = schema.num_landmarks();
  const json& kps = field(a, "keypoints", where);
  if (!kps.is_array()) fail(where, "keypoints: expected an array, got " + std::string(kps.type_name()));
  if (kps.size() % 3 != 0)
    fail(where, "keypoints has " + std::to_string(kps.size()) + " values, expected 3 (x, y, v) per keypoint");
  if (static_cast<int>(kps.size() / 3) != num_slots)
    fail(where, std::to_string(kps.size() / 3) + " keypoints != " + std::to_string(num_slots) + " expected by the " +
                    schema.name + " schema (another landmark definition? set data.schema, e.g. deepfashion2)");
  Garment g;
  g.keypoints.resize(num_slots);
  bool labelled = false;
  for (int k = 0; k < num_slots; ++k) {
    const std::string key = "keypoints[" + std::to_string(3 * k);
    Keypoint& p = g.keypoints[k];
    p.x = static_cast<float>(json_number(kps[3 * k], where, key + "]"));
    p.y = static_cast<float>(json_number(kps[3 * k + 1], where, key + "+1]"));
    const double v = json_number(kps[3 * k + 2], where, key + "+2]");
    if (!coco_visibility(v, p.v))
      fail(where, key + "+2]: visibility should be 0, 1 or 2, got " + kps[3 * k + 2].dump());
    labelled = labelled || v != 0;
  }

  const json& bbox = field(a, "bbox", where);
  if (!bbox.is_array() || bbox.size() != 4) fail(where, "bbox: expected [x, y, w, h], got " + bbox.dump());
  const double x = json_number(bbox[0], where, "bbox[0]"), y = json_number(bbox[1], where, "bbox[1]");
  g.box = {static_cast<float>(x), static_cast<float>(y), static_cast<float>(x + json_number(bbox[2], where, "bbox[2]")),
           static_cast<float>(y + json_number(bbox[3], where, "bbox[3]"))};

  // An explicit name wins; a category entry named after a schema category next; else the slots.
  if (a.contains("category")) {
    const std::string name = json_string(a["category"], where, "category");
    const auto c = category_named(schema, name);
    if (!c) fail(where, "unknown category '" + name + "' (schema " + schema.name + " has " + category_list(schema) + ")");
    g.category = *c;
  } else if (a.contains("category_id")) {
    const std::int64_t id = json_integer(a["category_id"], where, "category_id");
    if (const auto it = category_names.find(id); it != category_names.end()) {
      if (const auto c = category_named(schema, it->second)) g.category = *c;
    } else {
      // Not listed: the schema's own category id (DeepFashion2's converter lists one category only).
      g.category = id >= INT_MIN && id <= INT_MAX ? schema.category_with_id(static_cast<int>(id)) : -1;
      if (g.category < 0)
        fail(where, "category_id " + std::to_string(id) + " is not listed under 'categories' and is no category id "
                    "of schema " + schema.name + " (" + category_list(schema) + ")");
    }
  }
  if (g.category < 0) {
    if (!labelled) fail(where, "no labelled keypoints and no category name: cannot tell upper, lower or full");
    g.category = infer_category(schema, g, where);
  }
  return g;
}

}  // namespace

Dataset read_coco(const std::string& path, const ReadOptions& opt) {
  const std::string file = file_or_only_child(path, "json");
  Dataset data{opt.schema, {}, {}};
  const LandmarkSchema& schema = data.schema;
  const json j = read_json_file(file);
  const fs::path dir = fs::path(file).parent_path();
  const json& images = field(j, "images", file);
  const json& annotations = field(j, "annotations", file);
  if (!images.is_array()) fail(file + ":images", "expected an array");
  if (!annotations.is_array()) fail(file + ":annotations", "expected an array");

  std::unordered_map<std::int64_t, std::string> category_names;
  if (j.contains("categories") && j["categories"].is_array()) {
    for (std::size_t i = 0; i < j["categories"].size(); ++i) {
      const json& c = j["categories"][i];
      const std::string where = file + ":categories[" + std::to_string(i) + "]";
      if (c.contains("name") && c["name"].is_string())
        category_names[json_integer(field(c, "id", where), where, "id")] = c["name"].get<std::string>();
    }
  }

  std::vector<Sample> samples(images.size());
  std::vector<bool> parsed(images.size(), false);
  std::unordered_map<std::int64_t, std::size_t> by_id;  // image id -> index into images
  std::unordered_set<std::int64_t> skipped_ids;         // their annotations are dropped quietly
  for (std::size_t i = 0; i < images.size(); ++i) {
    const json& im = images[i];
    Sample& s = samples[i];
    s.where = file + ":images[" + std::to_string(i) + "]";
    std::optional<std::int64_t> id;
    parsed[i] = guarded(opt, data, [&] {
      id = json_integer(field(im, "id", s.where), s.where, "id");
      const auto [first, fresh] = by_id.emplace(*id, i);
      if (!fresh)
        fail(s.where,
             "duplicate image id " + std::to_string(*id) + " (first at images[" + std::to_string(first->second) + "])");
      const fs::path name = json_string(field(im, "file_name", s.where), s.where, "file_name");
      fs::path image = name.is_absolute() ? name : dir / name;
      if (!name.is_absolute() && !fs::exists(image) && fs::exists(dir / "img" / name)) image = dir / "img" / name;
      s.image = image.string();
      for (const char* side : {"width", "height"}) {
        if (!im.contains(side)) continue;
        const std::int64_t v = json_integer(im[side], s.where, side);
        if (v < 1 || v > kMaxImageSide)
          fail(s.where, std::string(side) + ": expected 1 to " + std::to_string(kMaxImageSide) + " pixels, got " +
                            std::to_string(v));
        (side[0] == 'w' ? s.width : s.height) = static_cast<int>(v);
      }
      s.split = "train";
      if (im.contains("split")) {
        s.split = json_string(im["split"], s.where, "split");
        if (s.split != "train" && s.split != "val" && s.split != "test")
          fail(s.where, "split: expected train, val or test, got '" + s.split + "'");
      }
    });
    if (!parsed[i] && id) skipped_ids.insert(*id);
  }

  std::vector<std::vector<std::size_t>> image_annotations(images.size());
  for (std::size_t a = 0; a < annotations.size(); ++a) {
    guarded(opt, data, [&] {
      const std::string where = file + ":annotations[" + std::to_string(a) + "]";
      const std::int64_t id = json_integer(field(annotations[a], "image_id", where), where, "image_id");
      const auto it = by_id.find(id);
      if (it != by_id.end())
        image_annotations[it->second].push_back(a);
      else if (!skipped_ids.count(id))
        fail(where, "image_id " + std::to_string(id) + " is not in images");
    });
  }

  for (std::size_t i = 0; i < images.size(); ++i) {
    if (!parsed[i]) continue;
    // One bad annotation drops its whole image: training on the rest would teach the model
    // that the dropped garment is background.
    guarded(opt, data, [&] {
      Sample& s = samples[i];
      for (std::size_t a : image_annotations[i]) {
        const std::string where = file + ":annotations[" + std::to_string(a) + "]";
        Garment g = parse_annotation(annotations[a], where, schema, category_names);
        add_garment(s, std::move(g), schema, opt);
      }
      add_sample(data, std::move(s), opt);
    });
  }
  return data;
}

json coco_json(const Dataset& data, const std::function<std::string(const Sample&)>& file_name,
               const std::string& description, std::uint64_t seed) {
  const LandmarkSchema& schema = data.schema;
  json categories = json::array();
  for (int c = 0; c < schema.num_categories(); ++c) {
    const Category& cat = schema.categories[c];
    categories.push_back({{"id", cat.id > 0 ? cat.id : c + 1},
                          {"name", cat.name},
                          {"supercategory", "garment"},
                          {"keypoints", schema.landmarks},
                          {"skeleton", json::array()}});
  }
  json images = json::array(), annotations = json::array();
  const auto round2 = [](float v) { return std::round(static_cast<double>(v) * 100) / 100; };
  int annotation_id = 1;
  for (std::size_t i = 0; i < data.samples.size(); ++i) {
    const Sample& s = data.samples[i];
    images.push_back({{"id", i + 1},
                      {"file_name", file_name(s)},
                      {"width", s.width},
                      {"height", s.height},
                      {"split", s.split}});
    for (const Garment& g : s.garments) {
      json keypoints = json::array();
      int labelled = 0;
      for (const Keypoint& p : g.keypoints) {
        const int v = coco_visibility(p.v);
        keypoints.insert(keypoints.end(), {v ? round2(p.x) : 0.0, v ? round2(p.y) : 0.0, v});
        labelled += v > 0;
      }
      const Category& cat = schema.categories.at(g.category);
      annotations.push_back({{"id", annotation_id++},
                             {"image_id", i + 1},
                             {"category_id", cat.id > 0 ? cat.id : g.category + 1},
                             {"bbox", {g.box.x1, g.box.y1, g.box.width(), g.box.height()}},
                             {"area", g.box.width() * g.box.height()},
                             {"iscrowd", 0},
                             {"num_keypoints", labelled},
                             {"keypoints", keypoints}});
    }
  }
  return {{"info", {{"description", description}, {"seed", seed}}},
          {"categories", categories},
          {"images", images},
          {"annotations", annotations}};
}

void write_coco(const std::string& root, const Dataset& data, const std::string& description, std::uint64_t seed) {
  const json doc = coco_json(data, [&](const Sample& s) { return relative_image(root, s.image); }, description, seed);
  write_file_atomically((fs::path(root) / "annotations.json").string(), doc.dump(1) + "\n");
}

}  // namespace cspn
