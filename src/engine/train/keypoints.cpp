// The landmark network's phase: the network and its starting backbone, its loss on garment crops,
// its validation (both NE protocols and PCK, per stage) and the training on the real crops.
#include <cstdio>
#include <stdexcept>

#include "cspn/core/metrics.hpp"
#include "cspn/core/model/losses.hpp"
#include "cspn/core/model/resnet.hpp"
#include "cspn/engine/distributed.hpp"
#include "cspn/engine/evaluate.hpp"
#include "cspn/engine/landmark_predictor.hpp"
#include "cspn/engine/loader.hpp"
#include "train_internal.hpp"

namespace cspn::train_detail {
namespace {

nlohmann::json validate_keypoints(CSPNNet net, Config cfg, const Dataset& val, torch::Device device) {
  cfg.test.precision = "float32";  // the network being trained stays in float32
  LandmarkPredictor predictor(net, cfg, val.schema, device);
  CropBatcher batcher(val, CropBatcher::ground_truth_jobs(val), cfg, false);
  std::vector<CropJob> jobs(batcher.size());
  for (size_t i = 0; i < jobs.size(); ++i) jobs[i] = batcher.job(i);
  StageMetrics metrics(val.schema, net->num_stages());
  metrics.add(val, jobs, predictor.predict_jobs(batcher, {}, /*all_stages=*/true).stage_coords);
  auto result = metrics.last().result();
  result["per_stage"] = metrics.per_stage();
  return result;
}

std::string describe_keypoints(const nlohmann::json& m) {
  char text[128];
  std::snprintf(text, sizeof text, "ne_image %.4f, ne_paper %.4f, pck@0.2 %.3f; ", metric_value(m["ne_image"]["avg"]),
                metric_value(m["ne_paper"]["avg"]), metric_value(m["pck_0_2"]));
  return text + StageMetrics::describe(m["per_stage"]);
}

}  // namespace

CSPNNet keypoint_network(const Config& cfg, const LandmarkSchema& schema) {
  const KeypointModelConfig& kc = cfg.model.keypoints;
  CSPNNet net(kc, schema.num_landmarks());
  // ImageNet weights (.pth/.safetensors, torchvision keys), or the backbone of an earlier landmark
  // model file (.cspn, keys "keypoints.backbone.*"), e.g. one trained on synthetic garments.
  if (!kc.pretrained.empty())
    load_backbone_weights(*net->backbone, kc.pretrained,
                          {"backbone", "keypoints.backbone.", "model.keypoints.pretrained", kc.backbone});
  // Channels-last weights and crops, as inference runs them: oneDNN's convolutions then skip the
  // layout reorders in both passes (robot.yaml's training step 1.2x faster on 2 CPU cores).
  use_channels_last(*net);
  return net;
}

Phase::Loss keypoint_loss(const RunContext& run, CSPNNet net) {
  return [&run, net](const std::any& any) mutable {
    const torch::Device device = run.device;
    Distributed* dist = run.dist;
    const auto& batch = std::any_cast<const KeypointBatch&>(any);
    auto output = net->forward(batch.images.to(device).contiguous(torch::MemoryFormat::ChannelsLast));
    // The loss in float32, whatever precision autocast ran the network in.
    for (auto& map : output.stages) map = map.to(torch::kFloat);
    for (auto& map : output.global) map = map.to(torch::kFloat);
    std::vector<torch::Tensor> targets;
    for (const auto& t : batch.targets) targets.push_back(t.to(device));
    std::function<torch::Tensor(const torch::Tensor&)> mean_across;
    if (dist) mean_across = [dist](const torch::Tensor& counts) { return dist->sum(counts) / dist->world_size(); };
    LossParts loss = cspn_loss(output, targets, batch.weights.to(device), run.cfg.loss, run.cfg.model.keypoints.sigma,
                               mean_across);
    return std::make_pair(loss.total, nlohmann::json{{"stages", loss.stages}, {"global", loss.global}});
  };
}

nlohmann::json train_keypoints(const RunContext& run, CSPNNet net, const Dataset& train_set, const Dataset& val_set,
                               const TrainConfig& tc, const std::string& name) {
  const Config& cfg = run.cfg;
  CropBatcher batcher(train_set, CropBatcher::ground_truth_jobs(train_set), cfg, true);
  if (batcher.size() == 0) throw std::invalid_argument("the training set has no garment with landmarks");
  Phase phase{name, net.ptr(), tc, batcher.size(), batches_of(batcher), keypoint_loss(run, net), {},
              describe_keypoints};
  if (!val_set.samples.empty())
    phase.validate = [&run, net, &val_set] { return validate_keypoints(net, run.cfg, val_set, run.device); };
  const PhaseResult result = run_phase(phase, run);
  return {{"validation", result.validation}, {"train_garments", batcher.size()}, {"epochs", result.epochs}};
}

}  // namespace cspn::train_detail
