// Pretraining on synthetic garments (data.pretrain_synthetic): the set is synthesized into the run
// folder (other ranks: a scratch folder), then the landmark network trains on it before the real data.
#include <optional>
#include <stdexcept>
#include <system_error>

#include <unistd.h>

#include <spdlog/spdlog.h>

#include "cspn/data/readers.hpp"
#include "cspn/data/synth.hpp"
#include "cspn/engine/distributed.hpp"
#include "cspn/engine/loader.hpp"
#include "train_internal.hpp"

namespace fs = std::filesystem;

namespace cspn::train_detail {
namespace {

// A folder of this process's own, removed with everything in it when the object goes.
class ScratchFolder {
 public:
  explicit ScratchFolder(fs::path path) : path_(std::move(path)) {}
  ~ScratchFolder() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  ScratchFolder(const ScratchFolder&) = delete;
  ScratchFolder& operator=(const ScratchFolder&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

}  // namespace

nlohmann::json pretrain_keypoints(const RunContext& run, CSPNNet net, const Dataset& train_set) {
  const Config& cfg = run.cfg;
  // Synthetic garments first (generated here, deterministic for the seed), then the real data.
  require_synthesizable(train_set.schema, "data.pretrain_synthetic", "set data.pretrain_synthetic=0");
  // Rank 0 keeps the set in the run folder; the others make the same set (the same seed) in a
  // scratch folder of their own, rather than wait for rank 0's.
  std::optional<ScratchFolder> scratch;
  if (!run.main)
    scratch.emplace(fs::temp_directory_path() / fmt::format("cspn-pretrain-{}-rank{}", getpid(), run.dist->rank()));
  const fs::path dir = run.main ? fs::path(run.opt.out_dir) / "pretrain-synthetic" : scratch->path();
  SynthOptions synth;
  synth.count = cfg.data.pretrain_synthetic;
  synth.seed = cfg.train_pretrain.seed;
  synth.val_fraction = synth.test_fraction = 0;
  spdlog::info("pretraining: synthesizing {} garments into {}", synth.count, dir.string());
  synthesize(dir.string(), synth);
  const Dataset synthetic = read_split(dir.string(), "fld", "train", cfg, false, &train_set.schema);
  Config pretrain_cfg = cfg;  // the network is fully convolutional: any crop size trains it
  if (!cfg.data.pretrain_input_size.empty()) pretrain_cfg.model.keypoints.input_size = cfg.data.pretrain_input_size;
  CropBatcher batcher(synthetic, CropBatcher::ground_truth_jobs(synthetic), pretrain_cfg, true);
  const Phase phase{"pretrain", net.ptr(), cfg.train_pretrain, batcher.size(), batches_of(batcher),
                    keypoint_loss(run, net), {}, {}};
  const PhaseResult result = run_phase(phase, run);
  return {{"synthetic_garments", batcher.size()}, {"epochs", result.epochs}};
}

}  // namespace cspn::train_detail
