#include "cspn/engine/train.hpp"

#include <any>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <sstream>

#include <unistd.h>

#include <ATen/autocast_mode.h>
#include <torch/version.h>
#include <spdlog/spdlog.h>

#include "cspn/data/synth.hpp"
#include "cspn/device.hpp"
#include "cspn/engine/detection.hpp"
#include "cspn/engine/distributed.hpp"
#include "cspn/engine/evaluate.hpp"
#include "cspn/engine/landmarks_model.hpp"
#include "cspn/engine/loader.hpp"
#include "cspn/engine/progress.hpp"
#include "cspn/engine/process.hpp"
#include "cspn/io/atomic_file.hpp"
#include "cspn/io/model_file.hpp"
#include "cspn/io/weights.hpp"
#include "cspn/model/batch_norm.hpp"
#include "cspn/model/losses.hpp"
#include "cspn/model/resnet.hpp"

namespace fs = std::filesystem;

namespace cspn {
namespace {

// Learning rate at a global iteration: linear warm-up, then cosine to 1% or step decay by epoch.
double learning_rate(const TrainConfig& t, int64_t iter, int64_t total_iters, int64_t iters_per_epoch) {
  double factor = 1.0;
  if (t.warmup_iters > 0 && iter < t.warmup_iters) factor = (iter + 1.0) / t.warmup_iters;
  if (t.schedule == "cosine") {
    const double progress = std::min(1.0, static_cast<double>(iter) / std::max<int64_t>(total_iters, 1));
    factor *= 0.01 + 0.99 * 0.5 * (1.0 + std::cos(M_PI * progress));
  } else {
    const int64_t epoch = iter / std::max<int64_t>(iters_per_epoch, 1);
    for (int step : t.steps)
      if (epoch >= step) factor *= t.gamma;
  }
  return t.lr * factor;
}

void set_lr(torch::optim::Optimizer& opt, double lr) {
  for (auto& group : opt.param_groups()) group.options().set_lr(lr);
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const TrainConfig& t, std::vector<torch::Tensor> params) {
  if (t.optimizer == "sgd")
    return std::make_unique<torch::optim::SGD>(
        params, torch::optim::SGDOptions(t.lr).momentum(t.momentum).weight_decay(t.weight_decay));
  return std::make_unique<torch::optim::Adam>(params, torch::optim::AdamOptions(t.lr).weight_decay(t.weight_decay));
}

// Where an interrupted run stands: epoch and batches done in it, the resolved iteration count
// (epochs x batches, or what the time budget allows) and the iterations done.
struct Position {
  int epoch = 0, batch = 0;
  int64_t total_iters = 0, global_iter = 0;
};

void save_checkpoint(const fs::path& path, torch::nn::Module& net, torch::optim::Optimizer& opt, const Position& pos) {
  torch::serialize::OutputArchive archive;
  torch::serialize::OutputArchive model_archive, optim_archive;
  net.save(model_archive);
  opt.save(optim_archive);
  archive.write("model", model_archive);
  archive.write("optimizer", optim_archive);
  archive.write("position", torch::tensor({static_cast<int64_t>(pos.epoch), static_cast<int64_t>(pos.batch),
                                           pos.total_iters, pos.global_iter}));
  // LibTorch's writer aborts the process when its stream fails (a full disk): it writes to memory,
  // and the bytes go to the file from there.
  std::ostringstream bytes;
  archive.save_to(bytes);
  write_file_atomically(path.string(), bytes.str());
}

Position load_checkpoint(const fs::path& path, torch::nn::Module& net, torch::optim::Optimizer& opt,
                         torch::Device device) {
  torch::serialize::InputArchive archive, model_archive, optim_archive;
  try {
    archive.load_from(path.string(), device);
    archive.read("model", model_archive);
    archive.read("optimizer", optim_archive);
    net.load(model_archive);
    opt.load(optim_archive);
  } catch (const c10::Error& e) {
    throw std::runtime_error(path.string() + ": cannot resume from this checkpoint (" + e.what_without_backtrace() +
                             "); was it written with the same config?");
  }
  torch::Tensor p;
  archive.read("position", p);
  p = p.cpu();  // loaded onto the training device with the rest
  auto a = p.accessor<int64_t, 1>();
  return {static_cast<int>(a[0]), static_cast<int>(a[1]), a[2], a[3]};
}

// The run's log.jsonl; in data-parallel training rank 0's alone (the others' is closed).
class JsonLog {
 public:
  JsonLog(const fs::path& path, bool open) : path_(path.string()) {
    if (!open) return;
    out_.open(path, std::ios::app);
    if (!out_) throw IoError("cannot write the training log " + path_);
  }
  // A full disk stops the run here, with the checkpoints written so far intact.
  void write(const nlohmann::json& record) {
    if (!out_.is_open()) return;
    out_ << record.dump() << '\n' << std::flush;
    if (!out_) throw IoError("cannot write the training log " + path_ + " (disk full?); --resume continues the run");
  }

