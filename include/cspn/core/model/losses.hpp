#pragma once
// Heatmap losses of the paper: L2 over all present landmarks (eq. 1) for stage 1 and L2 with
// online hard keypoint mining (eq. 2, the K landmarks with the largest loss) for stages 2..4.
#include <functional>
#include <vector>

#include <torch/torch.h>

#include "cspn/core/config.hpp"
#include "cspn/core/model/cspn_net.hpp"

namespace cspn {

// pred, target [B,K,h,w]; weight [B,K] (0 = landmark absent/unsupervised).
// -> per-landmark mean squared error [B,K] (not weighted).
torch::Tensor landmark_l2(const torch::Tensor& pred, const torch::Tensor& target);

// Mean of the per-landmark L2 over landmarks with weight > 0 (eq. 1), each multiplied by its
// weight (with 0/1 weights: the plain mean over present landmarks). Scalar; 0 when none is present.
// `present`, when given, replaces this batch's count of present landmarks as the divisor.
torch::Tensor heatmap_l2(const torch::Tensor& pred, const torch::Tensor& target,
                         const torch::Tensor& weight, const torch::Tensor& present = {});

// Per sample, the top_k largest weighted per-landmark losses are averaged, then averaged over
// the batch (eq. 2, n = K). Samples with fewer than K present landmarks use the ones they have;
// samples with none are left out of the batch mean. Scalar; 0 when no landmark is present.
// `samples`, when given, replaces this batch's count of samples with a present landmark as the divisor.
torch::Tensor ohkm_l2(const torch::Tensor& pred, const torch::Tensor& target,
                      const torch::Tensor& weight, int top_k, const torch::Tensor& samples = {});

// Targets [B,K,h,w] that are Gaussians of `sigma` (heatmap pixels, peak 1) -> Gaussians of
// sqrt(sigma^2 + extra^2), peak 1 again (a separable blur by `extra`, rescaled). extra = 0: target.
torch::Tensor widen_targets(const torch::Tensor& target, double sigma, double extra);

struct LossParts {
  torch::Tensor total;             // scalar to back-propagate
  std::vector<double> stages;      // each stage's loss value (for logs)
  double global = 0;               // the GlobalNet loss value (sum over levels, before global_weight)
};

// Stage 1: L2 on every GlobalNet level (summed, times loss.global_weight; training only) and on its
// answer; stages 2..: OHKM with loss.ohkm_topk. `targets` hold Gaussians of `sigma` (heatmap px),
// [B,K,h,w] one per heatmap size the net outputs (stage 1's, and a later stage's where it answers at
// another stride); each output learns the one of its size. With loss.coarse_to_fine earlier stages
// and coarser levels learn wider ones (widen_targets); with loss.same_stride_sigma a stage at the
// stride of the one before learns narrower ones.
// In data-parallel training `mean_across` maps this batch's counts (present landmarks, samples with
// one) to their mean per process, so that the gradients averaged over processes are those of one
// process on the whole global batch; empty: this batch's counts.
LossParts cspn_loss(const CSPNOutput& out, const std::vector<torch::Tensor>& targets, const torch::Tensor& weight,
                    const LossConfig& cfg, double sigma,
                    const std::function<torch::Tensor(const torch::Tensor&)>& mean_across = {});

}  // namespace cspn
