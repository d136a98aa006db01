#pragma once
// VGG16 with torchvision's module and parameter names ("features.0.weight" ... "features.28.bias",
// "classifier.0.weight", "classifier.3.weight"), so torchvision.models.vgg16 weights load one to
// one. The 1000-way fc8 is left out; fc6 and fc7 are built on request, as the detector's box head
// (the paper's detector).
#include <string>
#include <vector>

#include <torch/torch.h>

#include "cspn/core/model/backbone.hpp"

namespace cspn {

class VGG16Impl : public BackboneImpl {
 public:
  // options.classifier adds "classifier" = fc6 (25088 -> 4096), ReLU, Dropout, fc7 (4096 -> 4096),
  // ReLU, Dropout at torchvision's indices 0..5. options.last_stride 16 ends at conv5_3.
  explicit VGG16Impl(const BackboneOptions& options = {});

  // x [B,3,H,W] (ImageNet-normalised RGB) -> conv3_3 [B,256,H/4,W/4], conv4_3 [B,512,H/8,W/8],
  // conv5_3 [B,512,H/16,W/16] (after their ReLUs), and pool5 [B,512,H/32,W/32] at last_stride 32.
  // Each 2x2 pool floors odd sizes.
  std::vector<torch::Tensor> features(const torch::Tensor& x) override;
  // RoI features flattened [R,512*7*7] -> fc7 activations [R,4096]; needs the classifier.
  torch::Tensor box_head(const torch::Tensor& rois) override;
  // fc6's weight becomes the 7x7 convolution over the RoI's 512x7x7 features that it is, in
  // channels-last layout ([4096,512,7,7]). On the CPU oneDNN runs that convolution about 2x as fast
  // as OpenBLAS's Haswell kernel runs the matrix product, and level with its SkylakeX kernel (300
  // RoIs, 2 threads, AVX-512: 192 ms against 360-394 and 206 ms).
  void box_head_for_inference() override;
  int64_t box_head_dim() const override { return classifier ? kFcDim : 0; }
  int64_t box_head_input() const override { return kChannels * kFcRoiSize * kFcRoiSize; }
  // The five conv blocks (features.0-4, 5-9, 10-16, 17-23, 24-30): 0..4; classifier: 5.
  int part_of(const std::string& key) const override;

  static constexpr int64_t kChannels = 512;   // conv5_3 channels
  static constexpr int64_t kFcDim = 4096;     // fc6/fc7 width
  static constexpr int64_t kFcRoiSize = 7;    // fc6 expects 512 x 7 x 7 inputs

 private:
  bool pool5_;
  torch::nn::Sequential features_{nullptr}, classifier{nullptr};
};
TORCH_MODULE(VGG16);

}  // namespace cspn
