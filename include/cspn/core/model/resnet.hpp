#pragma once
// ResNet-18/34/50/101/152 with torchvision's module and parameter names (conv1, bn1, layer1..4,
// fc; blocks "layer2.0.downsample.0" ...), so torchvision state dicts load one to one.
#include <string>
#include <vector>

#include <torch/torch.h>

#include "cspn/core/model/backbone.hpp"
#include "cspn/core/model/batch_norm.hpp"

namespace cspn {

// torchvision's BasicBlock: conv1 3x3 (stride) -> bn1 -> relu -> conv2 3x3 -> bn2, plus the
// shortcut (identity, or "downsample" = 1x1 conv + BN when stride != 1 or in != out), then relu.
class BasicBlockImpl : public torch::nn::Module {
 public:
  BasicBlockImpl(int64_t in_channels, int64_t out_channels, int64_t stride);
  // x [B,in,H,W] -> [B,out,H/stride,W/stride]
  torch::Tensor forward(const torch::Tensor& x);

 private:
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  BatchNorm bn1{nullptr}, bn2{nullptr};
  torch::nn::Sequential downsample{nullptr};
};
TORCH_MODULE(BasicBlock);

// torchvision's Bottleneck (v1.5: the stride sits on the 3x3 conv): conv1 1x1 in->width, conv2 3x3
// width->width (stride), conv3 1x1 width->out, each followed by BN (bn1..bn3), plus the shortcut
// as in BasicBlock. torchvision's Bottleneck(inplanes, planes) is (inplanes, planes, 4 * planes);
// the pyramid stages of CSPNNet use it with out = 2 * width, as CPN's refine blocks do.
class BottleneckImpl : public torch::nn::Module {
 public:
  BottleneckImpl(int64_t in_channels, int64_t width, int64_t out_channels, int64_t stride);
  // x [B,in,H,W] -> [B,out,H/stride,W/stride]
  torch::Tensor forward(const torch::Tensor& x);

 private:
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  BatchNorm bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  torch::nn::Sequential downsample{nullptr};
};
TORCH_MODULE(Bottleneck);

// Convolution weights in channels-last (NHWC) layout, for inference with channels-last inputs:
// oneDNN runs most convolutions of both networks faster so (measured on 2 CPU threads: landmark
// network ResNet-18, 2 stages, batch 1: 65 -> 47 ms).
void use_channels_last(torch::nn::Module& module);

// "resnet50" -> 50; throws std::invalid_argument naming the value and the known names.
int resnet_depth(const std::string& name);

class ResNetImpl : public BackboneImpl {
 public:
  // depth: 18, 34, 50, 101 or 152. options.classifier adds torchvision's 1000-way "fc";
  // options.last_stride 16 leaves out layer4 (C5).
  explicit ResNetImpl(int depth, const BackboneOptions& options = {});

  // x [B,3,H,W] (ImageNet-normalised RGB) -> {C2 [B,c2,H/4,W/4], C3 /8, C4 /16, C5 /32} (no C5 at
  // last_stride 16). Channels {64,128,256,512} (18/34) or {256,512,1024,2048} (50+).
  std::vector<torch::Tensor> features(const torch::Tensor& x) override;
  // x [B,3,H,W] -> logits [B,1000]; needs the classifier.
  torch::Tensor forward(const torch::Tensor& x);
  // conv1, bn1: 0; layerN: N; fc: 5.
  int part_of(const std::string& key) const override;
  int depth() const { return depth_; }

 private:
  int depth_;
  torch::nn::Conv2d conv1{nullptr};
  BatchNorm bn1{nullptr};
  std::vector<torch::nn::Sequential> layers_;  // registered as layer1..layer4
  torch::nn::Linear fc{nullptr};
};
TORCH_MODULE(ResNet);

}  // namespace cspn
