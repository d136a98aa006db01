#pragma once
// `cspn predict`: the whole pipeline over image files, as one COCO-results-style JSON or as JSON
// Lines written as it goes (resumable, shardable), and on request rendered copies of the images.
// A file that cannot be read as an image is reported in the output and the others go on. Images
// are decoded on worker threads while the model runs.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>

#include "cspn/api/pipeline.hpp"
#include "cspn/data/image.hpp"  // image_files

namespace cspn {

// Paths listed in a text file, one per line (blank lines and lines starting with '#' skipped);
// relative paths are taken relative to the list file's folder.
std::vector<std::string> read_list_file(const std::string& path);

// Removes the second and later mentions of one file (the same path, or another path to the same
// file, as std::filesystem::weakly_canonical resolves it), keeping the order; returns how many.
size_t drop_duplicates(std::vector<std::string>& files);

// Shard `index` of `count`: the files whose path hashes (64-bit FNV-1a of the path as given) to
// index modulo count. Stable across runs and machines, so jobs of an array cover a collection once.
std::vector<std::string> shard_files(const std::vector<std::string>& files, int index, int count);

struct PredictFilesOptions {
  std::string out_dir;  // rendered images go here ("" = none)
  int chunk = 8;        // images decoded and run together
  int workers = 2;      // chunks decoded ahead of the model, each on its own thread (0: decode inline)
  bool progress = true;
};

// {"images": [{id, file_name, width, height, garments, rendered (file name in out_dir)}], "categories": [...], "annotations":
// [{image_id, garment_json...}], "errors": [{file, error}]}.
nlohmann::json predict_files(Pipeline& pipeline, const std::vector<std::string>& files, const PredictFilesOptions& opt);

struct JsonlSummary {
  size_t done_before = 0;  // files already in the output (a resumed run skips them)
  size_t written = 0;      // lines added by this run
  size_t errors = 0;       // of which error lines
};

// Appends one JSON line per file to `path`, flushed chunk by chunk: {"file", "width", "height",
// "garments": [garment_json...]} or {"file", "error"}. Files that already have a line are skipped,
// so a killed run continues where it stopped; a partial last line (killed mid-write) is dropped.
JsonlSummary predict_jsonl(Pipeline& pipeline, const std::vector<std::string>& files, const std::string& path,
                           const PredictFilesOptions& opt);

// Draws boxes, category and score, and the category's landmarks (filled: visible, ring: not) with
// their names onto `bgr`.
void render_garments(cv::Mat& bgr, const std::vector<GarmentPrediction>& garments, const LandmarkSchema& schema);

}  // namespace cspn
