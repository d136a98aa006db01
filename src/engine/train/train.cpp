// cspn::train: a run around its phases (run folder, seed, log, model file). The phases, their
// loop, checkpoints, schedule and precision are in src/engine/train/ (train_internal.hpp).
#include "cspn/engine/train.hpp"

#include <algorithm>
#include <chrono>
#include <filesystem>

#include <spdlog/spdlog.h>

#include "cspn/core/io/model_file.hpp"
#include "cspn/core/io/weights.hpp"
#include "cspn/core/runtime.hpp"
#include "cspn/engine/distributed.hpp"
#include "train_internal.hpp"

namespace fs = std::filesystem;

namespace cspn {
namespace {

// train.threads intra-op threads; 0 with several ranks on a machine: its cores shared by them.
void use_training_threads(const Config& cfg, Distributed* dist) {
  int threads = cfg.train.threads;
  if (threads == 0 && dist && dist->launch().local_world_size > 1)  // the machine's cores, shared by its ranks
    threads = std::max(1, use_threads(0) / dist->launch().local_world_size);
  spdlog::info("{} intra-op threads", use_threads(threads));
}

// A trained network's epochs and last validation, from its record.
void summarise(const nlohmann::json& record, TrainSummary& summary) {
  summary.epochs = record["epochs"].get<int>();
  summary.validation = record["validation"];
}

// The networks' tensors under their model-file prefixes.
void keep_tensors(const CSPNNet& keypoint_net, const FasterRCNN& detector, ModelFile& file) {
  file.tensors.clear();
  if (keypoint_net)
    for (auto& [name, tensor] : state_dict(*keypoint_net)) file.tensors.emplace_back("keypoints." + name, tensor);
  if (detector)
    for (auto& [name, tensor] : state_dict(*detector)) file.tensors.emplace_back("detector." + name, tensor);
}

}  // namespace

TrainSummary train(const Config& cfg, const Dataset& train_set, const Dataset& val_set, const TrainOptions& opt) {
  using namespace train_detail;
  cfg.validate();
  Distributed* dist = opt.distributed.get();
  const bool main = !dist || dist->is_main();
  const torch::Device device = parse_device(opt.device);
  require_memory(cfg, /*training=*/true, device, "cspn train");
  const fs::path out(opt.out_dir);
  const fs::path model_path = out / "model.cspn";
  prepare_run_folder(out, cfg, opt.resume, dist);
  use_training_threads(cfg, dist);
  torch::manual_seed(cfg.train.seed);
  JsonLog log(out / "log.jsonl", main, opt.on_record);
  const auto start = std::chrono::steady_clock::now();
  const RunContext run{cfg, opt, device, log, dist, main};

  TrainSummary summary;
  ModelFile file;
  file.config = cfg;
  file.schema = train_set.schema;
  nlohmann::json extra{{"data", opt.data_info}};
  // Read before training, so that a wrong folder fails now rather than after the first phases.
  const Dataset unlabelled =
      cfg.data.unlabelled.empty() ? Dataset{train_set.schema, {}, {}} : read_unlabelled_photos(cfg, train_set.schema);
  if (!cfg.data.unlabelled.empty())
    extra["data"]["unlabelled"] = {{"path", cfg.data.unlabelled}, {"photos", unlabelled.samples.size()},
                                   {"skipped", unlabelled.skipped.size()}};
  CSPNNet keypoint_net{nullptr};
  FasterRCNN detector{nullptr};
  if (cfg.model.keypoints.enabled) {
    keypoint_net = keypoint_network(cfg, train_set.schema);
    if (cfg.data.pretrain_synthetic > 0) extra["pretrain"] = pretrain_keypoints(run, keypoint_net, train_set);
    extra["keypoints"] = train_keypoints(run, keypoint_net, train_set, val_set, cfg.train, "keypoints");
    summarise(extra["keypoints"], summary);
  }
  if (cfg.model.detector.enabled) {
    detector = detector_network(cfg, train_set.schema, keypoint_net);
    extra["detector"] = train_detector(run, detector, train_set, val_set, cfg.train_detector, "detector");
    summarise(extra["detector"], summary);
  }
  if (!cfg.data.unlabelled.empty()) {
    // The model of the labelled photos alone, kept beside the final one for comparison.
    keep_tensors(keypoint_net, detector, file);
    file.extra = extra;
    if (main) save_model_file((out / "teacher.cspn").string(), file);
    extra["semi"] = train_semi_supervised(run, keypoint_net, detector, train_set, val_set, unlabelled);
    for (const auto& round : extra["semi"]["rounds"])
      for (const char* half : {"keypoints", "detector"})
        if (round.contains(half)) summarise(round[half], summary);
  }
  keep_tensors(keypoint_net, detector, file);

  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  summary.model_path = model_path.string();
  file.extra = extra;
  if (dist) file.extra["data_parallel"] = {{"world_size", dist->world_size()}, {"launcher", dist->launch().launcher}};
  if (main) {
    save_model_file(model_path.string(), file);
    spdlog::info("model written to {}", model_path.string());
  }
  return summary;
}

}  // namespace cspn
