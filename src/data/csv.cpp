// The flat CSV of ziegler_robot_landmarks (info.csv): one header row, one comma-separated row per
// image, columns looked up by name, no quoted fields (the file has none). Its l*/r* landmarks are
// the garment's own left/right (l* on the image right), so by default they are mirrored into the
// FLD image-left convention.
#include <filesystem>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "cspn/data/readers.hpp"
#include "reader_common.hpp"

namespace cspn {
namespace fs = std::filesystem;
using namespace data_detail;

namespace {

// Column-name abbreviation of each DeepFashion slot ("lm_lc_x" = left collar x).
struct SlotColumns {
  const char* abbreviation;
  const char* landmark;
};
constexpr SlotColumns kSlotColumns[] = {{"lc", "left_collar"},  {"rc", "right_collar"},   {"ls", "left_sleeve"},
                                        {"rs", "right_sleeve"}, {"lw", "left_waistline"}, {"rw", "right_waistline"},
                                        {"lh", "left_hem"},     {"rh", "right_hem"}};

// category_type codes of the CSV (0-based, unlike FLD's clothes_type 1/2/3).
constexpr const char* kCategoryTypes[] = {"upper", "lower", "full"};

}  // namespace

Dataset read_csv(const std::string& path, const ReadOptions& opt) {
  const std::string file = file_or_only_child(path, "csv");
  if (opt.schema.name != "deepfashion")
    throw DataError(file + ": the csv format holds DeepFashion's 8 landmarks, not schema " + opt.schema.name);
  Dataset data{opt.schema, {}, {}};
  const LandmarkSchema& schema = data.schema;
  const CsvTable table = read_csv_table(file);
  const CsvHeader& header = table.header;
  const auto column = [&](const std::string& name) { return header.column(name); };
  const std::size_t image_col = column("image_name"), type_col = column("category_type");
  const std::size_t box_cols[4] = {column("x_1"), column("y_1"), column("x_2"), column("y_2")};
  struct SlotIndex {
    int slot;
    std::size_t x, y, vis;
  };
  std::vector<SlotIndex> slot_cols;
  for (const auto& sc : kSlotColumns) {
    const std::string prefix = std::string("lm_") + sc.abbreviation;
    slot_cols.push_back(
        {schema.landmark_index(sc.landmark), column(prefix + "_x"), column(prefix + "_y"), column(prefix + "_vis")});
  }

  const fs::path dir = fs::path(file).parent_path();
  const bool mirror = opt.garment_left.value_or(true);
  std::unordered_map<std::string_view, std::size_t> seen;  // image name -> first line
  const auto each_row = [&](const std::string& where, std::size_t i, const auto& f) {
    const std::string_view name = f[image_col];
    if (name.empty()) fail(where, "image_name is empty");
    const auto [first, fresh] = seen.emplace(name, i + 1);
    if (!fresh)
      fail(where,
           "duplicate image '" + std::string(name) + "' (first at line " + std::to_string(first->second) + ")");

    const double type = number(f[type_col], where, "category_type");
    if (type != 0 && type != 1 && type != 2)
      fail(where, "unknown category_type '" + std::string(f[type_col]) + "' (expected 0 upper, 1 lower, 2 full)");
    Garment g;
    g.category = schema.category_index(kCategoryTypes[static_cast<int>(type)]);
    g.box = {static_cast<float>(number(f[box_cols[0]], where, "x_1")),
             static_cast<float>(number(f[box_cols[1]], where, "y_1")),
             static_cast<float>(number(f[box_cols[2]], where, "x_2")),
             static_cast<float>(number(f[box_cols[3]], where, "y_2"))};
    g.keypoints.assign(schema.num_landmarks(), Keypoint{});
    for (const SlotIndex& sc : slot_cols) {
      if (whole_number(f[sc.vis], where, std::string(header[sc.vis]), 0, 1) == 0) continue;  // placeholder coords
      Keypoint& p = g.keypoints[sc.slot];
      p.v = Visibility::Visible;  // the tool records presence only, never occlusion
      p.x = static_cast<float>(number(f[sc.x], where, std::string(header[sc.x])));
      p.y = static_cast<float>(number(f[sc.y], where, std::string(header[sc.y])));
    }
    if (mirror) mirror_left_right(g, schema);

    Sample s;
    s.image = (dir / std::string(name)).string();
    s.split = "train";  // the file has no usable split; callers use assign_holdout
    s.where = where;
    s.garments.push_back(std::move(g));
    add_sample(data, std::move(s), opt);
  };
  for_each_csv_row(table, opt, data, "comma-separated fields as in the header", each_row);
  return data;
}

}  // namespace cspn
