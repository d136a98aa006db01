#pragma once
// The landmark half at inference: a CSPN network with its codec, schema and test settings, turning
// garment crops into landmarks.
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "cspn/core/codec.hpp"
#include "cspn/core/config.hpp"
#include "cspn/core/io/model_file.hpp"
#include "cspn/core/model/cspn_net.hpp"

namespace cspn {

class CropBatcher;

struct LandmarkPredictions {
  torch::Tensor coords;                      // [N,K,2] the last stage's landmarks
  torch::Tensor scores;                      // [N,K] their heatmap peaks
  std::vector<torch::Tensor> stage_coords;   // when asked for: every stage's [N,K,2], in stage order
                                             // (back() equals coords)
  torch::Tensor flip_offsets;                // with the flip test: [N,K,2] the last stage's landmarks
                                             // from the plain crop minus those from the mirrored one
                                             // (undefined without it)
};

class LandmarkPredictor {
 public:
  LandmarkPredictor(CSPNNet net, const Config& cfg, LandmarkSchema schema, torch::Device device);
  // From a model file's "keypoints.*" tensors.
  static LandmarkPredictor from_model_file(const ModelFile& file, torch::Device device);

  // images [B,3,H,W] crops (any device) -> landmarks in crop pixels, on the CPU; every stage's
  // too with all_stages. With test.flip the mirrored crops run in the same batch and each stage's
  // heatmaps are averaged.
  // `flip` overrides test.flip for this call.
  LandmarkPredictions predict_crops(const torch::Tensor& images, bool all_stages = false,
                                    std::optional<bool> flip = std::nullopt);

  // Every job's landmarks in image pixels (N = J jobs). progress(done, total) after each batch.
  LandmarkPredictions predict_jobs(const CropBatcher& batcher, const std::function<void(size_t, size_t)>& progress = {},
                                   bool all_stages = false, std::optional<bool> flip = std::nullopt);

  // The crops as the network takes them: on the device, in test.precision, channels-last.
  torch::Tensor network_input(const torch::Tensor& images) const;
  // Every stage's heatmaps [B,K,H/4,W/4], float32, for crops `images` (any device and dtype), run
  // in inference mode and test.precision.
  std::vector<torch::Tensor> run_network(const torch::Tensor& images);

  CSPNNet& net() { return net_; }
  const Config& config() const { return cfg_; }
  const LandmarkSchema& schema() const { return schema_; }
  torch::Device device() const { return device_; }

 private:
  CSPNNet net_;
  Config cfg_;
  LandmarkSchema schema_;
  std::vector<HeatmapCodec> codecs_;  // one per stage, HeatmapCodec::for_stage
  torch::Device device_;
  torch::ScalarType dtype_;
};

}  // namespace cspn
