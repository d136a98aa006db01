#include "cspn/core/model/cspn_net.hpp"
#include "cspn/core/util.hpp"

#include <algorithm>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace cspn {

namespace nn = torch::nn;
namespace F = torch::nn::functional;

namespace {

constexpr int kLevels = 4;  // pyramid levels: strides 4, 8, 16, 32
constexpr int kStageOneStride = 4;  // stage 1 answers on the finest pyramid level

// conv k x k (stride) -> BN (-> ReLU): keys "0.weight", "1.weight", "1.running_mean", ...
nn::Sequential conv_bn(int64_t in, int64_t out, int64_t kernel, bool relu) {
  nn::Sequential s(nn::Conv2d(nn::Conv2dOptions(in, out, kernel).padding(kernel / 2).bias(false)),
                   BatchNorm(out));
  if (relu) s->push_back(nn::ReLU());
  return s;
}

// Heatmap head: 1x1 conv + BN + ReLU, then a 3x3 conv to K maps whose weights start tiny (std
// 0.001) so the first iterations predict near-zero heatmaps (and a later stage's correction starts
// near zero) instead of large random ones.
nn::Sequential heatmap_head(int64_t channels, int64_t num_landmarks) {
  nn::Sequential s = conv_bn(channels, channels, 1, /*relu=*/true);
  s->push_back(nn::Conv2d(nn::Conv2dOptions(channels, num_landmarks, 3).padding(1)));
  return s;
}

void init_head(const nn::Conv2d& last) {
  torch::NoGradGuard no_grad;
  nn::init::normal_(last->weight, 0.0, 0.001);
  nn::init::zeros_(last->bias);
}

void init_head(const nn::Sequential& head) { init_head(nn::Conv2d(head->ptr<nn::Conv2dImpl>(head->size() - 1))); }

// x [B,C,h,w] -> [B,C,size[0],size[1]], bilinear, align_corners = false.
torch::Tensor upsample_to(const torch::Tensor& x, torch::IntArrayRef size) {
  if (x.size(2) == size[0] && x.size(3) == size[1]) return x;
  return F::interpolate(x, F::InterpolateFuncOptions()
                               .size(std::vector<int64_t>{size[0], size[1]})
                               .mode(torch::kBilinear)
                               .align_corners(false));
}

// In place, coarse to fine: p[l] += upsample(p[l+1]) (the FPN/CPN top-down pathway).
void top_down(std::vector<torch::Tensor>& p) {
  for (int l = static_cast<int>(p.size()) - 2; l >= 0; --l)
    p[l] = p[l] + upsample_to(p[l + 1], p[l].sizes().slice(2));
}

template <class M>
M add_to(nn::ModuleListImpl& list, M m) {
  list.push_back(m);
  return m;
}

void check_levels(const std::vector<torch::Tensor>& levels, const char* where, const char* what) {
  if (levels.size() != kLevels)
    throw std::invalid_argument(std::string(where) + ": expected " + std::to_string(kLevels) + " " + what +
                                " levels, got " + std::to_string(levels.size()));
  for (const auto& p : levels)
    if (!p.defined() || p.dim() != 4)
      throw std::invalid_argument(std::string(where) + ": " + what + " levels must be [B,C,h,w], got " +
                                  (p.defined() ? shape_of(p) : std::string("undefined")));
}

}  // namespace

CPNStageImpl::CPNStageImpl(const std::vector<int64_t>& in_channels, int64_t channels,
                           int64_t num_landmarks) {
  if (in_channels.size() != kLevels)
    throw std::invalid_argument("CPNStage: expected 4 backbone levels, got " +
                                std::to_string(in_channels.size()));
  auto lateral = register_module("lateral", nn::ModuleList());
  auto global_head = register_module("global_head", nn::ModuleList());
  auto refine = register_module("refine", nn::ModuleList());
  for (int l = 0; l < kLevels; ++l) {
    lateral_.push_back(add_to(*lateral, conv_bn(in_channels[l], channels, 1, /*relu=*/true)));
    global_head_.push_back(add_to(*global_head, heatmap_head(channels, num_landmarks)));
    // Deeper (coarser) levels get more refinement: CPN's 0..3 bottlenecks for P2..P5.
    nn::Sequential blocks;
    for (int b = 0; b < l; ++b) blocks->push_back(Bottleneck(channels, channels / 2, channels, 1));
    refine_.push_back(add_to(*refine, blocks));
  }
  fuse_ = register_module("fuse", Bottleneck(kLevels * channels, channels / 2, channels, 1));
  head_ = register_module("head", nn::Conv2d(nn::Conv2dOptions(channels, num_landmarks, 3).padding(1)));
  init_conv_bn(*this);
  for (const auto& head : global_head_) init_head(head);
  init_head(head_);
}

