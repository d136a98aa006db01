#include "cspn/model/batch_norm.hpp"

namespace cspn {

BatchNormImpl::BatchNormImpl(int64_t num_features, double eps_, double momentum_)
    : torch::nn::Module("BatchNorm2d"), eps(eps_), momentum(momentum_) {
  weight = register_parameter("weight", torch::ones({num_features}));
  bias = register_parameter("bias", torch::zeros({num_features}));
  running_mean = register_buffer("running_mean", torch::zeros({num_features}));
  running_var = register_buffer("running_var", torch::ones({num_features}));
  num_batches_tracked = register_buffer("num_batches_tracked", torch::zeros({}, torch::kLong));
}

torch::Tensor BatchNormImpl::forward(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() == 4, "BatchNorm: expected a [B,C,H,W] input, got ", x.sizes());
  if (is_training()) num_batches_tracked.add_(1);
  if (!sum_across || !is_training())
    return torch::batch_norm(x, weight, bias, running_mean, running_var, is_training(), momentum, eps,
                             /*cudnn_enabled=*/true);
  const int64_t c = x.size(1);
  // Sums in float64: E[x^2] - E[x]^2 in float32 loses digits where the mean is large.
  const auto xd = x.to(torch::kDouble);
  const auto local_count = torch::full({1}, static_cast<double>(x.numel() / c), xd.options());
  // One collective per layer: per-channel sums and sums of squares, and the element count.
  const auto totals = sum_across(torch::cat({xd.sum({0, 2, 3}), xd.pow(2).sum({0, 2, 3}), local_count}));
  const auto count = totals.narrow(0, 2 * c, 1);
  const auto mean = totals.narrow(0, 0, c) / count;
  const auto var = (totals.narrow(0, c, c) / count - mean.pow(2)).clamp_min(0);  // biased, for normalising
  {
    torch::NoGradGuard no_grad;
    const auto n = count.item<double>();
    running_mean.mul_(1 - momentum).add_(mean.detach().to(running_mean.scalar_type()) * momentum);
    running_var.mul_(1 - momentum).add_(var.detach().to(running_var.scalar_type()) * (momentum * n / std::max(n - 1, 1.0)));  // unbiased
  }
  const std::vector<int64_t> shape{1, c, 1, 1};
  const auto xf = x.to(torch::kFloat);
  const auto scale = torch::rsqrt(var + eps).to(torch::kFloat).view(shape);
  return ((xf - mean.to(torch::kFloat).view(shape)) * scale * weight.view(shape) + bias.view(shape)).to(x.scalar_type());
}

void BatchNormImpl::pretty_print(std::ostream& stream) const {
  stream << "cspn::BatchNorm(" << weight.size(0) << ", eps=" << eps << ", momentum=" << momentum
         << (sum_across ? ", synchronised" : "") << ")";
}

int synchronise_batch_norm(torch::nn::Module& module, const CrossProcessSum& sum_across) {
  int count = 0;
  for (const auto& m : module.modules()) {
    if (auto* bn = dynamic_cast<BatchNormImpl*>(m.get())) {
      bn->sum_across = sum_across;
      ++count;
    }
  }
  return count;
}

}  // namespace cspn
