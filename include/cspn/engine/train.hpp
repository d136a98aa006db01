#pragma once
// Training: the landmark network on garment crops (and, when enabled, the detector on whole
// images), with periodic validation, a JSON-lines log, atomic checkpoints and resume.
#include <string>

#include <nlohmann/json.hpp>

#include "cspn/config.hpp"
#include "cspn/sample.hpp"

namespace cspn {

struct TrainOptions {
  std::string out_dir;           // gets model.cspn, checkpoint-<phase>.pt, log.jsonl, config.yaml
  std::string device = "cpu";    // cpu | cuda | cuda:N
  bool resume = false;           // continue from out_dir/checkpoint-<phase>.pt
  bool progress = true;          // progress bar on stderr
  nlohmann::json data_info;      // what was trained on, stored in the model file
};

struct TrainSummary {
  std::string model_path;
  int epochs = 0;                // epochs completed
  double seconds = 0;
  nlohmann::json validation;     // last validation metrics (empty without a validation set)
};

// Trains on `train`, validating on `val` (may be empty). Throws on NaN/inf losses with the epoch
// and iteration, leaving the last checkpoint intact.
TrainSummary train(const Config& cfg, const Dataset& train, const Dataset& val, const TrainOptions& opt);

}  // namespace cspn
