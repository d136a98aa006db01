// The detector's phase: Faster R-CNN and its starting backbone, its loss on whole training images
// and its validation (box AP).
#include <cstdio>
#include <stdexcept>

#include <spdlog/spdlog.h>

#include "cspn/core/io/weights.hpp"
#include "cspn/engine/detector_ap.hpp"
#include "cspn/engine/garment_detector.hpp"
#include "cspn/engine/loader.hpp"
#include "train_internal.hpp"

namespace cspn::train_detail {
namespace {

std::string describe_detector(const nlohmann::json& m) {
  if (!m["det_ap50"].is_number()) return std::string("no ground-truth boxes");
  char text[96];
  std::snprintf(text, sizeof text, "det_ap50 %.4f, det_ap %.4f", m["det_ap50"].get<double>(),
                m["det_ap"].get<double>());
  return std::string(text);
}

}  // namespace

FasterRCNN detector_network(const Config& cfg, const LandmarkSchema& schema, const CSPNNet& keypoint_net) {
  const DetectorModelConfig& dc = cfg.model.detector;
  FasterRCNN net(dc, schema.num_categories() + 1);
  if (dc.backbone_from_keypoints) {
    // The landmark network's backbone (trained on garment crops just before) starts the trunk.
    const auto report =
        load_state_dict(*net->backbone(), state_dict(*keypoint_net->backbone), "", net->backbone()->skipped_keys());
    spdlog::info("detector backbone from the landmark network: {} tensors loaded", report.loaded);
  } else if (!dc.pretrained.empty()) {
    load_backbone_weights(*net->backbone(), dc.pretrained, {"detector backbone", "", "", ""});
  }
  return net;
}

nlohmann::json train_detector(const RunContext& run, FasterRCNN net, const Dataset& train_set, const Dataset& val_set,
                              const TrainConfig& tc, const std::string& name) {
  const Config& cfg = run.cfg;
  DetectionBatcher batcher(train_set, cfg, true);
  if (batcher.size() == 0) throw std::invalid_argument("the training set has no image with a garment box");
  const torch::Device device = run.device;
  Phase phase{name, net.ptr(), tc, batcher.size(), batches_of(batcher),
              [net, device](const std::any& any) mutable {
                const auto& batch = std::any_cast<const DetectorBatch&>(any);
                const auto losses = net->losses(batch.images.to(device), batch.targets);
                torch::Tensor total = torch::zeros({}, batch.images.options().device(device));
                nlohmann::json parts;
                for (const auto& [name, value] : losses) {
                  total = total + value;
                  parts[name] = value.item<double>();
                }
                return std::make_pair(total, parts);
              },
              {}, describe_detector,
              /*find_unused=*/true};  // a batch without positive proposals leaves box regression idle
  if (!val_set.samples.empty())
    phase.validate = [&run, net, &val_set] {
      GarmentDetector detector(net, run.cfg, val_set.schema, run.device);
      return detector_ap(detector, val_set, run.cfg);
    };
  const PhaseResult result = run_phase(phase, run);
  return {{"validation", result.validation}, {"train_images", batcher.size()}, {"epochs", result.epochs}};
}

}  // namespace cspn::train_detail
