#pragma once
// Heatmap losses of the paper: L2 over all present landmarks (eq. 1) for stage 1 and L2 with
// online hard keypoint mining (eq. 2, the K landmarks with the largest loss) for stages 2..4.
#include <vector>

#include <torch/torch.h>

#include "cspn/config.hpp"
#include "cspn/model/cspn_net.hpp"

namespace cspn {

// pred, target [B,K,h,w]; weight [B,K] (0 = landmark absent/unsupervised).
// -> per-landmark mean squared error [B,K] (not weighted).
torch::Tensor landmark_l2(const torch::Tensor& pred, const torch::Tensor& target);

// Mean of the per-landmark L2 over landmarks with weight > 0 (eq. 1), each multiplied by its
// weight (with 0/1 weights: the plain mean over present landmarks). Scalar; 0 when none is present.
torch::Tensor heatmap_l2(const torch::Tensor& pred, const torch::Tensor& target,
                         const torch::Tensor& weight);

// Per sample, the top_k largest weighted per-landmark losses are averaged, then averaged over
// the batch (eq. 2, n = K). Samples with fewer than K present landmarks use the ones they have;
// samples with none are left out of the batch mean. Scalar; 0 when no landmark is present.
torch::Tensor ohkm_l2(const torch::Tensor& pred, const torch::Tensor& target,
                      const torch::Tensor& weight, int top_k);

struct LossParts {
  torch::Tensor total;             // scalar to back-propagate
  std::vector<double> stages;      // each stage's answer loss (for logs)
  std::vector<double> coarse;      // each stage's coarse-level loss, mean over its levels (0 without)
};

// Per stage: L2 on its coarse levels (mean over levels, times loss.global_weight; none in eval
// mode) plus its answer's loss: L2 for stage 1, OHKM with loss.ohkm_topk for stages 2..
LossParts cspn_loss(const CSPNOutput& out, const torch::Tensor& target, const torch::Tensor& weight,
                    const LossConfig& cfg);

}  // namespace cspn
