// run_phase: one network's training loop (shuffled epochs, steps, validation, checkpoints, the
// time budget) alone or as one rank of a data-parallel group.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <random>
#include <stdexcept>

#include <spdlog/spdlog.h>

#include "cspn/core/errors.hpp"
#include "cspn/core/runtime.hpp"
#include "cspn/engine/distributed.hpp"
#include "cspn/engine/loader.hpp"
#include "cspn/engine/progress.hpp"
#include "train_internal.hpp"

namespace fs = std::filesystem;

namespace cspn::train_detail {
namespace {

using Clock = std::chrono::steady_clock;

// One phase's run, from setting up its optimizer (and resuming) to the ranks' final agreement.
// Members are in the order the steps create them, and go in the reverse order.
class PhaseRunner {
 public:
  PhaseRunner(const Phase& ph, const RunContext& run);
  PhaseResult run();

 private:
  // What one optimizer step leaves for the log.
  struct Step {
    double value = 0, lr = 0, now = 0;  // the loss (mean over the ranks), its learning rate, rank 0's clock
    nlohmann::json parts;
  };
  void announce() const;
  void run_epoch(int epoch);
  Step step(const std::any& batch, int epoch, int b);
  [[noreturn]] void loss_not_finite(double value, int epoch, int b, double lr) const;
  void finish_epoch(int epoch, int first_batch, int b, double loss_sum, int loss_count);
  void check_ranks_agree() const;
  double elapsed() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }
  // Decisions that depend on the clock are taken on rank 0's, so that every rank takes them alike.
  double shared_elapsed() const {
    return dist_ ? dist_->sum(torch::tensor({main_ ? elapsed() : 0.0}, torch::kFloat64)).item<double>() : elapsed();
  }
  int64_t epochs_of(int64_t iters) const { return (iters + iters_per_epoch_ - 1) / iters_per_epoch_; }
  void fit_budget(double now);

