#pragma once
// The Cascaded Stacked Pyramid Network (PAPER.md): a ResNet backbone, a first stage in the style of
// CPN (GlobalNet pyramid + RefineNet), and up to three further stages, each a light
// encoder-decoder fed by the previous stage's pyramid features and heatmaps. Every stage is
// supervised.
#include <vector>

#include <torch/torch.h>

#include "cspn/config.hpp"
#include "cspn/model/resnet.hpp"

namespace cspn {

struct CSPNOutput {
  std::vector<torch::Tensor> global;  // stage 1 GlobalNet heatmaps, one per pyramid level, [B,K,h,w]
  std::vector<torch::Tensor> stages;  // final heatmaps of each stage, [B,K,h,w]; back() is the answer
};

// What one stage hands to the next. The backbone's output is written as a StageOutput too
// (pyramid = C2..C5, no heatmaps), so stages chain uniformly.
struct StageOutput {
  std::vector<torch::Tensor> pyramid;  // 4 levels, finest first: [B,C_l,H/4,W/4] .. [B,C_l,H/32,W/32]
  torch::Tensor heatmaps;              // [B,K,H/4,W/4]; undefined for the backbone
  std::vector<torch::Tensor> global;   // stage 1 only: GlobalNet heatmaps per level, [B,K,H/4,W/4]
};

// Stage 1, after CPN. GlobalNet: 1x1 lateral convs C2..C5 -> `channels`, top-down bilinear
// upsample + add (pyramid P2..P5), a heatmap head per level upsampled to the P2 size.
// RefineNet: level l of the pyramid passes l bottlenecks (0 for P2 .. 3 for P5), is upsampled to
// the P2 size, the four are concatenated and fused by a bottleneck and a 3x3 heatmap head.
class CPNStageImpl : public torch::nn::Module {
 public:
  CPNStageImpl(const std::vector<int64_t>& in_channels, int64_t channels, int64_t num_landmarks);
  // backbone.pyramid = C2..C5 -> pyramid P2..P5 [B,channels,..], heatmaps, global heatmaps.
  StageOutput forward(const StageOutput& backbone);

 private:
  std::vector<torch::nn::Sequential> lateral_, global_head_, refine_;
  torch::nn::Sequential fuse_{nullptr};
};
TORCH_MODULE(CPNStage);

// Stages 2..4, after MSPN. Encoder: level 0 starts from 1x1 projections of the previous
// heatmaps and of the previous P2; each deeper level is a stride-2 bottleneck of the level above
// plus a 1x1 projection of the previous stage's pyramid at that level (cross-stage aggregation).
// Decoder: 1x1 laterals, top-down bilinear upsample + add. Head on the finest level.
class CascadeStageImpl : public torch::nn::Module {
 public:
  CascadeStageImpl(int64_t channels, int64_t num_landmarks);
  // previous.pyramid [B,channels,..] x4, previous.heatmaps [B,K,H/4,W/4] -> the same, refined.
  StageOutput forward(const StageOutput& previous);

 private:
  std::vector<torch::nn::Sequential> cross_, lateral_;
  std::vector<Bottleneck> encoder_;
  torch::nn::Sequential heatmap_in_{nullptr}, head_{nullptr};
};
TORCH_MODULE(CascadeStage);

class CSPNNetImpl : public torch::nn::Module {
 public:
  CSPNNetImpl(const KeypointModelConfig& cfg, int num_landmarks);

  // x [B,3,H,W] ImageNet-normalised RGB crops -> heatmaps at (H/4, W/4). H and W must be
  // multiples of 32.
  CSPNOutput forward(const torch::Tensor& x);

  ResNet backbone{nullptr};           // registered as "backbone": keys "backbone.layer1.0.conv1.weight"
  int num_stages() const;
  // Runs the backbone and stages 1..n separately so callers (cspn info, cspn bench) can measure
  // each: features = backbone->features(x); then stage_forward(i, ...) for i = 0..n-1.
  // i = 0 takes StageOutput{features}; stage i > 0 takes stage i-1's output.
  StageOutput stage_forward(int i, const StageOutput& input);
  // Stage i (0-based) as a module, e.g. to count its parameters. Registered as "stage<i+1>".
  torch::nn::Module& stage(int i);

 private:
  CPNStage stage1_{nullptr};
  std::vector<CascadeStage> cascade_;  // stages 2..n
};
TORCH_MODULE(CSPNNet);

}  // namespace cspn