 private:
  std::string path_;
  std::ofstream out_;
};

nlohmann::json validate(CSPNNet& net, Config cfg, const Dataset& val, torch::Device device) {
  cfg.test.precision = "float32";  // the network being trained stays in float32
  LandmarkPredictor predictor(net, cfg, val.schema, device);
  CropBatcher batcher(val, CropBatcher::ground_truth_jobs(val), cfg, false);
  std::vector<CropJob> jobs(batcher.size());
  for (size_t i = 0; i < jobs.size(); ++i) jobs[i] = batcher.job(i);
  StageMetrics metrics(val.schema, net->num_stages());
  metrics.add(val, jobs, predictor.predict_jobs(batcher, {}, /*all_stages=*/true).stage_coords);
  auto result = metrics.last().result();
  result["per_stage"] = metrics.per_stage();
  return result;
}

// Turns autocast on or off for a device type. LibTorch 2.4 replaced the per-device functions
// with ones taking the type (the old ones warn on every call there).
void set_autocast(c10::DeviceType type, bool on, at::ScalarType dtype) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  at::autocast::set_autocast_enabled(type, on);
  if (on) at::autocast::set_autocast_dtype(type, dtype);
#else
  if (type == c10::DeviceType::CUDA) {
    at::autocast::set_enabled(on);
    if (on) at::autocast::set_autocast_gpu_dtype(dtype);
  } else {
    at::autocast::set_cpu_enabled(on);
    if (on) at::autocast::set_autocast_cpu_dtype(dtype);
  }
#endif
}

// Mixed precision for the forward pass and the loss (autocast), as the phase's precision says.
class Autocast {
 public:
  Autocast(const std::string& precision, torch::Device device) : type_(device.type()) {
    if (precision == "float32") return;
    set_autocast(type_, true, precision == "bfloat16" ? at::kBFloat16 : at::kHalf);
    at::autocast::increment_nesting();
    on_ = true;
  }
  ~Autocast() {
    if (!on_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    set_autocast(type_, false, at::kFloat);
  }
  Autocast(const Autocast&) = delete;
  Autocast& operator=(const Autocast&) = delete;

 private:
  c10::DeviceType type_;
  bool on_ = false;
};

// While a phase runs with train.sync_bn, its batch norms take statistics over every rank's batch.
class SyncedBatchNorm {
 public:
  SyncedBatchNorm(torch::nn::Module& net, Distributed* dist, bool sync) : net_(net), on_(dist && sync) {
    if (on_) synchronise_batch_norm(net_, [dist](const torch::Tensor& t) { return dist->sum_differentiable(t); });
  }
  ~SyncedBatchNorm() {
    if (on_) synchronise_batch_norm(net_, {});
  }
  SyncedBatchNorm(const SyncedBatchNorm&) = delete;
  SyncedBatchNorm& operator=(const SyncedBatchNorm&) = delete;