  const Phase& ph_;
  const RunContext& run_;
  Distributed* dist_;
  bool main_;
  int rank_, world_;
  fs::path ckpt_path_;
  std::vector<torch::Tensor> trainable_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  std::optional<GradScaler> scaler_;
  int bs_ = 0;  // per rank: a global batch holds bs x world examples
  int iters_per_epoch_ = 0;
  int64_t max_iters_ = 0;
  Position pos_;
  bool resumed_ = false;
  std::unique_ptr<GradientAverager> averager_;
  std::optional<SyncedBatchNorm> synced_;
  nlohmann::json validation_;
  Clock::time_point start_, last_ckpt_;
  int64_t start_iter_ = 0;
  int epochs_done_ = 0;
};

PhaseRunner::PhaseRunner(const Phase& ph, const RunContext& run)
    : ph_(ph),
      run_(run),
      dist_(run.dist),
      main_(!dist_ || dist_->is_main()),
      rank_(dist_ ? dist_->rank() : 0),
      world_(dist_ ? dist_->world_size() : 1) {
  const torch::Device device = run.device;
  precision_dtype(ph.tc.precision, device, "train.precision");  // float16 needs a CUDA device
  ckpt_path_ = fs::path(run.opt.out_dir) / ("checkpoint-" + ph.name + ".pt");
  ph.net->to(device);
  ph.net->train();
  for (const auto& p : ph.net->parameters())
    if (p.requires_grad()) trainable_.push_back(p);
  optimizer_ = make_optimizer(ph.tc, ph.net->parameters());
  if (ph.tc.precision == "float16") scaler_.emplace();
  bs_ = ph.tc.batch_size;
  if (ph.items < static_cast<size_t>(world_))
    throw std::invalid_argument(ph.name + ": " + std::to_string(ph.items) + " training examples cannot be shared by " +
                                std::to_string(world_) + " ranks");
  iters_per_epoch_ = std::max<int>(1, static_cast<int>(ph.items / (static_cast<size_t>(bs_) * world_)));

  max_iters_ = ph.tc.iters > 0 ? ph.tc.iters : static_cast<int64_t>(ph.tc.epochs) * iters_per_epoch_;
  pos_.total_iters = max_iters_;
  resumed_ = run.opt.resume && fs::exists(ckpt_path_);
  if (resumed_) {
    pos_ = load_checkpoint(ckpt_path_, *ph.net, *optimizer_, device);
    spdlog::info("{}: resuming {} at epoch {}, batch {}", ph.name, ckpt_path_.string(), pos_.epoch + 1, pos_.batch);
  } else if (run.opt.resume) {
    spdlog::warn("{}: nothing to resume, {} was not written before the run stopped; this phase starts from the "
                 "beginning", ph.name, ckpt_path_.string());
  }
  if (dist_) {
    // Every rank starts from rank 0's weights and statistics.
    std::vector<torch::Tensor> state = ph.net->parameters();
    for (const auto& b : ph.net->buffers()) state.push_back(b);
    dist_->broadcast(state);
    averager_ = dist_->average_gradients(trainable_, /*overlap=*/!ph.find_unused);
  }
  synced_.emplace(*ph.net, dist_, ph.tc.sync_bn);
}

void PhaseRunner::announce() const {
  const std::string& device = run_.device.str();
  run_.log.write({{"type", "start"}, {"phase", ph_.name}, {"items", ph_.items}, {"iters_per_epoch", iters_per_epoch_},
                  {"epochs", ph_.tc.epochs}, {"iters", max_iters_}, {"device", device}, {"resume_epoch", pos_.epoch},
                  {"world_size", world_}, {"batch_per_rank", bs_}, {"precision", ph_.tc.precision}});
  spdlog::info("{}: {} examples, {} batches of {}{} per epoch, {} iterations{}, device {}{}", ph_.name, ph_.items,
               iters_per_epoch_, bs_ * world_,
               world_ > 1 ? fmt::format(" ({} ranks x {})", world_, bs_) : std::string(), max_iters_,
               ph_.tc.time_limit_minutes > 0
                   ? fmt::format(" at most (time budget {:g} min)", ph_.tc.time_limit_minutes)
                   : std::string(),
               device, ph_.tc.precision == "float32" ? std::string() : ", autocast " + ph_.tc.precision);
}

PhaseResult PhaseRunner::run() {
  announce();
  start_ = Clock::now();
  last_ckpt_ = start_;
  start_iter_ = pos_.global_iter;
  for (int epoch = pos_.epoch; pos_.global_iter < pos_.total_iters; ++epoch) run_epoch(epoch);
  if (dist_) check_ranks_agree();
  return {validation_, epochs_done_};
}

// With a time budget, the mean iteration time so far (validations included) decides how many
// iterations fit, re-estimated as training goes; the learning-rate schedule follows, and the
// last epoch may be partial. A resumed run keeps the count its checkpoint settled on.
void PhaseRunner::fit_budget(double now) {
  const int64_t done = pos_.global_iter - start_iter_;
  if (resumed_ || ph_.tc.time_limit_minutes <= 0 || done < 3) return;
  const double per_iter = now / static_cast<double>(done);
  const auto fit = pos_.global_iter + static_cast<int64_t>((60.0 * ph_.tc.time_limit_minutes - now) / per_iter);
  pos_.total_iters = std::clamp<int64_t>(fit, pos_.global_iter, max_iters_);
}

void PhaseRunner::run_epoch(int epoch) {
  const double epoch_start = elapsed();
  // Every rank shuffles alike (same seed) and takes its own slice of each global batch.
  std::vector<size_t> order(ph_.items);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937_64(ph_.tc.seed * 1000003ULL + epoch));
  const int first_batch = epoch == pos_.epoch ? pos_.batch : 0;
  const int bs = bs_, world = world_, rank = rank_;
  BatchLoader<std::any> loader(
      [&, epoch, first_batch](size_t i) {
        const size_t b = i + first_batch;
        // Fewer examples than a batch: the one batch holds them all.
        const size_t lo = std::min(order.size(), b * bs * world), hi = std::min(order.size(), (b + 1) * bs * world);
        std::vector<size_t> idx(order.begin() + lo + (hi - lo) * rank / world,
                                order.begin() + lo + (hi - lo) * (rank + 1) / world);
        return ph_.make_batch(idx, (ph_.tc.seed << 32) ^ (static_cast<uint64_t>(epoch) << 20) ^ b ^
                                       (static_cast<uint64_t>(rank) << 48));
      },
      iters_per_epoch_ - first_batch, run_.cfg.data.workers, run_.cfg.data.prefetch);
  Progress bar(ph_.name + " " + std::to_string(epoch + 1) + "/" + std::to_string(epochs_of(pos_.total_iters)),
               iters_per_epoch_ - first_batch, "it", run_.opt.progress && main_);
  double loss_sum = 0;
  int loss_count = 0;
  int b = first_batch;
  while (pos_.global_iter < pos_.total_iters) {
    auto batch = loader.next();
    if (!batch) break;
    const Step s = step(*batch, epoch, b);
    ++pos_.global_iter;
    ++b;
    loss_sum += s.value;
    ++loss_count;
    fit_budget(s.now);
    const double img_s = (b - first_batch) * bs * world / std::max(1e-9, elapsed() - epoch_start);
    char suffix[96];
    std::snprintf(suffix, sizeof suffix, " loss %.3e lr %.1e %.1f ex/s", s.value, s.lr, img_s);
    bar.update(b - first_batch, suffix);
    if (pos_.global_iter % ph_.tc.log_every == 0)
      run_.log.write({{"type", "train"}, {"phase", ph_.name}, {"epoch", epoch + 1}, {"iter", pos_.global_iter},
                      {"loss", s.value}, {"parts", s.parts}, {"lr", s.lr}, {"examples_per_s", img_s},
                      {"elapsed_s", elapsed()}, {"total_iters", pos_.total_iters}});
    if (main_ && Clock::now() - last_ckpt_ > std::chrono::duration<double>(60.0 * ph_.tc.checkpoint_minutes)) {
      save_checkpoint(ckpt_path_, *ph_.net, *optimizer_, {epoch, b, pos_.total_iters, pos_.global_iter});
      last_ckpt_ = Clock::now();
    }
    if (pos_.global_iter < pos_.total_iters && run_.opt.stop_requested && run_.opt.stop_requested()) {
      if (main_) save_checkpoint(ckpt_path_, *ph_.net, *optimizer_, {epoch, b, pos_.total_iters, pos_.global_iter});
      throw Interrupted(ph_.name + " training stopped at iteration " + std::to_string(pos_.global_iter) + " of " +
                        std::to_string(pos_.total_iters) + "; " + ckpt_path_.string() + " holds it: resume continues");
    }
  }
  bar.finish();
  // The loader (and its workers) lives on through the epoch's validation and checkpoint.
  finish_epoch(epoch, first_batch, b, loss_sum, loss_count);
}

