// MobileNetV2 (Sandler et al. 2018) as a backbone, with torchvision's module and parameter names
// ("features.0.0.weight", "features.4.conv.1.1.running_mean", "classifier.1.weight"), so
// torchvision.models.mobilenet_v2 weights load one to one (its classifier is never built). About a
// sixth of ResNet-18's FLOPs.
#include <array>
#include <cstdlib>

#include "cspn/core/model/backbone.hpp"
#include "cspn/core/model/batch_norm.hpp"

namespace cspn {
namespace {

namespace nn = torch::nn;

// torchvision's Conv2dNormActivation: "0" conv without bias, "1" BatchNorm, then ReLU6 (unnamed).
// A Sequential of its own type, as a Sequential cannot hold a plain one.
class ConvBnReLU6Impl : public nn::SequentialImpl {
 public:
  ConvBnReLU6Impl(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t groups) {
    push_back(nn::Conv2d(
        nn::Conv2dOptions(in, out, kernel).stride(stride).padding((kernel - 1) / 2).groups(groups).bias(false)));
    push_back(BatchNorm(out));
    push_back(nn::ReLU6());
  }
  torch::Tensor forward(torch::Tensor x) { return nn::SequentialImpl::forward(x); }
};
TORCH_MODULE(ConvBnReLU6);

// torchvision's InvertedResidual: "conv" = [1x1 expansion (when expand != 1)], 3x3 depthwise,
// 1x1 linear projection + BatchNorm; a residual connection where the shape allows.
class InvertedResidualImpl : public nn::Module {
 public:
  InvertedResidualImpl(int64_t in, int64_t out, int64_t stride, int64_t expand)
      : residual_(stride == 1 && in == out) {
    const int64_t hidden = in * expand;
    nn::Sequential conv;
    if (expand != 1) conv->push_back(ConvBnReLU6(in, hidden, 1, 1, 1));
    conv->push_back(ConvBnReLU6(hidden, hidden, 3, stride, hidden));
    conv->push_back(nn::Conv2d(nn::Conv2dOptions(hidden, out, 1).bias(false)));
    conv->push_back(BatchNorm(out));
    conv_ = register_module("conv", conv);
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto y = conv_->forward(x);
    return residual_ ? x + y : y;
  }

 private:
  bool residual_;
  nn::Sequential conv_{nullptr};
};
TORCH_MODULE(InvertedResidual);

// features.<index> after which each level is read (strides 4, 8, 16, 32), and the first index of
// each part for trainable_layers (part 0 is features.0-1).
constexpr std::array<int, 4> kLevelEnds{3, 6, 13, 18};
constexpr std::array<int, 4> kPartStarts{2, 4, 7, 14};

class MobileNetV2Impl : public BackboneImpl {
 public:
  explicit MobileNetV2Impl(const BackboneOptions& options) : BackboneImpl("MobileNetV2") {
    const int last = options.last_stride == 16 ? kLevelEnds[2] : kLevelEnds[3];
    // (expansion, channels, blocks, first stride) per group, as in the paper's Table 2.
    const int64_t groups[7][4] = {{1, 16, 1, 1}, {6, 24, 2, 2},  {6, 32, 3, 2}, {6, 64, 4, 2},
                                  {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
    // Layers past the last level read are not built (their weights are skipped when loading).
    features_ = nn::Sequential();
    int index = 0;
    const auto add = [&](auto layer) {
      if (index <= last)
        features_->push_back(layer);
      else
        skipped_.push_back("features." + std::to_string(index) + ".");
      ++index;
    };
    add(ConvBnReLU6(3, 32, 3, 2, 1));
    int64_t in = 32;
    for (const auto& g : groups)
      for (int64_t b = 0; b < g[2]; ++b) {
        add(InvertedResidual(in, g[1], b == 0 ? g[3] : 1, g[0]));
        in = g[1];
      }
    add(ConvBnReLU6(in, 1280, 1, 1, 1));
    register_module("features", features_);
    skipped_.push_back("classifier.");  // the ImageNet classifier is never built
    for (int end : kLevelEnds)
      if (end <= last) channels_.push_back(level_channels(end));
    init_conv_bn(*this);  // torchvision's initialisation
  }

  std::vector<torch::Tensor> features(const torch::Tensor& x) override {
    check_input(x);
    return run_tapped(features_, x, {kLevelEnds.begin(), kLevelEnds.end()});
  }

  int part_of(const std::string& key) const override {
    if (key.rfind("classifier.", 0) == 0) return 5;
    const int index = key.rfind("features.", 0) == 0 ? std::atoi(key.c_str() + 9) : 0;
    int part = 0;
    for (int start : kPartStarts) part += index >= start;
    return part;
  }

 private:
  static int64_t level_channels(int end) { return end == 3 ? 24 : end == 6 ? 32 : end == 13 ? 96 : 1280; }

  nn::Sequential features_{nullptr};
};

}  // namespace

std::shared_ptr<BackboneImpl> make_mobilenet_v2(const std::string&, const BackboneOptions& options) {
  return std::make_shared<MobileNetV2Impl>(options);
}

}  // namespace cspn