StageOutput CPNStageImpl::forward(const StageOutput& backbone) {
  check_levels(backbone.encoder, "CPNStage", "backbone");
  StageOutput out;
  for (int l = 0; l < kLevels; ++l) out.encoder.push_back(lateral_[l]->forward(backbone.encoder[l]));
  std::vector<torch::Tensor> pyramid = out.encoder;
  top_down(pyramid);

  const auto size = pyramid[0].sizes().slice(2);  // (H/4, W/4)
  std::vector<torch::Tensor> refined;
  for (int l = 0; l < kLevels; ++l) {
    const auto& p = pyramid[l];
    if (is_training()) out.global.push_back(upsample_to(global_head_[l]->forward(p), size));
    out.decoder.push_back(refine_[l]->is_empty() ? p : refine_[l]->forward(p));
    refined.push_back(upsample_to(out.decoder.back(), size));
  }
  // [B, 4*channels, H/4, W/4] -> [B,channels,H/4,W/4]: the finest decoder feature -> [B,K,H/4,W/4]
  out.decoder[0] = fuse_->forward(torch::cat(refined, 1));
  out.heatmaps = head_->forward(out.decoder[0]);
  out.image = backbone.image;
  return out;
}

int64_t CascadeStageImpl::fine_channels(int64_t channels, int stride) {
  return stride == 1 ? std::clamp<int64_t>(channels / 4, 8, 16) : std::clamp<int64_t>(channels / 2, 8, 32);
}

CascadeStageImpl::CascadeStageImpl(int64_t channels, int64_t num_landmarks, int stride, int previous_stride)
    : stride_(stride), previous_stride_(previous_stride) {
  const auto known = [](int s) { return s == 4 || s == 2 || s == 1; };
  if (!known(stride) || !known(previous_stride) || previous_stride < stride)
    throw std::invalid_argument("CascadeStage: strides must be 4, 2 or 1 and not coarser than the previous stage's, got " +
                                std::to_string(stride) + " after " + std::to_string(previous_stride));
  auto cross_encoder = register_module("cross_encoder", nn::ModuleList());
  auto cross_decoder = register_module("cross_decoder", nn::ModuleList());
  auto encoder = register_module("encoder", nn::ModuleList());
  auto lateral = register_module("lateral", nn::ModuleList());
  for (int l = 0; l < kLevels; ++l) {
    cross_encoder_.push_back(add_to(*cross_encoder, conv_bn(channels, channels, 1, /*relu=*/false)));
    cross_decoder_.push_back(add_to(*cross_decoder, conv_bn(channels, channels, 1, /*relu=*/false)));
    encoder_.push_back(
        add_to(*encoder, Bottleneck(channels, channels / 2, channels, /*stride=*/l == 0 ? 1 : 2)));
    lateral_.push_back(add_to(*lateral, conv_bn(channels, channels, 1, /*relu=*/true)));
  }
  // Heatmaps lie in [0, 1] and start near 0: a plain projection, no BatchNorm to blow that up.
  heatmap_in_ = register_module("heatmap_in", nn::Conv2d(nn::Conv2dOptions(num_landmarks, channels, 1)));
  int64_t head_channels = channels;
  if (stride < 4) {
    const int64_t f = head_channels = fine_channels(channels, stride);
    if (previous_stride != stride)
      stem_ = register_module(
          "stem", nn::Sequential(nn::Conv2d(nn::Conv2dOptions(3, f, 3).stride(stride).padding(1).bias(false)),
                                 BatchNorm(f), nn::ReLU(),
                                 nn::Conv2d(nn::Conv2dOptions(f, f, 3).padding(1).bias(false)), BatchNorm(f),
                                 nn::ReLU()));
    if (previous_stride < 4)
      fine_cross_ = register_module("fine_cross", conv_bn(fine_channels(channels, previous_stride), f, 1,
                                                          /*relu=*/false));
    fine_lateral_ = register_module("fine_lateral", conv_bn(channels, f, 1, /*relu=*/false));
    fine_heatmap_in_ = register_module("fine_heatmap_in", nn::Conv2d(nn::Conv2dOptions(num_landmarks, f, 1)));
    fine_block_ = register_module("fine_block", conv_bn(f, f, 3, /*relu=*/true));
    fine_block_->push_back(Bottleneck(f, f / 2, f, 1));
  }
  head_ = register_module("head", heatmap_head(head_channels, num_landmarks));
  init_conv_bn(*this);
  init_head(head_);
}

