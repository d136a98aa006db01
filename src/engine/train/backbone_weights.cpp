// load_backbone_weights: a backbone's starting weights from a file (ImageNet's or an earlier model
// file's), for model.keypoints.pretrained and model.detector.pretrained alike.
#include <algorithm>
#include <stdexcept>

#include <spdlog/spdlog.h>

#include "cspn/core/io/weights.hpp"
#include "train_internal.hpp"

namespace cspn::train_detail {

void load_backbone_weights(BackboneImpl& backbone, const std::string& path, const BackboneLoad& how) {
  const StateDict weights = read_weights(path);
  const bool model_file = !how.model_prefix.empty() && std::any_of(weights.begin(), weights.end(), [&](const auto& kv) {
    return kv.first.rfind(how.model_prefix, 0) == 0;
  });
  const LoadReport report =
      load_state_dict(backbone, weights, model_file ? how.model_prefix : "", backbone.skipped_keys());
  if (!how.setting.empty() && (report.loaded == 0 || !report.missing.empty() || !report.mismatched.empty()))
    throw std::invalid_argument(how.setting + ": " + path + " does not hold a whole " + how.backbone_name +
                                " backbone: " + report.summary());
  spdlog::info("{} weights from {}: {} tensors loaded\n{}", how.what, path, report.loaded, report.summary());
}

}  // namespace cspn::train_detail
