#pragma once
// Private to the training code (src/engine/train/*.cpp): what its files
// share. Not installed, not for other callers; the public API is cspn/engine/train.hpp.
#include <any>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "cspn/core/config.hpp"
#include "cspn/core/detect/faster_rcnn.hpp"
#include "cspn/core/model/backbone.hpp"
#include "cspn/core/model/cspn_net.hpp"
#include "cspn/core/sample.hpp"
#include "cspn/engine/train.hpp"

namespace cspn::train_detail {

// ---- schedule.cpp: learning rate and optimizer -------------------------------------------------

// Learning rate at a global iteration: linear warm-up, then cosine to 1% or step decay by epoch.
double learning_rate(const TrainConfig& t, int64_t iter, int64_t total_iters, int64_t iters_per_epoch);
void set_lr(torch::optim::Optimizer& opt, double lr);
// SGD with momentum (train.optimizer sgd), else Adam.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const TrainConfig& t, std::vector<torch::Tensor> params);

// ---- checkpoint.cpp: checkpoints, the JSON log, the run folder ---------------------------------

// Where an interrupted run stands: epoch and batches done in it, the resolved iteration count
// (epochs x batches, or what the time budget allows) and the iterations done.
struct Position {
  int epoch = 0, batch = 0;
  int64_t total_iters = 0, global_iter = 0;
};

// Writes network, optimizer and position atomically.
void save_checkpoint(const std::filesystem::path& path, torch::nn::Module& net, torch::optim::Optimizer& opt,
                     const Position& pos);
// Loads what save_checkpoint wrote into `net` and `opt`; throws std::runtime_error where the
// checkpoint does not fit them.
Position load_checkpoint(const std::filesystem::path& path, torch::nn::Module& net, torch::optim::Optimizer& opt,
                         torch::Device device);

// The run's log.jsonl; in data-parallel training rank 0's alone (the others' is closed). `observer`
// sees each record written.
class JsonLog {
 public:
  JsonLog(const std::filesystem::path& path, bool open, std::function<void(const nlohmann::json&)> observer = {});
  // A full disk stops the run here, with the checkpoints written so far intact.
  void write(const nlohmann::json& record);

 private:
  std::string path_;
  std::ofstream out_;
  std::function<void(const nlohmann::json&)> observer_;
};

// Rank 0 checks the run folder (no model yet; empty, or --resume with the same config) and writes
// its config.yaml; every rank throws where it could not.
void prepare_run_folder(const std::filesystem::path& out, const Config& cfg, bool resume, Distributed* dist);

// ---- precision.cpp: autocast and synced batch norm (GradScaler is public: train.hpp) -----------

// Mixed precision for the forward pass and the loss (autocast), as the phase's precision says.
class Autocast {
 public:
  Autocast(const std::string& precision, torch::Device device);
  ~Autocast();
  Autocast(const Autocast&) = delete;
  Autocast& operator=(const Autocast&) = delete;

 private:
  c10::DeviceType type_;
  bool on_ = false;
};

// While a phase runs with train.sync_bn, its batch norms take statistics over every rank's batch.
class SyncedBatchNorm {
 public:
  SyncedBatchNorm(torch::nn::Module& net, Distributed* dist, bool sync);
  ~SyncedBatchNorm();
  SyncedBatchNorm(const SyncedBatchNorm&) = delete;
  SyncedBatchNorm& operator=(const SyncedBatchNorm&) = delete;

