#pragma once
// Dataset readers. Each reads into the landmark schema it is given (ReadOptions::schema), with
// "left" = image left (the FLD convention); formats whose left/right is the garment's own are
// mirrored on reading.
// Malformed input throws cspn::DataError naming file and line (or JSON path) unless
// ReadOptions::skip_bad, which records a message in Dataset::skipped and goes on.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cspn/core/config.hpp"
#include "cspn/core/errors.hpp"
#include "cspn/core/sample.hpp"

namespace cspn {


struct ReadOptions {
  LandmarkSchema schema = LandmarkSchema::deepfashion();
  bool skip_bad = false;
  // Whether the file's "left" is the garment's own left (image right) and so must be swapped.
  // Unset: the format's documented default (csv: true, fld/coco: false).
  std::optional<bool> garment_left;
  bool check_images = true;  // open each image header: missing/corrupt file, box outside image
};

// DeepFashion's layout, shared by the FLD and the Category & Attribute Prediction (deepfashion-c)
// benchmarks: root/Anno/list_landmarks.txt, root/Anno/list_bbox.txt,
// root/Eval/list_eval_partition.txt, images relative to root. clothes_type is the schema
// category's id.
Dataset read_fld(const std::string& root, const ReadOptions& opt = {});
// COCO keypoint JSON (one [x, y, v] per schema slot per annotation; category from the category
// name, the schema category whose id is category_id, or the labelled slots). `path`: the JSON file,
// or a folder holding exactly one. DeepFashion2's COCO conversion is read this way.
Dataset read_coco(const std::string& path, const ReadOptions& opt = {});
// The flat CSV of ziegler_robot_landmarks (info.csv). `path`: the CSV or its folder.
Dataset read_csv(const std::string& path, const ReadOptions& opt = {});
// FashionAI's train.csv (schema fashionai): header, then image_id,image_category and one x_y_v
// column per landmark. No boxes: the box is the extent of the labelled landmarks widened by
// kFashionAIBoxMargin of its size on each side, clipped to the image.
Dataset read_fashionai(const std::string& path, const ReadOptions& opt = {});
constexpr double kFashionAIBoxMargin = 0.1;
// DeepFashion2's own layout (schema deepfashion2): root/image/NNNNNN.jpg and root/annos/NNNNNN.json,
// items item1..itemN with category_id, bounding_box [x1, y1, x2, y2] and landmarks, the category's
// landmarks as a flat [x, y, v] list. `root` may also be the annos folder's parent of a split
// (train/, validation/). Images of the validation folder are split "val", of the test folder "test".
Dataset read_deepfashion2(const std::string& root, const ReadOptions& opt = {});
// Photos without labels (data.unlabelled): every image file under `dir` (image_files), one sample
// each with no garments, split "unlabelled". A file that is not a readable image is left out, with a
// message in Dataset::skipped, as skip_bad reports a malformed record. Throws DataError when `dir`
// is not a folder or holds no readable image.
Dataset read_unlabelled(const std::string& dir, const LandmarkSchema& schema);
// One data-set format: its --format name, a line on what it is, what --format auto looks for
// (empty: auto never picks it), and the reader.
struct DataFormat {
  std::string name;
  std::string description;
  std::string marker;  // e.g. "Anno/list_landmarks.txt", "*.json"
  std::function<Dataset(const std::string&, const ReadOptions&)> read;
  std::function<bool(const std::filesystem::path&)> looks_like;  // null where marker is empty
  std::string schema;  // the built-in schema whose landmarks the format holds ("": any schema)
};
// Every format, in the order --format auto tries them.
const std::vector<DataFormat>& data_formats();
// Their names, then "auto": the choices of --format.
std::vector<std::string> data_format_names();
// "fld | deepfashion-c | ... | auto (auto: Anno/list_landmarks.txt -> fld, ...)", for help texts.
std::string data_format_help();
// The format named `format`, or with "auto" the first whose looks_like(path) holds; throws naming
// the markers looked for.
const DataFormat& find_data_format(const std::string& path, const std::string& format);
// The schema to read `format` in, given data.schema (`configured`, "" where unset): the format's
// own where it has one (an error where data.schema names another built-in schema), else the
// configured one, else deepfashion.
std::string schema_for_format(const DataFormat& format, const std::string& configured);
// Reads `path` in `format`, or with "auto" in the first format whose looks_like(path) holds.
Dataset read_dataset(const std::string& path, const std::string& format, const ReadOptions& opt = {});

// Writers, the inverses of read_fld and read_coco: what they write reads back as the same samples
// (coordinates to 2 decimals; FLD boxes in whole pixels where they are whole). Image paths are written relative to `root`, under which each
// Sample::image must lie (std::invalid_argument otherwise); the annotation files are replaced
// atomically, the images are not touched.
// FLD layout: one garment per sample, clothes_type the category's id, variation_type
// Garment::variation (1 where it is 0).
void write_fld(const std::string& root, const Dataset& data);
// COCO keypoints, root/annotations.json: every garment, one [x, y, v] per schema slot, categories
// with their ids (position + 1 where they have none), `description` and `seed` under "info".
void write_coco(const std::string& root, const Dataset& data, const std::string& description, std::uint64_t seed);
// The document that write_coco writes, each image's file_name given by `file_name`.
nlohmann::json coco_json(const Dataset& data, const std::function<std::string(const Sample&)>& file_name,
                         const std::string& description, std::uint64_t seed);

// Marks a deterministic fraction of samples (by a hash of the image file name and seed) as split
// "test" and the rest "train". For formats without a split of their own and for holdout training.
void assign_holdout(Dataset& data, double fraction, std::uint64_t seed);

// Samples of one split ("train", "val", "test"; "all" keeps every sample).
Dataset select_split(const Dataset& data, const std::string& split);

// A data set read once, by split. Formats without splits of their own (csv) are split by
// cfg.data.holdout: held-out images are "test", the rest "train".
struct Splits {
  Dataset train, val, test, all;
  std::string path;
  bool own_splits = false;  // the data came with splits other than "train"
  bool held_out = false;    // split here by data.holdout
  // One split by name ("train", "val", "test", "all"); throws std::invalid_argument naming the path
  // when it has no images, with what to do where the data has no splits at all.
  const Dataset& get(const std::string& split) const;
};
// Landmarks are read into `schema`, by default cfg.data.schema's (a model's own, to evaluate it).
// Throws DataError when every record was malformed and skipped.
Splits read_splits(const std::string& path, const std::string& format, const Config& cfg, bool skip_bad,
                   const LandmarkSchema* schema = nullptr);
// read_splits(...).get(split).
Dataset read_split(const std::string& path, const std::string& format, const std::string& split, const Config& cfg,
                   bool skip_bad, const LandmarkSchema* schema = nullptr);

}  // namespace cspn
