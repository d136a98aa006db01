// The data-set formats by name (the registry behind --format and its help), the guess that
// --format auto makes, and the splits a command trains, validates and tests on.
#include <algorithm>
#include <filesystem>
#include <stdexcept>

#include "cspn/core/util.hpp"
#include "cspn/data/readers.hpp"

namespace cspn {
namespace fs = std::filesystem;

namespace {

bool holds_extension(const fs::path& p, const std::string& ext) {
  if (fs::is_regular_file(p)) return p.extension() == ext;
  if (!fs::is_directory(p)) return false;
  for (const auto& entry : fs::directory_iterator(p))
    if (entry.path().extension() == ext) return true;
  return false;
}

bool is_fld(const fs::path& p) { return fs::is_directory(p) && fs::exists(p / "Anno" / "list_landmarks.txt"); }
bool is_deepfashion2(const fs::path& p) { return fs::is_directory(p) && fs::is_directory(p / "annos"); }

}  // namespace

const std::vector<DataFormat>& data_formats() {
  static const std::vector<DataFormat> formats{
      {"fld", "DeepFashion's Fashion Landmark Detection benchmark (Anno/, Eval/, img/)", "Anno/list_landmarks.txt",
       read_fld, is_fld, ""},
      {"deepfashion-c", "DeepFashion's Category and Attribute Prediction benchmark (the FLD layout)", "", read_fld, {},
       ""},
      {"deepfashion2", "DeepFashion2: image/ and annos/, or its COCO conversion (schema deepfashion2)", "annos/",
       [](const std::string& path, const ReadOptions& opt) {
         return is_deepfashion2(path) ? read_deepfashion2(path, opt) : read_coco(path, opt);
       },
       is_deepfashion2, "deepfashion2"},
      {"coco", "COCO keypoints JSON, one [x, y, v] per schema landmark", "*.json", read_coco,
       [](const fs::path& p) { return holds_extension(p, ".json"); }, ""},
      {"csv", "the flat CSV of the robot photos (info.csv)", "*.csv", read_csv,
       [](const fs::path& p) { return holds_extension(p, ".csv"); }, ""},
      {"fashionai", "FashionAI's train.csv (schema fashionai)", "", read_fashionai, {}, "fashionai"},
  };
  return formats;
}

std::vector<std::string> data_format_names() {
  std::vector<std::string> names;
  for (const DataFormat& f : data_formats()) names.push_back(f.name);
  names.push_back("auto");
  return names;
}

std::string data_format_help() {
  std::string help;
  for (const std::string& name : data_format_names()) help += (help.empty() ? "" : " | ") + name;
  return help + " (auto: " + [] {
    std::string guesses;
    for (const DataFormat& f : data_formats())
      if (f.looks_like) guesses += (guesses.empty() ? "" : ", ") + f.marker + " -> " + f.name;
    return guesses;
  }() + ")";
}

const DataFormat& find_data_format(const std::string& path, const std::string& format) {
  const auto& formats = data_formats();
  if (format != "auto") {
    const auto it = std::find_if(formats.begin(), formats.end(), [&](const DataFormat& f) { return f.name == format; });
    if (it == formats.end()) {
      std::string names;
      for (const std::string& n : data_format_names()) names += (names.empty() ? "" : ", ") + n;
      throw std::invalid_argument("unknown data set format '" + format + "' (expected " + names + ")");
    }
    return *it;
  }
  if (!fs::is_directory(path) && !fs::is_regular_file(path)) throw DataError(path + ": no such file or folder");
  std::string looked_for;
  for (const DataFormat& f : formats) {
    if (!f.looks_like) continue;
    if (f.looks_like(path)) return f;
    looked_for += (looked_for.empty() ? "" : ", ") + f.marker + " -> " + f.name;
  }
  throw DataError(path + ": cannot tell the data set format (looked for " + looked_for +
                  "); pass the format explicitly");
}

Dataset read_dataset(const std::string& path, const std::string& format, const ReadOptions& opt) {
  return find_data_format(path, format).read(path, opt);
}

std::string schema_for_format(const DataFormat& format, const std::string& configured) {
  if (format.schema.empty()) return configured.empty() ? "deepfashion" : configured;
  const auto builtin = LandmarkSchema::builtin_names();
  const bool other_builtin = std::find(builtin.begin(), builtin.end(), configured) != builtin.end() &&
                             configured != format.schema;
  if (other_builtin)
    throw std::invalid_argument("--format " + format.name + " holds the landmarks of schema " + format.schema +
                                ", but data.schema is " + configured + " (leave data.schema unset, or set it to " +
                                format.schema + " or to a schema file of those landmarks)");
  return configured.empty() ? format.schema : configured;
}

namespace {

std::uint64_t fnv1a64(const std::string& s) {
  std::uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001B3ull;
  }
  return h;
}

}  // namespace