 private:
  torch::nn::Module& net_;
  bool on_;
};

// ---- phase.cpp: one network's training loop ----------------------------------------------------

// What every phase of one run shares.
struct RunContext {
  const Config& cfg;
  const TrainOptions& opt;
  torch::Device device;
  JsonLog& log;
  Distributed* dist;  // null: training alone
  bool main;          // rank 0 (or alone): writes the run folder
};

// One network's training: its batches, its loss and its validation, run by run_phase().
struct Phase {
  using MakeBatch = std::function<std::any(const std::vector<size_t>&, std::uint64_t)>;
  using Loss = std::function<std::pair<torch::Tensor, nlohmann::json>(const std::any&)>;  // total, parts to log
  std::string name;                          // "pretrain", "keypoints" or "detector": checkpoint and log names
  std::shared_ptr<torch::nn::Module> net;
  const TrainConfig& tc;
  size_t items = 0;                          // training examples (garment crops or images)
  MakeBatch make_batch;
  Loss loss;
  std::function<nlohmann::json()> validate;  // empty: no validation
  std::function<std::string(const nlohmann::json&)> describe;  // one line of validation metrics
  bool find_unused = false;                  // some parameters may get no gradient in a step
};

struct PhaseResult {
  nlohmann::json validation;  // the last validation's metrics (null: none ran)
  int epochs = 0;             // epochs completed in this run
};

// Trains ph.net (resuming from its checkpoint with --resume), logging and checkpointing as it goes.
PhaseResult run_phase(const Phase& ph, const RunContext& run);

// Phase::make_batch over a CropBatcher or DetectionBatcher, which must outlive the phase.
template <class Batcher>
Phase::MakeBatch batches_of(const Batcher& batcher) {
  return [&batcher](const std::vector<size_t>& idx, std::uint64_t seed) { return std::any(batcher.make(idx, seed)); };
}

// ---- backbone_weights.cpp: starting weights from a file ----------------------------------------

// How load_backbone_weights reads a file into a backbone.
struct BackboneLoad {
  std::string what;           // the log line's subject: "backbone", "detector backbone"
  std::string model_prefix;   // keys of an earlier model file's backbone ("keypoints.backbone."), taken
                              // where the file holds any; empty: the file's keys as they are
  std::string setting;        // the config key naming the file: it must fill the whole backbone, else
                              // std::invalid_argument; empty: whatever matches loads
  std::string backbone_name;  // the configured backbone, for that message
};

// Loads ImageNet weights (.pth/.safetensors, torchvision keys) or, as `how` allows, the backbone of
// an earlier model file into `backbone`, and logs what loaded.
void load_backbone_weights(BackboneImpl& backbone, const std::string& path, const BackboneLoad& how);

// ---- keypoints.cpp, pretrain.cpp, detector.cpp: the phases -------------------------------------

// The landmark network, its backbone from model.keypoints.pretrained where set, channels-last.
CSPNNet keypoint_network(const Config& cfg, const LandmarkSchema& schema);
// The landmark network's loss on a KeypointBatch (pretraining and training alike).
Phase::Loss keypoint_loss(const RunContext& run, CSPNNet net);
// Trains the landmark network on the training set's garment crops, as phase `name` with `tc`;
// returns the model file's record of it (validation, train_garments, epochs).
nlohmann::json train_keypoints(const RunContext& run, CSPNNet net, const Dataset& train_set, const Dataset& val_set,
                               const TrainConfig& tc, const std::string& name);
// data.pretrain_synthetic: synthesizes garments (deterministic for train_pretrain.seed) and trains
// the landmark network on them first; returns the "pretrain" record (synthetic_garments, epochs).
nlohmann::json pretrain_keypoints(const RunContext& run, CSPNNet net, const Dataset& train_set);

// The detector, its backbone from the landmark network or model.detector.pretrained.
FasterRCNN detector_network(const Config& cfg, const LandmarkSchema& schema, const CSPNNet& keypoint_net);
// Trains the detector on the training set's images, as phase `name` with `tc`; returns the record
// of it (validation, train_images, epochs).
nlohmann::json train_detector(const RunContext& run, FasterRCNN net, const Dataset& train_set, const Dataset& val_set,
                              const TrainConfig& tc, const std::string& name);

// ---- semi.cpp: data.unlabelled ------------------------------------------------------------------

// The photos of data.unlabelled (read_unlabelled), the unreadable ones logged.
Dataset read_unlabelled_photos(const Config& cfg, const LandmarkSchema& schema);
// semi.rounds rounds, each: pseudo_label the `unlabelled` photos with both networks as they are,
// then train the landmark network (semi.keypoint_iters, phase keypoints-round<r>) and the
// detector (semi.detector_iters, detector-round<r>) on the labelled and pseudo-labelled photos.
// Returns the model file's "semi" record: per round, the pseudo-label counts and both records.
nlohmann::json train_semi_supervised(const RunContext& run, CSPNNet keypoint_net, FasterRCNN detector,
                                     const Dataset& train_set, const Dataset& val_set, const Dataset& unlabelled);

}  // namespace cspn::train_detail