// The loss (under autocast), backward (averaged over the ranks) and the optimizer's step.
PhaseRunner::Step PhaseRunner::step(const std::any& batch, int epoch, int b) {
  const double lr = learning_rate(ph_.tc, pos_.global_iter, pos_.total_iters, iters_per_epoch_);
  set_lr(*optimizer_, lr);
  auto [total, parts] = [&] {
    Autocast autocast(ph_.tc.precision, run_.device);
    return ph_.loss(batch);
  }();
  double value = total.item<double>(), now = elapsed();
  if (dist_) {  // the mean loss over the ranks, and rank 0's clock
    const auto shared = dist_->sum(torch::tensor({value / world_, main_ ? now : 0.0}, torch::kFloat64));
    value = shared[0].item<double>();
    now = shared[1].item<double>();
  }
  if (!std::isfinite(value)) loss_not_finite(value, epoch, b, lr);
  optimizer_->zero_grad();
  if (averager_) averager_->before_backward();
  try {
    (scaler_ ? scaler_->scale(total) : total).backward();
    if (averager_) averager_->after_backward();
  } catch (const DistributedError&) {
    throw;
  } catch (...) {
    if (dist_) dist_->lost(std::current_exception());
    throw;
  }
  if (!scaler_ || scaler_->unscale(trainable_)) optimizer_->step();
  return {value, lr, now, std::move(parts)};
}