void assign_holdout(Dataset& data, double fraction, std::uint64_t seed) {
  if (!(fraction >= 0.0 && fraction <= 1.0))
    throw std::invalid_argument("assign_holdout: fraction should be in [0, 1], got " + std::to_string(fraction));
  for (Sample& s : data.samples) {
    // The file name only, so that moving the data set does not change the split.
    const std::uint64_t h = splitmix64(fnv1a64(fs::path(s.image).filename().string()) ^ splitmix64(seed));
    const double u = static_cast<double>(h >> 11) * 0x1.0p-53;  // uniform in [0, 1)
    s.split = u < fraction ? "test" : "train";
  }
}

Dataset select_split(const Dataset& data, const std::string& split) {
  if (split != "train" && split != "val" && split != "test" && split != "all")
    throw std::invalid_argument("unknown split '" + split + "' (expected train, val, test or all)");
  Dataset out;
  out.schema = data.schema;
  out.skipped = data.skipped;
  for (const Sample& s : data.samples)
    if (split == "all" || s.split == split) out.samples.push_back(s);
  return out;
}

Splits read_splits(const std::string& path, const std::string& format, const Config& cfg, bool skip_bad,
                   const LandmarkSchema* schema) {
  ReadOptions ro;
  ro.schema = schema ? *schema : LandmarkSchema::load(schema_for_format(find_data_format(path, format), cfg.data.schema));
  ro.skip_bad = skip_bad;
  Dataset data = read_dataset(path, format, ro);
  if (data.samples.empty() && !data.skipped.empty())
    throw DataError(path + ": all " + std::to_string(data.skipped.size()) +
                    " records were malformed and skipped; the first: " + data.skipped.front());
  Splits out;
  out.path = path;
  out.own_splits = std::any_of(data.samples.begin(), data.samples.end(), [](const Sample& s) { return s.split != "train"; });
  out.held_out = !out.own_splits && cfg.data.holdout > 0;
  if (out.held_out) assign_holdout(data, cfg.data.holdout, cfg.data.holdout_seed);
  out.train = select_split(data, "train");
  out.val = select_split(data, "val");
  out.test = select_split(data, "test");
  out.all = std::move(data);
  return out;
}

const Dataset& Splits::get(const std::string& split) const {
  const Dataset* d = split == "train" ? &train : split == "val" ? &val : split == "test" ? &test : nullptr;
  if (split == "all") d = &all;
  if (!d) throw std::invalid_argument("unknown split '" + split + "' (expected train, val, test or all)");
  if (d->samples.empty())
    throw std::invalid_argument(path + ": no images in split '" + split + "'" +
                                (own_splits || held_out ? std::string()
                                                        : std::string(" (this data has no splits: use --split all, or "
                                                                      "hold images out with --set data.holdout=0.3)")));
  return *d;
}

Dataset read_split(const std::string& path, const std::string& format, const std::string& split, const Config& cfg,
                   bool skip_bad, const LandmarkSchema* schema) {
  return read_splits(path, format, cfg, skip_bad, schema).get(split);
}

}  // namespace cspn
