#include "cspn/core/model/batch_norm.hpp"

#include <string>

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
  if (folded) {
    TORCH_CHECK(!is_training(), "BatchNorm: folded into its convolution for inference, it cannot train");
    return x;
  }
  if (is_training()) num_batches_tracked.add_(1);
  if (!sum_across || !is_training())
    return torch::batch_norm(x, weight, bias, running_mean, running_var, is_training(), momentum, eps,
                             /*cudnn_enabled=*/true);
  const int64_t c = x.size(1);
  const auto xf = x.to(torch::kFloat);
  // Per process: mean and variance in one pass (Welford: no cancellation), then per channel in
  // float64 the count-weighted sums that one collective adds up over the processes.
  const auto [var_here, mean_here] = torch::var_mean(xf, {0, 2, 3}, /*unbiased=*/false);
  const double n = static_cast<double>(x.numel() / c);
  const auto m = mean_here.to(torch::kDouble);
  const auto totals = sum_across(torch::cat({m * n, (var_here.to(torch::kDouble) + m * m) * n, torch::full({1}, n, m.options())}));
  const auto count = totals.narrow(0, 2 * c, 1);
  const auto mean = totals.narrow(0, 0, c) / count;
  const auto var = (totals.narrow(0, c, c) / count - mean * mean).clamp_min(0);  // biased, for normalising
  {
    torch::NoGradGuard no_grad;
    const auto total = count.item<double>();
    running_mean.mul_(1 - momentum).add_(mean.to(running_mean.scalar_type()) * momentum);
    running_var.mul_(1 - momentum).add_(var.to(running_var.scalar_type()) * (momentum * total / std::max(total - 1, 1.0)));  // unbiased
  }
  // y = x * scale + shift, per channel: one pass over the maps.
  const auto scale = weight.to(torch::kDouble) * torch::rsqrt(var + eps);
  const auto shift = bias.to(torch::kDouble) - mean * scale;
  const std::vector<int64_t> shape{1, c, 1, 1};
  return torch::addcmul(shift.to(torch::kFloat).view(shape), xf, scale.to(torch::kFloat).view(shape)).to(x.scalar_type());
}

void BatchNormImpl::pretty_print(std::ostream& stream) const {
  stream << "cspn::BatchNorm(" << weight.size(0) << ", eps=" << eps << ", momentum=" << momentum
         << (sum_across ? ", synchronised" : "") << ")";
}

namespace {

void fold_into(torch::nn::Conv2dImpl& conv, BatchNormImpl& bn) {
  TORCH_CHECK(!bn.folded, "fold_batch_norm: a BatchNorm is folded already");
  TORCH_CHECK(conv.weight.size(0) == bn.weight.size(0), "fold_batch_norm: the convolution gives ",
              conv.weight.size(0), " channels, its BatchNorm takes ", bn.weight.size(0));
  torch::NoGradGuard no_grad;
  const auto scale = bn.weight.to(torch::kDouble) * torch::rsqrt(bn.running_var.to(torch::kDouble) + bn.eps);
  auto shift = bn.bias.to(torch::kDouble) - bn.running_mean.to(torch::kDouble) * scale;
  if (conv.bias.defined()) shift = shift + conv.bias.to(torch::kDouble) * scale;
  conv.weight.mul_(scale.view({-1, 1, 1, 1}).to(conv.weight.scalar_type()));
  // The BatchNorm's registered bias carries the shift, and the convolution shares that tensor, so a
  // later module.to(device, dtype), which converts registered tensors in place, converts it once
  // for both (the convolution's own bias slot is registered empty and cannot be replaced).
  bn.bias.copy_(shift.to(bn.bias.scalar_type()));
  conv.bias = bn.bias;
  bn.folded = true;
}

}  // namespace

int fold_batch_norm(torch::nn::Module& module) {
  int count = 0;
  for (const auto& m : module.modules()) {
    const auto children = m->named_children();
    const bool chain = dynamic_cast<torch::nn::SequentialImpl*>(m.get()) != nullptr;
    for (size_t i = 0; i < children.size(); ++i) {
      auto* bn = dynamic_cast<BatchNormImpl*>(children[i].value().get());
      if (!bn) continue;
      torch::nn::Conv2dImpl* conv = nullptr;
      const std::string& name = children[i].key();
      if (chain && i > 0) {
        conv = dynamic_cast<torch::nn::Conv2dImpl*>(children[i - 1].value().get());
      } else if (!chain && name.rfind("bn", 0) == 0) {
        const auto* found = children.find("conv" + name.substr(2));
        if (found) conv = dynamic_cast<torch::nn::Conv2dImpl*>(found->get());
      }
      if (conv) {
        fold_into(*conv, *bn);
        ++count;
      }
    }
  }
  return count;
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
