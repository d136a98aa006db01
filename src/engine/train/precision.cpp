// Precision and statistics while a phase trains: autocast, the float16 gradient scaler
// (GradScaler, declared in cspn/engine/train.hpp) and batch norm synced over the ranks.
#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include "cspn/core/model/batch_norm.hpp"
#include "cspn/engine/distributed.hpp"
#include "train_internal.hpp"

namespace cspn {
namespace train_detail {
namespace {

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

}  // namespace

Autocast::Autocast(const std::string& precision, torch::Device device) : type_(device.type()) {
  if (precision == "float32") return;
  set_autocast(type_, true, precision == "bfloat16" ? at::kBFloat16 : at::kHalf);
  at::autocast::increment_nesting();
  on_ = true;
}

Autocast::~Autocast() {
  if (!on_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  set_autocast(type_, false, at::kFloat);
}

SyncedBatchNorm::SyncedBatchNorm(torch::nn::Module& net, Distributed* dist, bool sync) : net_(net), on_(dist && sync) {
  if (on_) synchronise_batch_norm(net_, [dist](const torch::Tensor& t) { return dist->sum_differentiable(t); });
}

SyncedBatchNorm::~SyncedBatchNorm() {
  if (on_) synchronise_batch_norm(net_, {});
}

}  // namespace train_detail

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

}  // namespace cspn
