#pragma once
// Batch normalisation whose training statistics may span data-parallel processes (synchronised batch
// norm, for the few crops per GPU of large networks). Parameters and buffers as torchvision's
// BatchNorm2d: weight, bias, running_mean, running_var, num_batches_tracked.
#include <functional>
#include <ostream>

#include <torch/torch.h>

namespace cspn {

// Sums a tensor over every process of a data-parallel group, differentiably: each process gets the
// total, and in backward the total's gradient summed over processes.
using CrossProcessSum = std::function<torch::Tensor(const torch::Tensor&)>;

class BatchNormImpl : public torch::nn::Module {
 public:
  explicit BatchNormImpl(int64_t num_features, double eps = 1e-5, double momentum = 0.1);
  // x [B,C,H,W]. Training: normalised with the batch's statistics, which update the running ones
  // (momentum); with a cross-process sum set, the statistics of every process's batch together, as
  // one process would compute them on the whole global batch. Evaluation: the running statistics.
  torch::Tensor forward(const torch::Tensor& x);
  void pretty_print(std::ostream& stream) const override;

  torch::Tensor weight, bias, running_mean, running_var, num_batches_tracked;
  CrossProcessSum sum_across;  // empty: this process's batch alone
  double eps, momentum;
  bool folded = false;  // by fold_batch_norm: the convolution before it does its work; inference only
};
TORCH_MODULE(BatchNorm);

// For inference: folds each BatchNorm of `module` into the convolution that feeds it (its weights
// scaled, the normalised shift as its bias) and makes the BatchNorm pass its input on, one pass over
// the maps fewer per BatchNorm. The pairs are the structural ones of torchvision's layouts: in a
// Sequential a BatchNorm right after a Conv2d, in another module "bnN" after "convN". Call it on
// float32 weights before moving the module to its device and dtype (`to` reaches the new biases);
// the module must not be trained or saved afterwards. Returns how many BatchNorms were folded.
int fold_batch_norm(torch::nn::Module& module);

// Sets (empty: clears) the cross-process sum of every BatchNorm in `module`; returns how many.
int synchronise_batch_norm(torch::nn::Module& module, const CrossProcessSum& sum_across);

}  // namespace cspn
