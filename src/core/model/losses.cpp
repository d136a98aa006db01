#include "cspn/core/model/losses.hpp"
#include "cspn/core/util.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace cspn {

namespace {

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

// A separable Gaussian kernel of standard deviation t, normalised to sum 1: [2r+1].
torch::Tensor gaussian_kernel(double t, const torch::TensorOptions& options) {
  const int64_t r = static_cast<int64_t>(std::ceil(3 * t));
  const auto x = torch::arange(-r, r + 1, options);
  const auto k = torch::exp(-x * x / (2 * t * t));
  return k / k.sum();
}

}  // namespace

torch::Tensor widen_targets(const torch::Tensor& target, double sigma, double extra) {
  if (target.dim() != 4) throw std::invalid_argument("widen_targets: expected [B,K,h,w], got " + shape_of(target));
  if (!(sigma > 0) || !(extra >= 0))
    throw std::invalid_argument("widen_targets: need sigma > 0 and extra >= 0, got " + std::to_string(sigma) +
                                " and " + std::to_string(extra));
  if (extra == 0) return target;
  const auto k = gaussian_kernel(extra, target.options());
  const int64_t r = (k.size(0) - 1) / 2;
  auto x = target.reshape({-1, 1, target.size(2), target.size(3)});
  x = torch::conv2d(x, k.view({1, 1, -1, 1}), {}, 1, torch::IntArrayRef{r, 0});
  x = torch::conv2d(x, k.view({1, 1, 1, -1}), {}, 1, torch::IntArrayRef{0, r});
  // A Gaussian of sigma s blurred by one of t is a Gaussian of sqrt(s^2 + t^2) whose peak fell by
  // s^2 / (s^2 + t^2): scale it back to 1.
  return (x * ((sigma * sigma + extra * extra) / (sigma * sigma))).view(target.sizes());
}

torch::Tensor landmark_l2(const torch::Tensor& pred, const torch::Tensor& target) {
  check_heatmaps(pred, target, "landmark_l2");
  return (pred - target).pow(2).mean({2, 3});
}

torch::Tensor heatmap_l2(const torch::Tensor& pred, const torch::Tensor& target,
                         const torch::Tensor& weight, const torch::Tensor& present) {
  check_heatmaps(pred, target, "heatmap_l2");
  check_weight(pred, weight, "heatmap_l2");
  const auto loss = landmark_l2(pred, target);                        // [B,K]
  const auto w = weight.to(loss.dtype()).clamp_min(0);                // absent: 0
  const auto count = present.defined() ? present : (weight > 0).sum();
  return (loss * w).sum() / count.clamp_min(1).to(loss.dtype());
}

torch::Tensor ohkm_l2(const torch::Tensor& pred, const torch::Tensor& target,
                      const torch::Tensor& weight, int top_k, const torch::Tensor& samples) {
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
  const auto divisor = samples.defined() ? samples : (count > 0).sum();
  return per_sample.sum() / divisor.clamp_min(1).to(loss.dtype());
}

LossParts cspn_loss(const CSPNOutput& out, const std::vector<torch::Tensor>& targets, const torch::Tensor& weight,
                    const LossConfig& cfg, double sigma,
                    const std::function<torch::Tensor(const torch::Tensor&)>& mean_across) {
  if (out.stages.empty()) throw std::invalid_argument("cspn_loss: the output has no stages");
  if (targets.empty()) throw std::invalid_argument("cspn_loss: no targets");
  const auto n = static_cast<int64_t>(out.stages.size());
  // Coarse to fine: an output `steps` from the last stage's answer learns targets widened by
  // coarse_to_fine x steps pixels: stage s's answer n-1-s steps, GlobalNet level l n-1+l.
  // A stage that answers at the stride of `repeats` stages before it learns Gaussians
  // same_stride_sigma^repeats times as wide: a Gaussian's power a is the Gaussian 1/sqrt(a) as wide.
  std::map<std::tuple<size_t, int64_t, int64_t>, torch::Tensor> shaped;  // targets as each output learns them
  const auto target_at = [&](const torch::Tensor& pred, int64_t steps, int64_t repeats) {
    size_t i = 0;
    while (i < targets.size() && !(targets[i].dim() == 4 && targets[i].sizes().slice(2) == pred.sizes().slice(2))) ++i;
    if (i == targets.size()) {
      std::string sizes;
      for (const auto& t : targets) sizes += (sizes.empty() ? "" : ", ") + shape_of(t);
      throw std::invalid_argument("cspn_loss: no target of the size of output " + shape_of(pred) + " among " + sizes);
    }
    auto it = shaped.find({i, steps, repeats});
    if (it == shaped.end()) {
      auto t = widen_targets(targets[i], sigma, cfg.coarse_to_fine * steps);
      if (repeats > 0 && cfg.same_stride_sigma != 1.0f) t = t.pow(std::pow(cfg.same_stride_sigma, -2.0 * repeats));
      it = shaped.emplace(std::make_tuple(i, steps, repeats), t).first;
    }
    return it->second;
  };
  // The divisors of eq. 1 and eq. 2 depend on the weights alone: present landmarks, and samples
  // with at least one (as many as have a top-k landmark).
  torch::Tensor present, samples;
  if (mean_across) {
    const auto present_now = (weight > 0);
    const auto counts = mean_across(torch::stack({present_now.sum(), present_now.any(1).sum()}).to(torch::kFloat));
    present = counts[0];
    samples = counts[1];
  }
  LossParts parts;
  torch::Tensor global = torch::zeros({}, targets[0].options());
  for (size_t l = 0; l < out.global.size(); ++l)
    global = global + heatmap_l2(out.global[l], target_at(out.global[l], n - 1 + static_cast<int64_t>(l), 0), weight, present);
  parts.global = global.item<double>();
  parts.total = cfg.global_weight * global;
  for (int64_t s = 0; s < n; ++s) {
    // Stage 1 supervises every present landmark (eq. 1), later stages the hardest ones (eq. 2).
    const auto& pred = out.stages[s];
    int64_t repeats = 0;
    while (repeats < s && out.stages[s - 1 - repeats].sizes().slice(2) == pred.sizes().slice(2)) ++repeats;
    const auto& t = target_at(pred, n - 1 - s, repeats);
    const auto loss = s == 0 ? heatmap_l2(pred, t, weight, present) : ohkm_l2(pred, t, weight, cfg.ohkm_topk, samples);
    parts.stages.push_back(loss.item<double>());
    parts.total = parts.total + loss;
  }
  return parts;
}

}  // namespace cspn
