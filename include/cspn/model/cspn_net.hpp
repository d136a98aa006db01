#pragma once
// The Cascaded Stacked Pyramid Network (PAPER.md): a backbone (ResNet in the paper), a first stage in the style of
// CPN (GlobalNet pyramid + RefineNet), and up to three further stages that each refine the answer
// before them. A later stage is a light encoder-decoder after MSPN: every encoder level takes the
// previous stage's encoder and decoder features at that level (cross-stage aggregation), the first
// one also the previous heatmaps; its decoder's finest level predicts a correction that is added to
// the previous heatmaps, so a stage starts as the identity. The GlobalNet heads of stage 1 are
// supervised in training and not computed at inference.
#include <string>
#include <vector>

#include <torch/torch.h>

#include "cspn/config.hpp"
#include "cspn/model/backbone.hpp"
#include "cspn/model/resnet.hpp"

namespace cspn {

struct CSPNOutput {
  std::vector<torch::Tensor> stages;  // each stage's answer, [B,K,H/4,W/4]; back() is the net's
  std::vector<torch::Tensor> global;  // training only: stage 1's GlobalNet heatmaps of P2..P5, each
                                      // upsampled to [B,K,H/4,W/4]
};

// What one stage hands to the next. The backbone's output is a StageOutput too (encoder = C2..C5,
// nothing else), so stages chain uniformly.
struct StageOutput {
  std::vector<torch::Tensor> encoder;  // 4 levels, finest first: [B,C_l,H/4,W/4] .. [B,C_l,H/32,W/32]
  std::vector<torch::Tensor> decoder;  // 4 levels, [B,channels,..]; empty for the backbone
  torch::Tensor heatmaps;              // [B,K,H/4,W/4]; undefined for the backbone
  std::vector<torch::Tensor> global;   // stage 1 in training only: CSPNOutput::global
};

// Stage 1, after CPN. GlobalNet: 1x1 lateral convs C2..C5 -> `channels` (its encoder features),
// top-down bilinear upsample + add (pyramid P2..P5), a heatmap head per level (training only).
// RefineNet: level l of the pyramid passes l bottlenecks (0 for P2 .. 3 for P5); these are its
// decoder features; upsampled to the P2 size, concatenated and fused by a bottleneck (the finest
// decoder feature handed on), then a 3x3 heatmap head.
class CPNStageImpl : public torch::nn::Module {
 public:
  CPNStageImpl(const std::vector<int64_t>& in_channels, int64_t channels, int64_t num_landmarks);
  // backbone.encoder = C2..C5 -> encoder, decoder [B,channels,..] x4, heatmaps (+ global in training).
  StageOutput forward(const StageOutput& backbone);

 private:
  std::vector<torch::nn::Sequential> lateral_, global_head_, refine_;
  Bottleneck fuse_{nullptr};
  torch::nn::Conv2d head_{nullptr};
};
TORCH_MODULE(CPNStage);

// Stages 2..4, after MSPN. Encoder level 0: 1x1 projections of the previous encoder and decoder
// features at H/4 and of the previous heatmaps, summed, then a bottleneck; level l > 0: a stride-2
// bottleneck of level l-1 plus projections of the previous encoder and decoder features at level
// l. Decoder: 1x1 laterals, top-down bilinear upsample + add, a head on P2 whose output (starting
// near zero) is added to the previous heatmaps. The sum keeps its gradient: every stage's loss also
// trains the stages before it.
class CascadeStageImpl : public torch::nn::Module {
 public:
  CascadeStageImpl(int64_t channels, int64_t num_landmarks);
  // previous: encoder, decoder [B,channels,..] x4, heatmaps [B,K,H/4,W/4] -> the same, refined.
  StageOutput forward(const StageOutput& previous);

 private:
  std::vector<torch::nn::Sequential> cross_encoder_, cross_decoder_, lateral_;
  std::vector<Bottleneck> encoder_;
  torch::nn::Conv2d heatmap_in_{nullptr};
  torch::nn::Sequential head_{nullptr};
};
TORCH_MODULE(CascadeStage);

class CSPNNetImpl : public torch::nn::Module {
 public:
  CSPNNetImpl(const KeypointModelConfig& cfg, int num_landmarks);

  // x [B,3,H,W] ImageNet-normalised RGB crops -> every stage's heatmaps at (H/4, W/4) (and the
  // GlobalNet heatmaps in training mode). H and W must be multiples of 32.
  CSPNOutput forward(const torch::Tensor& x);

  // Any registered backbone (model.keypoints.backbone), registered as "backbone": keys
  // "backbone.<torchvision key>", e.g. "backbone.layer1.0.conv1.weight".
  std::shared_ptr<BackboneImpl> backbone;
  int num_stages() const;
  // Runs the backbone and stages 1..n separately so callers (cspn info, cspn bench) can measure
  // each: features = backbone->features(x); then stage_forward(i, ...) for i = 0..n-1.
  // i = 0 takes StageOutput{features}; stage i > 0 takes stage i-1's output.
  StageOutput stage_forward(int i, const StageOutput& input);
  // Stage i (0-based) as a module, e.g. to count its parameters. Registered as "stage<i+1>".
  torch::nn::Module& stage(int i);
  // Whether a parameter (a key of stage(i) or of the net) belongs to a head that runs only in
  // training (the GlobalNet heads): inference neither computes nor needs it.
  static bool training_only(const std::string& key);

 private:
  CPNStage stage1_{nullptr};
  std::vector<CascadeStage> cascade_;  // stages 2..n
};
TORCH_MODULE(CSPNNet);

}  // namespace cspn
