#pragma once
// Training: the landmark network on garment crops (and, when enabled, the detector on whole
// images), with periodic validation, a JSON-lines log, atomic checkpoints and resume.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "cspn/core/config.hpp"
#include "cspn/core/sample.hpp"

namespace cspn {

class Distributed;

struct TrainOptions {
  std::string out_dir;           // gets model.cspn, checkpoint-<phase>.pt, log.jsonl, config.yaml
  std::string device = "cpu";    // cpu | cuda | cuda:N
  bool resume = false;           // continue from out_dir/checkpoint-<phase>.pt
  bool progress = true;          // progress bar on stderr
  nlohmann::json data_info;      // what was trained on, stored in the model file
  // Data-parallel training: this process is one rank of the group (null: training alone). Every
  // rank reads its share of each global batch (train.batch_size per rank); rank 0 alone writes the
  // run folder.
  std::shared_ptr<Distributed> distributed;
  // Gets every record as it is written to log.jsonl (rank 0 only): progress for callers that draw
  // their own (the Python module). Called on the training thread.
  std::function<void(const nlohmann::json&)> on_record;
  // Asked after every iteration: true stops the run there. The phase's checkpoint is written first,
  // then train() throws cspn::Interrupted; --resume (resume = true) continues from that checkpoint.
  std::function<bool()> stop_requested;
};

struct TrainSummary {
  std::string model_path;
  int epochs = 0;                // epochs completed
  double seconds = 0;
  nlohmann::json validation;     // last validation metrics (empty without a validation set)
};

// Dynamic loss scaling for float16 autocast (as PyTorch's GradScaler): the loss is multiplied by
// the scale before backward, so that small gradients survive in float16; unscale() divides the
// gradients by it. A step whose gradients overflowed is skipped and the scale halved; after
// `growth_interval` clean steps in a row the scale doubles.
class GradScaler {
 public:
  explicit GradScaler(double scale = 65536.0, int growth_interval = 2000)
      : scale_(scale), growth_interval_(growth_interval) {}
  torch::Tensor scale(const torch::Tensor& loss) const { return loss * scale_; }
  // Unscales the gradients in place; false where one is inf or NaN (skip this step).
  bool unscale(const std::vector<torch::Tensor>& params);
  double value() const { return scale_; }

 private:
  double scale_;
  int growth_interval_;
  int clean_steps_ = 0;
};

// Trains on `train`, validating on `val` (may be empty). Throws on NaN/inf losses with the epoch
// and iteration, leaving the last checkpoint intact.
TrainSummary train(const Config& cfg, const Dataset& train, const Dataset& val, const TrainOptions& opt);

}  // namespace cspn
