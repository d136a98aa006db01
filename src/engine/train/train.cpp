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

// A trained network's share of the result: its epochs and last validation (from its record), and
// its tensors in the model file under `prefix`.
void keep(const nlohmann::json& record, const torch::nn::Module& net, const std::string& prefix, TrainSummary& summary,
          ModelFile& file) {
  summary.epochs = record["epochs"].get<int>();
  summary.validation = record["validation"];
  for (auto& [name, tensor] : state_dict(net)) file.tensors.emplace_back(prefix + name, tensor);
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
  CSPNNet keypoint_net{nullptr};
  if (cfg.model.keypoints.enabled) {
    keypoint_net = keypoint_network(cfg, train_set.schema);
    if (cfg.data.pretrain_synthetic > 0) extra["pretrain"] = pretrain_keypoints(run, keypoint_net, train_set);
    extra["keypoints"] = train_keypoints(run, keypoint_net, train_set, val_set);
    keep(extra["keypoints"], *keypoint_net, "keypoints.", summary, file);
  }
  if (cfg.model.detector.enabled) {
    FasterRCNN detector = detector_network(cfg, train_set.schema, keypoint_net);
    extra["detector"] = train_detector(run, detector, train_set, val_set);
    keep(extra["detector"], *detector, "detector.", summary, file);
  }

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
