#include "cspn/model/losses.hpp"

#include <algorithm>
#include <sstream>
#include <stdexcept>
#include <string>

namespace cspn {

namespace {

std::string shape_of(const torch::Tensor& t) {
  std::ostringstream os;
  os << t.sizes();
  return os.str();
}

void check_heatmaps(const torch::Tensor& pred, const torch::Tensor& target, const char* where) {
  if (pred.dim() != 4 || !pred.sizes().equals(target.sizes()))
    throw std::invalid_argument(std::string(where) + ": expected pred and target [B,K,h,w] of the "
                                "same shape, got " + shape_of(pred) + " and " + shape_of(target));
}

void check_weight(const torch::Tensor& pred, const torch::Tensor& weight, const char* where) {
  if (weight.dim() != 2 || weight.size(0) != pred.size(0) || weight.size(1) != pred.size(1))
    throw std::invalid_argument(std::string(where) + ": expected weight [B,K] = [" +
                                std::to_string(pred.size(0)) + ", " + std::to_string(pred.size(1)) +
                                "], got " + shape_of(weight));
}

}  // namespace

torch::Tensor landmark_l2(const torch::Tensor& pred, const torch::Tensor& target) {
  check_heatmaps(pred, target, "landmark_l2");
  return (pred - target).pow(2).mean({2, 3});
}

torch::Tensor heatmap_l2(const torch::Tensor& pred, const torch::Tensor& target,
                         const torch::Tensor& weight) {
  check_heatmaps(pred, target, "heatmap_l2");
  check_weight(pred, weight, "heatmap_l2");
  const auto loss = landmark_l2(pred, target);                        // [B,K]
  const auto w = weight.to(loss.dtype()).clamp_min(0);                // absent: 0
  const auto present = (weight > 0).sum().clamp_min(1).to(loss.dtype());
  return (loss * w).sum() / present;
}

torch::Tensor ohkm_l2(const torch::Tensor& pred, const torch::Tensor& target,
                      const torch::Tensor& weight, int top_k) {
  check_heatmaps(pred, target, "ohkm_l2");
  check_weight(pred, weight, "ohkm_l2");
  if (top_k < 1) throw std::invalid_argument("ohkm_l2: top_k must be >= 1, got " + std::to_string(top_k));
  const auto loss = landmark_l2(pred, target) * weight.to(pred.dtype()).clamp_min(0);  // [B,K]
  const auto present = (weight > 0).to(loss.dtype());                                  // [B,K]
  // Absent landmarks rank below every present one (losses are >= 0), so the top k of this key
  // are the k hardest present landmarks, followed by absent ones when fewer than k are present.
  const auto key = torch::where(weight > 0, loss.detach(), torch::full_like(loss, -1));
  const int64_t k = std::min<int64_t>(top_k, pred.size(1));
  const auto idx = std::get<1>(key.topk(k, /*dim=*/1));                                // [B,k]
  const auto chosen = present.gather(1, idx);                                          // [B,k]
  const auto count = chosen.sum(1);                                                    // [B]
  const auto per_sample = (loss.gather(1, idx) * chosen).sum(1) / count.clamp_min(1);  // [B]
  return per_sample.sum() / (count > 0).sum().clamp_min(1).to(loss.dtype());
}

LossParts cspn_loss(const CSPNOutput& out, const torch::Tensor& target, const torch::Tensor& weight,
                    const LossConfig& cfg) {
  if (out.stages.empty()) throw std::invalid_argument("cspn_loss: the output has no stages");
  LossParts parts;
  torch::Tensor global = torch::zeros({}, target.options());
  for (const auto& level : out.global) global = global + heatmap_l2(level, target, weight);
  parts.global = global.item<double>();
  parts.total = cfg.global_weight * global;
  for (size_t s = 0; s < out.stages.size(); ++s) {
    // Stage 1 supervises every present landmark (eq. 1), later stages the hardest ones (eq. 2).
    const auto loss = s == 0 ? heatmap_l2(out.stages[s], target, weight)
                             : ohkm_l2(out.stages[s], target, weight, cfg.ohkm_topk);
    parts.stages.push_back(loss.item<double>());
    parts.total = parts.total + loss;
  }
  return parts;
}

}  // namespace cspn
