#pragma once
// Dataset readers. Each reads into the landmark schema it is given (ReadOptions::schema), with
// "left" = image left (the FLD convention); formats whose left/right is the garment's own are
// mirrored on reading.
// Malformed input throws cspn::DataError naming file and line (or JSON path) unless
// ReadOptions::skip_bad, which records a message in Dataset::skipped and goes on.
#include <cstdint>
#include <iosfwd>
#include <optional>
#include <stdexcept>
#include <string>

#include "cspn/errors.hpp"
#include "cspn/sample.hpp"

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
// format: fld|deepfashion-c|coco|csv|fashionai|deepfashion2|auto (auto looks at what `path` holds).
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

// Width and height from the image file's header (JPEG, PNG, WebP, BMP); throws DataError naming the
// path when the file is missing, not a regular file (a FIFO, a folder), empty or not a readable
// image.
std::pair<int, int> image_size(const std::string& path);
// The same from a stream positioned at the start of the image; `name` goes into the errors.
std::pair<int, int> image_size(std::istream& in, const std::string& name);

// Throws DataError when a JPEG file lacks its end-of-image marker or a PNG file its IEND chunk
// near the end: a truncated copy, which decoders would otherwise fill in silently.
void check_complete(const std::string& path);
void check_complete(std::istream& in, const std::string& name);

// Marks a deterministic fraction of samples (by a hash of the image file name and seed) as split
// "test" and the rest "train". For formats without a split of their own and for holdout training.
void assign_holdout(Dataset& data, double fraction, std::uint64_t seed);

// Samples of one split ("train", "val", "test"; "all" keeps every sample).
Dataset select_split(const Dataset& data, const std::string& split);

}  // namespace cspn
