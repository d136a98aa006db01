#pragma once
// What each `cspn` command does, as one call with its options: the CLI parses flags into these and
// calls them; the Python module calls the same functions. Each resolves its config (defaults, YAML,
// then --set pairs) with Config::resolve and reads its data through the format registry.
#include <iosfwd>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cspn/commands/bench_pipeline.hpp"
#include "cspn/commands/demo.hpp"
#include "cspn/commands/predict_files.hpp"
#include "cspn/core/bench.hpp"
#include "cspn/core/runtime.hpp"
#include "cspn/data/readers.hpp"
#include "cspn/data/synth.hpp"
#include "cspn/engine/evaluate.hpp"
#include "cspn/engine/train.hpp"

namespace cspn {

// A model file with "section.key=value" overrides of its stored settings (e.g.
// test.precision=bfloat16), validated.
ModelFile load_model_with(const std::string& path, const std::vector<std::string>& sets);

// `cspn synth`: writes `opt.count` synthetic images (or scenes) to `out`, in `schema` (only
// deepfashion can be drawn). Returns one line saying what was written.
std::string synth_command(const std::string& out, const SynthOptions& opt, const std::string& schema,
                          bool progress = true);

struct TrainCommand {
  Config base;                    // the settings to start from (the built-in defaults; cspn label: the model's)
  std::string config;             // YAML file over them ("" = none)
  std::vector<std::string> sets;  // "section.key=value" overrides, applied after it
  std::string data;               // data set path
  std::string format = "auto";    // data_format_names()
  bool skip_bad = false;          // report and skip malformed records (also data.skip_bad)
  std::string unlabelled;         // a folder of photos without labels (data.unlabelled; "" = the config's)
  TrainOptions options;           // out_dir, device, resume, progress
};
// `cspn train`: reads the data set once (its train and val splits), joins the data-parallel launch
// that torchrun's or Slurm's variables describe, if any, and trains.
TrainSummary train_command(TrainCommand cmd);
// This process's rank in a data-parallel launch, or -1 when it runs alone.
int launch_rank();

struct EvalCommand {
  std::string model;               // model file (or baseline)
  std::string data, format = "auto", split = "test";
  std::vector<std::string> sets;   // overrides of the model's settings (or the defaults, for a baseline)
  std::string baseline;            // "mean-shape": evaluate the baseline learned from train_data
  std::string train_data;
  std::string json;                // write the metrics here ("" = no)
  std::string report;              // write a report folder here ("" = no)
  bool skip_bad = false;
  EvalOptions options;             // boxes, device, progress
};
// `cspn eval`: metrics (EvalResult::metrics, with "model", "split" and "skipped") and the table,
// which goes to `out` before the JSON file is written. Output paths are checked before the
// evaluation starts.
EvalResult evaluate_command(const EvalCommand& cmd, std::ostream& out);

struct PredictCommand {
  std::string model;
  std::vector<std::string> inputs;  // image files or folders
  std::string list;                 // a file of image paths, one per line
  std::string shard;                // "I/N": only this job's share
  std::string json, jsonl;          // outputs ("" = none; without both, JSON goes to `out`)
  std::string device = "cpu";
  std::vector<std::string> sets;
  float min_score = -1;             // < 0: the model's test.min_score
  PredictFilesOptions options;      // out_dir (rendered images), workers, progress
};
// `cspn predict`: the pipeline over image files; JSON to `out` or the output files, a summary to
// `log`. Throws DataError where no image could be read.
void predict_command(const PredictCommand& cmd, std::ostream& out, std::ostream& log);

// `cspn info`: the model file's facts, or a config's, with parameters and GFLOPs per stage (and
// with `backbones` every backbone a config can name), to `out` as they are known.
void info_command(const std::string& model_path, const std::string& config, const std::vector<std::string>& sets,
                  bool backbones, std::ostream& out);

// The landmark network's parameters and GFLOPs per part for one crop (backbone, stage1, ...), as
// `cspn info` counts them: [{"name", "params", "gflops"}].
nlohmann::json landmark_costs(const Config& cfg, const LandmarkSchema& schema);

struct BenchCommand {
  std::vector<std::string> parts{"landmarks", "pipeline"};  // landmarks | pipeline | data
  BenchOptions landmarks;
  PipelineBenchOptions pipeline;
  bool train_step = true;  // pipeline: time the landmark network's training step
  std::string io;          // pipeline: write a seeded crop batch and its heatmaps here
  std::string data, format = "auto";  // data: the annotated set to time
  std::string json;        // write every measurement here
};
// `cspn bench`: tables to `out` as it goes; every measurement as JSON.
nlohmann::json bench_command(BenchCommand cmd, std::ostream& out);

}  // namespace cspn
