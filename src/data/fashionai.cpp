// FashionAI key points (Alibaba Tianchi, 2018), the challenge's train.csv: a header row
// (image_id,image_category, then one column per landmark, named as in schema fashionai), then one
// comma-separated row per image: the image path relative to the CSV's folder, its category and
// per landmark "x_y_v" (pixels; v 1 visible, 0 occluded, -1 absent, written -1_-1_-1). "left" is the
// image left. The challenge gives no boxes: a garment's box is the extent of its labelled
// landmarks widened by kFashionAIBoxMargin of that extent on each side, clipped to the image.
#include <algorithm>
#include <filesystem>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "cspn/data/image.hpp"
#include "cspn/data/readers.hpp"
#include "reader_common.hpp"

namespace cspn {
namespace fs = std::filesystem;
using namespace data_detail;

Dataset read_fashionai(const std::string& path, const ReadOptions& opt) {
  const std::string file = file_or_only_child(path, "csv");
  Dataset data{opt.schema, {}, {}};
  const LandmarkSchema& schema = data.schema;
  const CsvTable table = read_csv_table(file);
  const CsvHeader& header = table.header;
  const std::string hint = "(schema " + schema.name + "; FashionAI files need --set data.schema=fashionai)";
  const auto column = [&](const std::string& name) { return header.column(name, hint); };
  const std::size_t image_col = column("image_id"), category_col = column("image_category");
  std::vector<std::size_t> slot_cols;
  for (const auto& name : schema.landmarks) slot_cols.push_back(column(name));

  const fs::path dir = fs::path(file).parent_path();
  const auto each_row = [&](const std::string& where, std::size_t, const auto& f) {
    Sample s;
    s.where = where;
    s.split = "train";
    s.image = (dir / std::string(f[image_col])).string();
    Garment g;
    const std::string category(f[category_col]);
    try {
      g.category = schema.category_index(category);
    } catch (const std::invalid_argument& e) {
      fail(where, e.what());
    }
    g.keypoints.assign(schema.num_landmarks(), Keypoint{});
    float x1 = 0, y1 = 0, x2 = -1, y2 = -1;
    for (int k = 0; k < schema.num_landmarks(); ++k) {
      const std::string& name = schema.landmarks[k];
      const auto parts = split_char(f[slot_cols[k]], '_');
      if (parts.size() != 3) fail(where, name + ": expected x_y_v, got '" + std::string(f[slot_cols[k]]) + "'");
      const int v = whole_number(parts[2], where, name + " visibility", -1, 1);
      if (v < 0) continue;
      Keypoint& p = g.keypoints[k];
      p.v = v == 1 ? Visibility::Visible : Visibility::Occluded;
      p.x = static_cast<float>(number(parts[0], where, name + " x"));
      p.y = static_cast<float>(number(parts[1], where, name + " y"));
      const bool first = x2 < x1;
      x1 = first ? p.x : std::min(x1, p.x);
      y1 = first ? p.y : std::min(y1, p.y);
      x2 = first ? p.x : std::max(x2, p.x);
      y2 = first ? p.y : std::max(y2, p.y);
    }
    if (x2 < x1) fail(where, "no labelled landmark: the garment has no box");
    const float mx = static_cast<float>(kFashionAIBoxMargin * std::max(x2 - x1, 1.0f));
    const float my = static_cast<float>(kFashionAIBoxMargin * std::max(y2 - y1, 1.0f));
    g.box = {x1 - mx, y1 - my, x2 + mx, y2 + my};
    if (opt.check_images) {
      try {
        std::tie(s.width, s.height) = image_size(s.image);
      } catch (const DataError& e) {
        fail(where, e.what());
      }
      g.box = {std::max(g.box.x1, 0.0f), std::max(g.box.y1, 0.0f), std::min(g.box.x2, static_cast<float>(s.width)),
               std::min(g.box.y2, static_cast<float>(s.height))};
    }
    add_garment(s, std::move(g), schema, opt);
    add_sample(data, std::move(s), opt);
  };
  for_each_csv_row(table, opt, data, "columns as the header", each_row);
  return data;
}

}  // namespace cspn
