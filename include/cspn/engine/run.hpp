#pragma once
// High-level operations of the cspn command (evaluation, reports, the demo, process settings).
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cspn/config.hpp"
#include "cspn/io/model_file.hpp"
#include "cspn/sample.hpp"

namespace cspn {

// Sets LibTorch's intra-op threads: `requested`, or with 0 every core this process may run on
// (LibTorch's own default is the physical core count, which can be 1). Returns the count set.
int use_threads(int requested);

// LibTorch frees and allocates activation buffers of the same sizes at every step. glibc hands
// large ones back to the kernel on free, and touching fresh pages again costs about a tenth of a
// CPU training step (12.8 -> 14.1 crops/s measured). This keeps freed memory in the process
// (buffers up to 32 MiB, no trimming); call it once, early, in a long-running program.
void keep_freed_memory();

// Reads a dataset and keeps one split. Formats without splits of their own (csv) are split by
// cfg.data.holdout (held-out images are "test", the rest "train"); "all" keeps everything.
// Landmarks are read into `schema`, by default cfg.data.schema's (a model's own, to evaluate it).
Dataset load_split(const std::string& path, const std::string& format, const std::string& split,
                   const Config& cfg, bool skip_bad, const LandmarkSchema* schema = nullptr);

struct EvalOptions {
  std::string boxes = "gt";     // gt: ground-truth boxes
  std::string device = "cpu";
  bool progress = true;
};

struct EvalResult {
  nlohmann::json metrics;       // LandmarkMetrics::result() plus "boxes"
  std::string table;            // the paper's Table 1 layout
};

EvalResult evaluate_model(const ModelFile& model, const Dataset& test, const EvalOptions& opt);
// The mean-shape baseline learned from `train`, placed in `test`'s ground-truth boxes.
EvalResult evaluate_mean_shape(const Dataset& train, const Dataset& test);

// Writes metrics.json/metrics.md, loss.png (from a run's log.jsonl, when given) and up to
// `examples` images with predicted (filled) and true (ring) landmarks into `dir`.
void write_report(const std::string& dir, const ModelFile& model, const Dataset& test, const EvalResult& result,
                  const std::string& run_log, int examples, const std::string& device);


struct DemoOptions {
  std::string out_dir = "cspn-demo";  // scenes/, run-N/ and report-N/ go here
  double minutes = 8;                 // training time budget, both halves (40% landmarks, 60% detector)
  int count = 600;                    // synthetic scenes (80% train, 10% val, 10% test)
  std::string photos = "../shared/data/ziegler_robot_landmarks";  // run on these too, when present
};

struct DemoResult {
  std::string page;   // report-N/index.html
  std::string model;  // run-N/model.cspn
};

// The main job on the built-in default: synthesize scenes, train both halves within the time budget,
// evaluate on the held-out scenes, run the pipeline on them (and on `photos`), and write a report
// page with the rendered predictions, the tables and the loss curves.
DemoResult run_demo(const DemoOptions& opt);

}  // namespace cspn