 private:
  torch::nn::Module& net_;
  bool on_;
};

// One network's training: its batches, its loss and its validation, run by run_phase().
struct Phase {
  std::string name;                          // "keypoints" or "detector": checkpoint and log names
  std::shared_ptr<torch::nn::Module> net;
  const TrainConfig& tc;
  size_t items = 0;                          // training examples (garment crops or images)
  std::function<std::any(const std::vector<size_t>&, std::uint64_t)> make_batch;
  std::function<std::pair<torch::Tensor, nlohmann::json>(const std::any&)> loss;  // total, parts to log
  std::function<nlohmann::json()> validate;  // empty: no validation
  std::function<std::string(const nlohmann::json&)> describe;  // one line of validation metrics
  bool find_unused = false;                  // some parameters may get no gradient in a step
};

nlohmann::json run_phase(const Phase& ph, const Config& cfg, const TrainOptions& opt, torch::Device device,
                         JsonLog& log, int* epochs_done) {
  Distributed* dist = opt.distributed.get();
  const bool main = !dist || dist->is_main();
  const int rank = dist ? dist->rank() : 0, world = dist ? dist->world_size() : 1;
  if (ph.tc.precision == "float16" && !device.is_cuda())
    throw std::invalid_argument("train.precision float16 needs a CUDA device (on a CPU use bfloat16)");
  const fs::path out(opt.out_dir);
  const fs::path ckpt_path = out / ("checkpoint-" + ph.name + ".pt");
  ph.net->to(device);
  ph.net->train();
  std::vector<torch::Tensor> trainable;
  for (const auto& p : ph.net->parameters())
    if (p.requires_grad()) trainable.push_back(p);
  auto optimizer = make_optimizer(ph.tc, ph.net->parameters());
  std::optional<GradScaler> scaler;
  if (ph.tc.precision == "float16") scaler.emplace();
  const int bs = ph.tc.batch_size;  // per rank: a global batch holds bs x world examples
  if (ph.items < static_cast<size_t>(world))
    throw std::invalid_argument(ph.name + ": " + std::to_string(ph.items) + " training examples cannot be shared by " +
                                std::to_string(world) + " ranks");
  const int iters_per_epoch = std::max<int>(1, static_cast<int>(ph.items / (static_cast<size_t>(bs) * world)));

  const int64_t max_iters = ph.tc.iters > 0 ? ph.tc.iters : static_cast<int64_t>(ph.tc.epochs) * iters_per_epoch;
  Position pos;
  pos.total_iters = max_iters;
  const bool resumed = opt.resume && fs::exists(ckpt_path);
  if (resumed) {
    pos = load_checkpoint(ckpt_path, *ph.net, *optimizer, device);
    spdlog::info("{}: resuming {} at epoch {}, batch {}", ph.name, ckpt_path.string(), pos.epoch + 1, pos.batch);
  } else if (opt.resume) {
    spdlog::warn("{}: nothing to resume, {} was not written before the run stopped; this phase starts from the "
                 "beginning", ph.name, ckpt_path.string());
  }
  std::unique_ptr<GradientAverager> averager;
  if (dist) {
    // Every rank starts from rank 0's weights and statistics.
    std::vector<torch::Tensor> state = ph.net->parameters();
    for (const auto& b : ph.net->buffers()) state.push_back(b);
    dist->broadcast(state);
    averager = dist->average_gradients(trainable, /*overlap=*/!ph.find_unused);
  }
  SyncedBatchNorm synced(*ph.net, dist, ph.tc.sync_bn);
  const auto epochs_of = [&](int64_t iters) { return (iters + iters_per_epoch - 1) / iters_per_epoch; };
  log.write({{"type", "start"}, {"phase", ph.name}, {"items", ph.items}, {"iters_per_epoch", iters_per_epoch},
             {"epochs", ph.tc.epochs}, {"iters", max_iters}, {"device", device.str()}, {"resume_epoch", pos.epoch},
             {"world_size", world}, {"batch_per_rank", bs}, {"precision", ph.tc.precision}});
  spdlog::info("{}: {} examples, {} batches of {}{} per epoch, {} iterations{}, device {}{}", ph.name, ph.items,
               iters_per_epoch, bs * world, world > 1 ? fmt::format(" ({} ranks x {})", world, bs) : std::string(),
               max_iters,
               ph.tc.time_limit_minutes > 0 ? fmt::format(" at most (time budget {:g} min)", ph.tc.time_limit_minutes)
                                            : std::string(),
               device.str(), ph.tc.precision == "float32" ? std::string() : ", autocast " + ph.tc.precision);

  nlohmann::json validation;
  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  // Decisions that depend on the clock are taken on rank 0's, so that every rank takes them alike.
  auto shared_elapsed = [&] {
    return dist ? dist->sum(torch::tensor({main ? elapsed() : 0.0}, torch::kFloat64)).item<double>() : elapsed();
  };
  auto last_ckpt = start;
  const int64_t start_iter = pos.global_iter;
  // With a time budget, the mean iteration time so far (validations included) decides how many
  // iterations fit, re-estimated as training goes; the learning-rate schedule follows, and the
  // last epoch may be partial. A resumed run keeps the count its checkpoint settled on.
  const auto fit_budget = [&](double now) {
    const int64_t done = pos.global_iter - start_iter;
    if (resumed || ph.tc.time_limit_minutes <= 0 || done < 3) return;
    const double per_iter = now / static_cast<double>(done);
    const auto fit = pos.global_iter + static_cast<int64_t>((60.0 * ph.tc.time_limit_minutes - now) / per_iter);
    pos.total_iters = std::clamp<int64_t>(fit, pos.global_iter, max_iters);
  };
  for (int epoch = pos.epoch; pos.global_iter < pos.total_iters; ++epoch) {
    const double epoch_start = elapsed();
    // Every rank shuffles alike (same seed) and takes its own slice of each global batch.
    std::vector<size_t> order(ph.items);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), std::mt19937_64(ph.tc.seed * 1000003ULL + epoch));
    const int first_batch = epoch == pos.epoch ? pos.batch : 0;
    BatchLoader<std::any> loader(
        [&, epoch, first_batch](size_t i) {
          const size_t b = i + first_batch;
          // Fewer examples than a batch: the one batch holds them all.
          const size_t lo = std::min(order.size(), b * bs * world), hi = std::min(order.size(), (b + 1) * bs * world);
          std::vector<size_t> idx(order.begin() + lo + (hi - lo) * rank / world,
                                  order.begin() + lo + (hi - lo) * (rank + 1) / world);
          return ph.make_batch(idx, (ph.tc.seed << 32) ^ (static_cast<uint64_t>(epoch) << 20) ^ b ^
                                        (static_cast<uint64_t>(rank) << 48));
        },
        iters_per_epoch - first_batch, cfg.data.workers, cfg.data.prefetch);
    Progress bar(ph.name + " " + std::to_string(epoch + 1) + "/" + std::to_string(epochs_of(pos.total_iters)),
                 iters_per_epoch - first_batch, "it", opt.progress && main);
    double loss_sum = 0;
    int loss_count = 0;
    int b = first_batch;
    while (pos.global_iter < pos.total_iters) {
      auto batch = loader.next();
      if (!batch) break;
      const double lr = learning_rate(ph.tc, pos.global_iter, pos.total_iters, iters_per_epoch);
      set_lr(*optimizer, lr);
      auto [total, parts] = [&] {
        Autocast autocast(ph.tc.precision, device);
        return ph.loss(*batch);
      }();
      double value = total.item<double>(), now = elapsed();
      if (dist) {  // the mean loss over the ranks, and rank 0's clock
        const auto shared = dist->sum(torch::tensor({value / world, main ? now : 0.0}, torch::kFloat64));
        value = shared[0].item<double>();
        now = shared[1].item<double>();
      }
      if (!std::isfinite(value))
        throw std::runtime_error(ph.name + " training loss became " + std::to_string(value) + " at epoch " +
                                 std::to_string(epoch + 1) + ", batch " + std::to_string(b + 1) + " (lr " +
                                 std::to_string(lr) + ")" +
                                 (fs::exists(ckpt_path) ? "; the last checkpoint, " + ckpt_path.string() +
                                                              ", is intact: try a lower learning rate and --resume"
                                                        : "; no checkpoint was written yet: try a lower learning "
                                                          "rate in a new run"));
      optimizer->zero_grad();
      if (averager) averager->before_backward();
      try {
        (scaler ? scaler->scale(total) : total).backward();
        if (averager) averager->after_backward();
      } catch (const DistributedError&) {
        throw;
      } catch (...) {
        if (dist) dist->lost(std::current_exception());
        throw;
      }
      if (!scaler || scaler->unscale(trainable)) optimizer->step();
      ++pos.global_iter;
      ++b;
      loss_sum += value;
      ++loss_count;
      fit_budget(now);
      const double img_s = (b - first_batch) * bs * world / std::max(1e-9, elapsed() - epoch_start);
      char suffix[96];
      std::snprintf(suffix, sizeof suffix, " loss %.3e lr %.1e %.1f ex/s", value, lr, img_s);
      bar.update(b - first_batch, suffix);
      if (pos.global_iter % ph.tc.log_every == 0)
        log.write({{"type", "train"}, {"phase", ph.name}, {"epoch", epoch + 1}, {"iter", pos.global_iter},
                   {"loss", value}, {"parts", parts}, {"lr", lr}, {"examples_per_s", img_s}, {"elapsed_s", elapsed()},
                   {"total_iters", pos.total_iters}});
      if (main &&
          std::chrono::steady_clock::now() - last_ckpt > std::chrono::duration<double>(60.0 * ph.tc.checkpoint_minutes)) {
        save_checkpoint(ckpt_path, *ph.net, *optimizer, {epoch, b, pos.total_iters, pos.global_iter});
        last_ckpt = std::chrono::steady_clock::now();
      }
    }
    bar.finish();
    nlohmann::json record{{"type", "epoch"}, {"phase", ph.name}, {"epoch", epoch + 1}, {"batches", b - first_batch},
                          {"loss", loss_sum / std::max(1, loss_count)}, {"elapsed_s", elapsed()},
                          {"total_iters", pos.total_iters}};
    const bool last_epoch = pos.global_iter >= pos.total_iters;
    // Every rank validates (on the whole validation set: no rank waits for another meanwhile).
    if (ph.validate && ph.tc.val_every > 0 && ((epoch + 1) % ph.tc.val_every == 0 || last_epoch)) {
      validation = ph.validate();
      ph.net->train();
      record["val"] = validation;
      if (main)
        spdlog::info("{} epoch {}: loss {:.4e}, validation {}", ph.name, epoch + 1, record["loss"].get<double>(),
                     ph.describe(validation));
    }
    log.write(record);
    fit_budget(shared_elapsed());
    if (ph.tc.time_limit_minutes > 0 && !resumed)
      spdlog::info("{}: {:.1f} of {} min spent, {} of {} iterations done", ph.name, elapsed() / 60,
                   ph.tc.time_limit_minutes, pos.global_iter, pos.total_iters);
    // A partial last epoch is saved as finished: its remaining batches are not in the schedule.
    if (main) save_checkpoint(ckpt_path, *ph.net, *optimizer, {epoch + 1, 0, pos.total_iters, pos.global_iter});
    last_ckpt = std::chrono::steady_clock::now();
    *epochs_done = epoch + 1;
  }
  if (dist) {
    // The same start and the same averaged gradients: every rank must end with rank 0's weights.
    const auto params = ph.net->parameters();
    std::vector<torch::Tensor> theirs;
    for (const auto& p : params) theirs.push_back(p.detach().clone());
    dist->broadcast(theirs);
    double differ = 0;
    for (size_t i = 0; i < params.size(); ++i)
      differ = std::max(differ, (params[i].detach() - theirs[i]).abs().max().item<double>());
    differ = dist->sum(torch::tensor({differ}, torch::kFloat64)).item<double>();
    log.write({{"type", "ranks"}, {"phase", ph.name}, {"world_size", world}, {"max_weight_difference", differ}});
    if (differ > 0)
      spdlog::warn("{}: the ranks' weights differ by up to {:.3g} at the end; rank 0's are saved", ph.name, differ);
  }
  return validation;
}

