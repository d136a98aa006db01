#pragma once
// VGG16 with torchvision's module and parameter names ("features.0.weight" ... "features.28.bias",
// "classifier.0.weight", "classifier.3.weight"), so torchvision.models.vgg16 weights load one to
// one. Only what Faster R-CNN uses is built: the conv layers up to conv5_3 and, optionally, fc6
// and fc7 for the box head (the paper's detector); pool5 and the 1000-way fc8 are left out.
#include <torch/torch.h>

namespace cspn {

class VGG16Impl : public torch::nn::Module {
 public:
  // with_classifier adds "classifier" = fc6 (25088 -> 4096), ReLU, Dropout, fc7 (4096 -> 4096),
  // ReLU, Dropout at torchvision's indices 0..5.
  explicit VGG16Impl(bool with_classifier = false);

  // x [B,3,H,W] (ImageNet-normalised RGB) -> conv5_3 after ReLU [B,512,H/16,W/16] (each of the
  // four 2x2 pools floors odd sizes).
  torch::Tensor forward(const torch::Tensor& x);
  // RoI features flattened [R,512*7*7] -> fc7 activations [R,4096]; needs with_classifier.
  torch::Tensor fc7(const torch::Tensor& x);
  bool has_classifier() const { return !classifier.is_empty(); }
  static constexpr int64_t kChannels = 512;   // conv5_3 channels
  static constexpr int64_t kFcDim = 4096;     // fc6/fc7 width
  static constexpr int64_t kFcRoiSize = 7;    // fc6 expects 512 x 7 x 7 inputs

 private:
  torch::nn::Sequential features{nullptr}, classifier{nullptr};
};
TORCH_MODULE(VGG16);

}  // namespace cspn
