// DeepFashion2's own layout: ROOT/image/NNNNNN.jpg and ROOT/annos/NNNNNN.json, ROOT being one split
// (train/, validation/, test/). Each annotation file holds "source", "pair_id" and one object per
// garment, "item1" .. "itemN", with "category_id" (1..13, the schema category's id),
// "bounding_box" [x1, y1, x2, y2] and "landmarks": the category's own landmarks (25 for a short
// sleeved shirt .. 39 for long sleeved outwear) as a flat [x, y, v, ...] list, v 2 visible,
// 1 occluded, 0 not labelled. Left and right as the data set annotates them.
#include <algorithm>
#include <climits>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cspn/data/readers.hpp"
#include "reader_common.hpp"

namespace cspn {
namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace data_detail;

namespace {

double finite(const json& v, const std::string& where) {
  if (!v.is_number() || !std::isfinite(v.get<double>())) fail(where, "expected a finite number, got " + v.dump());
  return v.get<double>();
}

Garment parse_item(const json& item, const std::string& where, const LandmarkSchema& schema) {
  if (!item.is_object()) fail(where, std::string("expected an object, got ") + item.type_name());
  for (const char* key : {"category_id", "bounding_box", "landmarks"})
    if (!item.contains(key)) fail(where, std::string("missing field '") + key + "'");
  const double id = finite(item["category_id"], where + ".category_id");
  Garment g;
  g.category = id == std::floor(id) && std::fabs(id) < INT_MAX ? schema.category_with_id(static_cast<int>(id)) : -1;
  if (g.category < 0)
    fail(where + ".category_id", item["category_id"].dump() + " is no category of schema " + schema.name);
  const Category& category = schema.categories[g.category];

  const json& box = item["bounding_box"];
  if (!box.is_array() || box.size() != 4) fail(where + ".bounding_box", "expected [x1, y1, x2, y2], got " + box.dump());
  g.box = {static_cast<float>(finite(box[0], where + ".bounding_box[0]")),
           static_cast<float>(finite(box[1], where + ".bounding_box[1]")),
           static_cast<float>(finite(box[2], where + ".bounding_box[2]")),
           static_cast<float>(finite(box[3], where + ".bounding_box[3]"))};

  const json& lms = item["landmarks"];
  const std::size_t n = category.landmarks.size();
  if (!lms.is_array() || lms.size() != 3 * n)
    fail(where + ".landmarks", category.name + " has " + std::to_string(n) + " landmarks: expected " +
                                   std::to_string(3 * n) + " values (x, y, v each), got " +
                                   (lms.is_array() ? std::to_string(lms.size()) : std::string(lms.type_name())));
  g.keypoints.assign(schema.num_landmarks(), Keypoint{});
  for (std::size_t i = 0; i < n; ++i) {
    const std::string at_i = where + ".landmarks[" + std::to_string(3 * i);
    Keypoint& p = g.keypoints[category.landmarks[i]];
    if (!coco_visibility(finite(lms[3 * i + 2], at_i + "+2]"), p.v))
      fail(at_i + "+2]", "visibility should be 0, 1 or 2, got " + lms[3 * i + 2].dump());
    if (p.v == Visibility::Absent) continue;
    p.x = static_cast<float>(finite(lms[3 * i], at_i + "]"));
    p.y = static_cast<float>(finite(lms[3 * i + 1], at_i + "+1]"));
  }
  return g;
}

}  // namespace

Dataset read_deepfashion2(const std::string& root, const ReadOptions& opt) {
  Dataset data{opt.schema, {}, {}};
  const LandmarkSchema& schema = data.schema;
  const fs::path base(root), annos = base / "annos";
  if (!fs::is_directory(annos)) throw DataError(root + ": no annos/ folder (DeepFashion2 layout: image/, annos/)");
  const std::string folder = fs::absolute(base).lexically_normal().filename().string();
  const std::string split = folder == "validation" ? "val" : folder == "test" ? "test" : "train";

  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(annos))
    if (e.path().extension() == ".json") files.push_back(e.path());
  if (files.empty()) throw DataError(annos.string() + ": no *.json annotation files");
  std::sort(files.begin(), files.end());
  for (const fs::path& file : files) {
    guarded(opt, data, [&] {
      const std::string where = file.string();
      const json j = read_json_file(where);
      if (!j.is_object()) fail(where, "expected an object with item1, item2, ...");
      Sample s;
      s.where = where;
      s.split = split;
      s.image = (base / "image" / (file.stem().string() + ".jpg")).string();
      // item1, item2, ... in number order (JSON objects are unordered).
      std::vector<std::pair<long, std::string>> items;
      for (const auto& [key, value] : j.items()) {
        if (key.rfind("item", 0) != 0) continue;
        const std::string digits = key.substr(4);
        if (digits.empty() || digits.size() > 6 || !std::all_of(digits.begin(), digits.end(), ::isdigit))
          fail(where + ":" + key, "expected item1, item2, ...");
        items.emplace_back(std::stol(digits), key);
      }
      if (items.empty()) fail(where, "no item1 .. itemN: the image has no garment");
      std::sort(items.begin(), items.end());
      for (const auto& [number, key] : items) {
        Garment g = parse_item(j[key], where + ":" + key, schema);
        add_garment(s, std::move(g), schema, opt);
      }
      add_sample(data, std::move(s), opt);
    });
  }
  return data;
}

}  // namespace cspn
