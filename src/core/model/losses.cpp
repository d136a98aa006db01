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
  if (!out.coarse.empty() && out.coarse.size() != out.stages.size())
    throw std::invalid_argument("cspn_loss: coarse heatmaps for " + std::to_string(out.coarse.size()) +
                                " stages, answers for " + std::to_string(out.stages.size()));
  LossParts parts;
  parts.total = torch::zeros({}, target.options());
  for (size_t s = 0; s < out.stages.size(); ++s) {
    // Coarse levels: L2 over every present landmark, averaged over the levels (CPN's GlobalNet
    // loss, MSPN's intermediate supervision).
    torch::Tensor coarse = torch::zeros({}, target.options());
    const auto& levels = out.coarse.empty() ? std::vector<torch::Tensor>{} : out.coarse[s];
    for (const auto& level : levels) coarse = coarse + heatmap_l2(level, target, weight);
    if (!levels.empty()) coarse = coarse / static_cast<double>(levels.size());
    // The answer: stage 1 supervises every present landmark (eq. 1), later stages the hardest (eq. 2).
    const auto answer = s == 0 ? heatmap_l2(out.stages[s], target, weight)
                               : ohkm_l2(out.stages[s], target, weight, cfg.ohkm_topk);
    parts.stages.push_back(answer.item<double>());
    parts.coarse.push_back(coarse.item<double>());
    parts.total = parts.total + cfg.global_weight * coarse + answer;
  }
  return parts;
}

}  // namespace cspn