void PhaseRunner::loss_not_finite(double value, int epoch, int b, double lr) const {
  throw std::runtime_error(ph_.name + " training loss became " + std::to_string(value) + " at epoch " +
                           std::to_string(epoch + 1) + ", batch " + std::to_string(b + 1) + " (lr " +
                           std::to_string(lr) + ")" +
                           (fs::exists(ckpt_path_) ? "; the last checkpoint, " + ckpt_path_.string() +
                                                         ", is intact: try a lower learning rate and --resume"
                                                   : "; no checkpoint was written yet: try a lower learning "
                                                     "rate in a new run"));
}

// The epoch's record (with validation where due), the time budget, the end-of-epoch checkpoint.
void PhaseRunner::finish_epoch(int epoch, int first_batch, int b, double loss_sum, int loss_count) {
  nlohmann::json record{{"type", "epoch"}, {"phase", ph_.name}, {"epoch", epoch + 1}, {"batches", b - first_batch},
                        {"loss", loss_sum / std::max(1, loss_count)}, {"elapsed_s", elapsed()},
                        {"total_iters", pos_.total_iters}};
  const bool last_epoch = pos_.global_iter >= pos_.total_iters;
  // Every rank validates (on the whole validation set: no rank waits for another meanwhile).
  if (ph_.validate && ph_.tc.val_every > 0 && ((epoch + 1) % ph_.tc.val_every == 0 || last_epoch)) {
    validation_ = ph_.validate();
    ph_.net->train();
    record["val"] = validation_;
    if (main_)
      spdlog::info("{} epoch {}: loss {:.4e}, validation {}", ph_.name, epoch + 1, record["loss"].get<double>(),
                   ph_.describe(validation_));
  }
  run_.log.write(record);
  fit_budget(shared_elapsed());
  if (ph_.tc.time_limit_minutes > 0 && !resumed_)
    spdlog::info("{}: {:.1f} of {} min spent, {} of {} iterations done", ph_.name, elapsed() / 60,
                 ph_.tc.time_limit_minutes, pos_.global_iter, pos_.total_iters);
  // A partial last epoch is saved as finished: its remaining batches are not in the schedule.
  if (main_) save_checkpoint(ckpt_path_, *ph_.net, *optimizer_, {epoch + 1, 0, pos_.total_iters, pos_.global_iter});
  last_ckpt_ = Clock::now();
  epochs_done_ = epoch + 1;
}

// The same start and the same averaged gradients: every rank must end with rank 0's weights.
void PhaseRunner::check_ranks_agree() const {
  const auto params = ph_.net->parameters();
  std::vector<torch::Tensor> theirs;
  for (const auto& p : params) theirs.push_back(p.detach().clone());
  dist_->broadcast(theirs);
  double differ = 0;
  for (size_t i = 0; i < params.size(); ++i)
    differ = std::max(differ, (params[i].detach() - theirs[i]).abs().max().item<double>());
  differ = dist_->sum(torch::tensor({differ}, torch::kFloat64)).item<double>();
  run_.log.write({{"type", "ranks"}, {"phase", ph_.name}, {"world_size", world_}, {"max_weight_difference", differ}});
  if (differ > 0)
    spdlog::warn("{}: the ranks' weights differ by up to {:.3g} at the end; rank 0's are saved", ph_.name, differ);
}

}  // namespace

PhaseResult run_phase(const Phase& ph, const RunContext& run) {
  PhaseRunner runner(ph, run);
  return runner.run();
}

}  // namespace cspn::train_detail
