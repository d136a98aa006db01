// The learning-rate schedule (warm-up, then cosine or step decay) and the optimizer a phase trains
// with.
#include <algorithm>
#include <cmath>

#include "train_internal.hpp"

namespace cspn::train_detail {

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

}  // namespace cspn::train_detail