StageOutput CascadeStageImpl::forward(const StageOutput& previous) {
  check_levels(previous.encoder, "CascadeStage", "encoder");
  check_levels(previous.decoder, "CascadeStage", "decoder");
  if (!previous.heatmaps.defined())
    throw std::invalid_argument("CascadeStage: the previous stage's heatmaps are undefined");
  const auto& answer = previous.heatmaps;
  // A finer answer enters the H/4 encoder averaged over the pixels of each coarse one (their
  // centres average to the coarse pixel's centre).
  const auto coarse_answer =
      previous_stride_ == 4 ? answer : F::avg_pool2d(answer, F::AvgPool2dFuncOptions(4 / previous_stride_));
  const auto cross = [&](int l) {
    return cross_encoder_[l]->forward(previous.encoder[l]) + cross_decoder_[l]->forward(previous.decoder[l]);
  };
  // Encoder, fine to coarse: e0 [B,C,H/4,W/4] .. e3 [B,C,H/32,W/32].
  StageOutput out;
  out.encoder.push_back(encoder_[0]->forward(torch::relu(cross(0) + heatmap_in_->forward(coarse_answer))));
  for (int l = 1; l < kLevels; ++l) out.encoder.push_back(encoder_[l]->forward(out.encoder[l - 1]) + cross(l));

  for (int l = 0; l < kLevels; ++l) out.decoder.push_back(lateral_[l]->forward(out.encoder[l]));
  top_down(out.decoder);
  out.image = previous.image;
  if (stride_ == 4) {
    out.heatmaps = answer + head_->forward(out.decoder[0]);
    return out;
  }
  if (!previous.image.defined() || (previous_stride_ == stride_ && !previous.stem.defined()) ||
      (previous_stride_ < 4 && !previous.fine.defined()))
    throw std::invalid_argument("CascadeStage: a stage finer than stride 4 needs the image (and after another such "
                                "stage its fine level, and at the same stride its stem)");
  const auto size = out.decoder[0].sizes().slice(2).vec();
  const std::vector<int64_t> fine_size{size[0] * 4 / stride_, size[1] * 4 / stride_};
  out.stem = previous_stride_ != stride_ ? stem_->forward(previous.image) : previous.stem;
  const auto fine_answer = upsample_to(answer, fine_size);
  // P2 is projected to the fine level's width before it is upsampled: the same map at inference (a
  // 1x1 conv and BatchNorm's affine commute with bilinear weights, which sum to 1), and at stride 1
  // a few channels at the input's size instead of the pyramid's width.
  auto f = upsample_to(fine_lateral_->forward(out.decoder[0]), fine_size) + out.stem +
           fine_heatmap_in_->forward(fine_answer);
  if (previous_stride_ < 4) f = f + fine_cross_->forward(upsample_to(previous.fine, fine_size));
  out.fine = fine_block_->forward(torch::relu(f));
  out.heatmaps = fine_answer + head_->forward(out.fine);
  return out;
}

CSPNNetImpl::CSPNNetImpl(const KeypointModelConfig& cfg, int num_landmarks) {
  cfg.validate();
  if (num_landmarks < 1)
    throw std::invalid_argument("CSPNNet: num_landmarks must be >= 1, got " +
                                std::to_string(num_landmarks));
  backbone = register_module("backbone", make_backbone(cfg.backbone));
  stage1_ = register_module("stage1", CPNStage(backbone->channels(), cfg.channels, num_landmarks));
  for (int i = 1; i < cfg.stages; ++i)
    cascade_.push_back(register_module("stage" + std::to_string(i + 1),
                                       CascadeStage(cfg.channels, num_landmarks, cfg.stage_stride(i),
                                                    cfg.stage_stride(i - 1))));
}

int CSPNNetImpl::stage_stride(int i) const {
  if (i < 0 || i >= num_stages())
    throw std::out_of_range("CSPNNet::stage_stride(" + std::to_string(i) + "): the net has " +
                            std::to_string(num_stages()) + " stages");
  return i == 0 ? kStageOneStride : cascade_[i - 1]->stride();
}

StageOutput CSPNNetImpl::trunk(const torch::Tensor& x) {
  StageOutput out;
  out.encoder = backbone->features(x);
  out.image = x;
  return out;
}

int CSPNNetImpl::num_stages() const { return 1 + static_cast<int>(cascade_.size()); }

torch::nn::Module& CSPNNetImpl::stage(int i) {
  if (i < 0 || i >= num_stages())
    throw std::out_of_range("CSPNNet::stage(" + std::to_string(i) + "): the net has " +
                            std::to_string(num_stages()) + " stages");
  return i == 0 ? static_cast<nn::Module&>(*stage1_) : *cascade_[i - 1];
}

bool CSPNNetImpl::training_only(const std::string& key) {
  return key.find("global_head.") != std::string::npos;
}

StageOutput CSPNNetImpl::stage_forward(int i, const StageOutput& input) {
  if (i < 0 || i >= num_stages())
    throw std::out_of_range("CSPNNet::stage_forward(" + std::to_string(i) + "): the net has " +
                            std::to_string(num_stages()) + " stages");
  return i == 0 ? stage1_->forward(input) : cascade_[i - 1]->forward(input);
}

CSPNOutput CSPNNetImpl::forward(const torch::Tensor& x) {
  if (x.dim() != 4 || x.size(1) != 3 || x.size(2) % 32 != 0 || x.size(3) % 32 != 0 ||
      x.size(2) == 0 || x.size(3) == 0)
    throw std::invalid_argument("CSPNNet: expected input [B,3,H,W] with H and W multiples of 32, got " +
                                shape_of(x));
  CSPNOutput out;
  StageOutput cur = trunk(x);
  for (int i = 0; i < num_stages(); ++i) {
    cur = stage_forward(i, cur);
    out.stages.push_back(cur.heatmaps);
    if (i == 0) out.global = cur.global;
  }
  return out;
}

}  // namespace cspn
