#pragma once
// The Cascaded Stacked Pyramid Network (PAPER.md): a backbone (ResNet in the paper), a first stage in the style of
// CPN (GlobalNet pyramid + RefineNet), and up to three further stages that each refine the answer
// before them. A later stage is a light encoder-decoder after MSPN: every encoder level takes the
// previous stage's encoder and decoder features at that level (cross-stage aggregation), the first
// one also the previous heatmaps; its decoder's finest level predicts a correction that is added to
// the previous heatmaps, so a stage starts as the identity. Each later stage answers at half the
// stride of the one before, down to model.keypoints.refine_stride (default 1: strides 4, 2, 1, 1),
// as the paper's last stage outputs finer maps than its first: a fine level, fed by the image's own
// features at its stride, P2 and the previous answer, carries the correction. The GlobalNet heads
// of stage 1 are supervised in training and not computed at inference.
#include <string>
#include <vector>

#include <torch/torch.h>

#include "cspn/core/config.hpp"
#include "cspn/core/model/backbone.hpp"
#include "cspn/core/model/resnet.hpp"

namespace cspn {

struct CSPNOutput {
  std::vector<torch::Tensor> stages;  // each stage's answer, [B,K,H/s,W/s]: s = 4 for stage 1,
                                      // cfg.stage_stride(i) for the others; back() is the net's
  std::vector<torch::Tensor> global;  // training only: stage 1's GlobalNet heatmaps of P2..P5, each
                                      // upsampled to [B,K,H/4,W/4]
};

// What one stage hands to the next. The trunk's output is a StageOutput too (encoder = C2..C5 and
// the image, nothing else), so stages chain uniformly.
struct StageOutput {
  std::vector<torch::Tensor> encoder;  // 4 levels, finest first: [B,C_l,H/4,W/4] .. [B,C_l,H/32,W/32]
  std::vector<torch::Tensor> decoder;  // 4 levels, [B,channels,..]; empty for the trunk
  torch::Tensor heatmaps;              // [B,K,H/s,W/s]; undefined for the trunk
  std::vector<torch::Tensor> global;   // stage 1 in training only: CSPNOutput::global
  torch::Tensor image;                 // the net's input [B,3,H,W], handed on for the stems
  torch::Tensor stem;                  // stages at stride s < 4: the image's features [B,F,H/s,W/s]
  torch::Tensor fine;                  // stages at stride s < 4: the stage's fine level [B,F,H/s,W/s]
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
// At stride s = 2 or 1 the head moves to a level at H/s of fine_channels(channels, s) channels: the
// sum of P2 (1x1 projection, then upsampled), the image's features at that stride (a two-conv stem,
// built by the first stage at s and handed on), the previous answer (upsampled where it is
// coarser) and the previous stage's fine level (upsampled likewise); then a 3x3 conv and a
// bottleneck. Its correction is added to the previous answer at H/s.
class CascadeStageImpl : public torch::nn::Module {
 public:
  // stride: 4, 2 or 1, this stage's answer; previous_stride: the stage before's (4 for stage 2),
  // not finer.
  CascadeStageImpl(int64_t channels, int64_t num_landmarks, int stride, int previous_stride);
  // previous: encoder, decoder [B,channels,..] x4, heatmaps [B,K,H/s,W/s] -> the same, refined.
  StageOutput forward(const StageOutput& previous);
  // The stride of this stage's answer.
  int stride() const { return stride_; }
  // The width of the fine level at stride 2 or 1 for a pyramid of `channels`.
  static int64_t fine_channels(int64_t channels, int stride);

 private:
  int stride_, previous_stride_;
  std::vector<torch::nn::Sequential> cross_encoder_, cross_decoder_, lateral_;
  std::vector<Bottleneck> encoder_;
  torch::nn::Conv2d heatmap_in_{nullptr};
  torch::nn::Sequential head_{nullptr};
  // strides 2 and 1 only
  torch::nn::Sequential stem_{nullptr}, fine_lateral_{nullptr}, fine_cross_{nullptr}, fine_block_{nullptr};
  torch::nn::Conv2d fine_heatmap_in_{nullptr};
};
TORCH_MODULE(CascadeStage);

class CSPNNetImpl : public torch::nn::Module {
 public:
  CSPNNetImpl(const KeypointModelConfig& cfg, int num_landmarks);

  // x [B,3,H,W] ImageNet-normalised RGB crops -> every stage's heatmaps, stage 1's at (H/4, W/4),
  // the others' at cfg.stage_stride(i) (and the GlobalNet heatmaps in training mode). H and W must be
  // multiples of 32.
  CSPNOutput forward(const torch::Tensor& x);

  // Any registered backbone (model.keypoints.backbone), registered as "backbone": keys
  // "backbone.<torchvision key>", e.g. "backbone.layer1.0.conv1.weight".
  std::shared_ptr<BackboneImpl> backbone;
  int num_stages() const;
  // Runs the backbone and stages 1..n separately so callers (cspn info, cspn bench) can measure
  // each: trunk(x) (the backbone's features and the image), then stage_forward(i, ...) for
  // i = 0..n-1: i = 0 takes the trunk's output, stage i > 0 stage i-1's.
  StageOutput trunk(const torch::Tensor& x);
  StageOutput stage_forward(int i, const StageOutput& input);
  // The stride of stage i's heatmaps (0-based): the config's stage_stride(i).
  int stage_stride(int i) const;
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