// Checks the run folder (no model yet; empty, or --resume with the same config) and writes its
// config.yaml.
void prepare_run_folder(const fs::path& out, const std::string& yaml, bool resume) {
  if (fs::exists(out / "model.cspn"))
    throw std::invalid_argument(out.string() + " already holds a trained model; choose another --out");
  if (!resume && fs::exists(out) && !fs::is_empty(out))
    throw std::invalid_argument(out.string() + " already holds a run; pass --resume to continue it or choose another --out");
  if (resume) {
    // A run resumes with the config it started with, which stays as it was.
    std::ifstream in(out / "config.yaml");
    if (!in)
      throw std::invalid_argument("--resume: " + out.string() + " holds no run to resume (no config.yaml); drop --resume "
                                  "to start one");
    const std::string stored((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (stored != yaml)
      throw std::invalid_argument("--resume: the config differs from the one " + out.string() +
                                  "/config.yaml was started with; resume with the same --config and --set");
  } else {
    fs::create_directories(out);
    write_file_atomically((out / "config.yaml").string(), yaml);
  }
}

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

bool GradScaler::unscale(const std::vector<torch::Tensor>& params) {
  torch::NoGradGuard no_grad;
  torch::Tensor overflow;
  for (const auto& p : params) {
    if (!p.grad().defined()) continue;
    p.mutable_grad().mul_(1.0 / scale_);
    const auto bad = torch::isfinite(p.grad()).logical_not().any();
    overflow = overflow.defined() ? overflow.logical_or(bad) : bad;
  }
  if (overflow.defined() && overflow.item<bool>()) {
    scale_ /= 2;
    clean_steps_ = 0;
    return false;
  }
  if (++clean_steps_ >= growth_interval_) {
    scale_ *= 2;
    clean_steps_ = 0;
  }
  return true;
}

TrainSummary train(const Config& cfg, const Dataset& train_set, const Dataset& val_set, const TrainOptions& opt) {
  cfg.validate();
  Distributed* dist = opt.distributed.get();
  const bool main = !dist || dist->is_main();
  const torch::Device device = parse_device(opt.device);
  require_memory(cfg, /*training=*/true, device, "cspn train");
  const fs::path out(opt.out_dir);
  const fs::path model_path = out / "model.cspn";
  // Rank 0 prepares the run folder; the others learn whether it could.
  std::exception_ptr refused;
  if (main) {
    try {
      prepare_run_folder(out, cfg.to_yaml() + "\n", opt.resume);
    } catch (...) {
      refused = std::current_exception();
    }
  }
  if (dist && dist->sum(torch::tensor({refused ? 1.0 : 0.0})).item<double>() > 0 && !refused)
    throw std::invalid_argument("rank 0 could not prepare the run folder " + out.string() + " (its output says why)");
  if (refused) std::rethrow_exception(refused);
  int threads = cfg.train.threads;
  if (threads == 0 && dist && dist->launch().local_world_size > 1)  // the machine's cores, shared by its ranks
    threads = std::max(1, use_threads(0) / dist->launch().local_world_size);
  spdlog::info("{} intra-op threads", use_threads(threads));
  torch::manual_seed(cfg.train.seed);
  JsonLog log(out / "log.jsonl", main);
  const auto start = std::chrono::steady_clock::now();

  TrainSummary summary;
  ModelFile file;
  file.config = cfg;
  file.schema = train_set.schema;
  nlohmann::json extra{{"data", opt.data_info}};

  CSPNNet keypoint_net{nullptr};
  if (cfg.model.keypoints.enabled) {
    CSPNNet net(cfg.model.keypoints, train_set.schema.num_landmarks());
    keypoint_net = net;
    if (!cfg.model.keypoints.pretrained.empty()) {
      // ImageNet weights (.pth/.safetensors, torchvision keys), or the backbone of an earlier
      // landmark model file (.cspn, keys "keypoints.backbone.*"), e.g. one trained on synthetic garments.
      const StateDict weights = read_weights(cfg.model.keypoints.pretrained);
      const std::string from_model = "keypoints.backbone.";
      const bool model_file = std::any_of(weights.begin(), weights.end(), [&](const auto& kv) {
        return kv.first.rfind(from_model, 0) == 0;
      });
      const auto report = load_state_dict(*net->backbone, weights, model_file ? from_model : "", net->backbone->skipped_keys());
      if (report.loaded == 0 || !report.missing.empty() || !report.mismatched.empty())
        throw std::invalid_argument("model.keypoints.pretrained: " + cfg.model.keypoints.pretrained +
                                    " does not hold a whole " + cfg.model.keypoints.backbone + " backbone: " +
                                    report.summary());
      spdlog::info("backbone weights from {}: {} tensors loaded\n{}", cfg.model.keypoints.pretrained, report.loaded,
                   report.summary());
    }
    // Channels-last weights and crops, as inference runs them: oneDNN's convolutions then skip the
    // layout reorders in both passes (robot.yaml's training step 1.2x faster on 2 CPU cores).
    use_channels_last(*net);
    const auto keypoint_loss = [&](const std::any& any) {
      const auto& batch = std::any_cast<const KeypointBatch&>(any);
      auto output = net->forward(batch.images.to(device).contiguous(torch::MemoryFormat::ChannelsLast));
      // The loss in float32, whatever precision autocast ran the network in.
      for (auto& map : output.stages) map = map.to(torch::kFloat);
      for (auto& map : output.global) map = map.to(torch::kFloat);
      std::vector<torch::Tensor> targets;
      for (const auto& t : batch.targets) targets.push_back(t.to(device));
      std::function<torch::Tensor(const torch::Tensor&)> mean_across;
      if (dist) mean_across = [dist](const torch::Tensor& counts) { return dist->sum(counts) / dist->world_size(); };
      LossParts loss = cspn_loss(output, targets, batch.weights.to(device), cfg.loss, cfg.model.keypoints.sigma,
                                 mean_across);
      return std::make_pair(loss.total, nlohmann::json{{"stages", loss.stages}, {"global", loss.global}});
    };
    if (cfg.data.pretrain_synthetic > 0) {
      // Synthetic garments first (generated here, deterministic for the seed), then the real data.
      if (train_set.schema.name != LandmarkSchema::deepfashion().name)
        throw std::invalid_argument("data.pretrain_synthetic: synthetic garments carry DeepFashion's landmarks, the data "
                                    "schema " + train_set.schema.name + "'s: set data.pretrain_synthetic=0");
      // Rank 0 keeps the set in the run folder; the others make the same set (the same seed) in a
      // scratch folder of their own, rather than wait for rank 0's.
      std::optional<ScratchFolder> scratch;
      if (!main)
        scratch.emplace(fs::temp_directory_path() / fmt::format("cspn-pretrain-{}-rank{}", getpid(), dist->rank()));
      const fs::path dir = main ? out / "pretrain-synthetic" : scratch->path();
      SynthOptions synth;
      synth.count = cfg.data.pretrain_synthetic;
      synth.seed = cfg.train_pretrain.seed;
      synth.val_fraction = synth.test_fraction = 0;
      spdlog::info("pretraining: synthesizing {} garments into {}", synth.count, dir.string());
      synthesize(dir.string(), synth);
      const Dataset synthetic = load_split(dir.string(), "fld", "train", cfg, false, &train_set.schema);
      Config pretrain_cfg = cfg;  // the network is fully convolutional: any crop size trains it
      if (!cfg.data.pretrain_input_size.empty()) pretrain_cfg.model.keypoints.input_size = cfg.data.pretrain_input_size;
      CropBatcher batcher(synthetic, CropBatcher::ground_truth_jobs(synthetic), pretrain_cfg, true);
      Phase phase{"pretrain", net.ptr(), cfg.train_pretrain, batcher.size(),
                  [&](const std::vector<size_t>& idx, std::uint64_t seed) { return std::any(batcher.make(idx, seed)); },
                  keypoint_loss, {}, {}};
      int epochs = 0;
      run_phase(phase, cfg, opt, device, log, &epochs);
      extra["pretrain"] = {{"synthetic_garments", batcher.size()}, {"epochs", epochs}};
    }
    CropBatcher batcher(train_set, CropBatcher::ground_truth_jobs(train_set), cfg, true);
    if (batcher.size() == 0) throw std::invalid_argument("the training set has no garment with landmarks");
    Phase phase{"keypoints", net.ptr(), cfg.train, batcher.size(),
                [&](const std::vector<size_t>& idx, std::uint64_t seed) { return std::any(batcher.make(idx, seed)); },
                keypoint_loss,
                {},
                [](const nlohmann::json& m) {
                  char text[128];
                  std::snprintf(text, sizeof text, "ne_image %.4f, ne_paper %.4f, pck@0.2 %.3f; ",
                                metric_value(m["ne_image"]["avg"]), metric_value(m["ne_paper"]["avg"]),
                                metric_value(m["pck_0_2"]));
                  return text + StageMetrics::describe(m["per_stage"]);
                }};
    if (!val_set.samples.empty()) phase.validate = [&] { return validate(net, cfg, val_set, device); };
    int epochs = 0;
    extra["keypoints"] = {{"validation", run_phase(phase, cfg, opt, device, log, &epochs)},
                          {"train_garments", batcher.size()}};
    extra["keypoints"]["epochs"] = epochs;
    summary.epochs = epochs;
    summary.validation = extra["keypoints"]["validation"];
    for (auto& [name, tensor] : state_dict(*net)) file.tensors.emplace_back("keypoints." + name, tensor);
  }

  if (cfg.model.detector.enabled) {
    FasterRCNN net(cfg.model.detector, train_set.schema.num_categories() + 1);
    if (cfg.model.detector.backbone_from_keypoints) {
      // The landmark network's backbone (trained on garment crops just before) starts the trunk.
      const auto report =
          load_state_dict(*net->backbone(), state_dict(*keypoint_net->backbone), "", net->backbone()->skipped_keys());
      spdlog::info("detector backbone from the landmark network: {} tensors loaded", report.loaded);
    } else if (!cfg.model.detector.pretrained.empty()) {
      const auto report = load_state_dict(*net->backbone(), read_weights(cfg.model.detector.pretrained), "",
                                          net->backbone()->skipped_keys());
      spdlog::info("detector backbone weights from {}: {} tensors loaded\n{}", cfg.model.detector.pretrained,
                   report.loaded, report.summary());
    }
    DetectionBatcher batcher(train_set, cfg, true);
    if (batcher.size() == 0) throw std::invalid_argument("the training set has no image with a garment box");
    Phase phase{"detector", net.ptr(), cfg.train_detector, batcher.size(),
                [&](const std::vector<size_t>& idx, std::uint64_t seed) { return std::any(batcher.make(idx, seed)); },
                [&](const std::any& any) {
                  const auto& batch = std::any_cast<const DetectorBatch&>(any);
                  const auto losses = net->losses(batch.images.to(device), batch.targets);
                  torch::Tensor total = torch::zeros({}, batch.images.options().device(device));
                  nlohmann::json parts;
                  for (const auto& [name, value] : losses) {
                    total = total + value;
                    parts[name] = value.item<double>();
                  }
                  return std::make_pair(total, parts);
                },
                {},
                [](const nlohmann::json& m) {
                  if (!m["det_ap50"].is_number()) return std::string("no ground-truth boxes");
                  char text[96];
                  std::snprintf(text, sizeof text, "det_ap50 %.4f, det_ap %.4f", m["det_ap50"].get<double>(),
                                m["det_ap"].get<double>());
                  return std::string(text);
                },
                /*find_unused=*/true};  // a batch without positive proposals leaves box regression idle
    if (!val_set.samples.empty())
      phase.validate = [&] {
        GarmentDetector detector(net, cfg, val_set.schema, device);
        return detector_ap(detector, val_set, cfg);
      };
    int epochs = 0;
    extra["detector"] = {{"validation", run_phase(phase, cfg, opt, device, log, &epochs)},
                         {"train_images", batcher.size()}, {"epochs", epochs}};
    summary.epochs = epochs;
    summary.validation = extra["detector"]["validation"];
    for (auto& [name, tensor] : state_dict(*net)) file.tensors.emplace_back("detector." + name, tensor);
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
