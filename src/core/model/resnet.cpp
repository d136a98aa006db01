#include "cspn/core/model/resnet.hpp"
#include "cspn/core/util.hpp"

#include <array>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace cspn {

namespace nn = torch::nn;

namespace {

nn::Conv2d conv(int64_t in, int64_t out, int64_t kernel, int64_t stride) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, kernel).stride(stride).padding(kernel / 2).bias(false));
}

// torchvision's shortcut projection: "downsample.0" 1x1 conv (stride), "downsample.1" BN.
nn::Sequential projection(int64_t in, int64_t out, int64_t stride) {
  return nn::Sequential(conv(in, out, 1, stride), BatchNorm(out));
}

// conv{i}, a kernel x kernel convolution without bias, and bn{i} after it, registered on `block`
// under torchvision's names.
void add_conv_bn(nn::Module& block, int i, nn::Conv2d& c, BatchNorm& bn, int64_t in, int64_t out, int64_t kernel,
                 int64_t stride) {
  c = block.register_module("conv" + std::to_string(i), conv(in, out, kernel, stride));
  bn = block.register_module("bn" + std::to_string(i), BatchNorm(out));
}

// The shortcut "downsample" where a block changes its channels or stride; none otherwise.
nn::Sequential add_downsample(nn::Module& block, int64_t in, int64_t out, int64_t stride) {
  if (stride == 1 && in == out) return nn::Sequential(nullptr);
  return block.register_module("downsample", projection(in, out, stride));
}

// A block's output: relu of its residual branch `y` plus the input, through the shortcut if any.
torch::Tensor add_shortcut(const torch::Tensor& y, const torch::Tensor& x, nn::Sequential& downsample) {
  return torch::relu(y + (downsample ? downsample->forward(x) : x));
}

struct DepthSpec {
  int depth;
  bool bottleneck;
  std::array<int, 4> blocks;
};

const DepthSpec& depth_spec(int depth) {
  static const std::array<DepthSpec, 5> specs{{{18, false, {2, 2, 2, 2}},
                                               {34, false, {3, 4, 6, 3}},
                                               {50, true, {3, 4, 6, 3}},
                                               {101, true, {3, 4, 23, 3}},
                                               {152, true, {3, 8, 36, 3}}}};
  for (const auto& s : specs)
    if (s.depth == depth) return s;
  throw std::invalid_argument("ResNet depth must be 18, 34, 50, 101 or 152, got " +
                              std::to_string(depth));
}

}  // namespace

BasicBlockImpl::BasicBlockImpl(int64_t in_channels, int64_t out_channels, int64_t stride) {
  add_conv_bn(*this, 1, conv1, bn1, in_channels, out_channels, 3, stride);
  add_conv_bn(*this, 2, conv2, bn2, out_channels, out_channels, 3, 1);
  downsample = add_downsample(*this, in_channels, out_channels, stride);
}

torch::Tensor BasicBlockImpl::forward(const torch::Tensor& x) {
  auto y = torch::relu(bn1(conv1(x)));
  y = bn2(conv2(y));
  return add_shortcut(y, x, downsample);
}

BottleneckImpl::BottleneckImpl(int64_t in_channels, int64_t width, int64_t out_channels,
                               int64_t stride) {
  add_conv_bn(*this, 1, conv1, bn1, in_channels, width, 1, 1);
  add_conv_bn(*this, 2, conv2, bn2, width, width, 3, stride);
  add_conv_bn(*this, 3, conv3, bn3, width, out_channels, 1, 1);
  downsample = add_downsample(*this, in_channels, out_channels, stride);
}

torch::Tensor BottleneckImpl::forward(const torch::Tensor& x) {
  auto y = torch::relu(bn1(conv1(x)));
  y = torch::relu(bn2(conv2(y)));
  y = bn3(conv3(y));
  return add_shortcut(y, x, downsample);
}

void use_channels_last(nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& p : module.parameters())
    if (p.dim() == 4) p.set_data(p.contiguous(torch::MemoryFormat::ChannelsLast));
}

int resnet_depth(const std::string& name) {
  for (int depth : {18, 34, 50, 101, 152})
    if (name == "resnet" + std::to_string(depth)) return depth;
  throw std::invalid_argument("unknown ResNet '" + name +
                              "': expected resnet18, resnet34, resnet50, resnet101 or resnet152");
}

ResNetImpl::ResNetImpl(int depth, const BackboneOptions& options) : BackboneImpl("ResNet"), depth_(depth) {
  const DepthSpec& spec = depth_spec(depth);
  const int64_t expansion = spec.bottleneck ? 4 : 1;
  conv1 = register_module(
      "conv1", nn::Conv2d(nn::Conv2dOptions(3, 64, 7).stride(2).padding(3).bias(false)));
  bn1 = register_module("bn1", BatchNorm(64));

  const int num_layers = options.last_stride == 16 ? 3 : 4;
  if (options.classifier && num_layers == 3)
    throw std::invalid_argument("ResNet: the classifier needs layer4 (last_stride 32), got last_stride 16");
  int64_t in = 64;
  for (int stage = 0; stage < num_layers; ++stage) {
    const int64_t planes = int64_t{64} << stage;
    const int64_t out = planes * expansion;
    nn::Sequential layer;
    for (int b = 0; b < spec.blocks[stage]; ++b) {
      // The first block of layer2..4 halves the resolution (torchvision v1.5).
      const int64_t stride = (b == 0 && stage > 0) ? 2 : 1;
      if (spec.bottleneck)
        layer->push_back(Bottleneck(in, planes, out, stride));
      else
        layer->push_back(BasicBlock(in, out, stride));
      in = out;
    }
    layers_.push_back(register_module("layer" + std::to_string(stage + 1), layer));
    channels_.push_back(out);
  }
  if (num_layers == 3) skipped_.push_back("layer4.");
  if (options.classifier)
    fc = register_module("fc", nn::Linear(in, 1000));
  else
    skipped_.push_back("fc.");
  init_conv_bn(*this);
}

std::vector<torch::Tensor> ResNetImpl::features(const torch::Tensor& x) {
  check_input(x);
  auto y = torch::relu(bn1(conv1(x)));
  y = torch::max_pool2d(y, /*kernel_size=*/3, /*stride=*/2, /*padding=*/1);
  std::vector<torch::Tensor> out;
  for (auto& layer : layers_) out.push_back(y = layer->forward(y));
  return out;
}

torch::Tensor ResNetImpl::forward(const torch::Tensor& x) {
  if (!fc)
    throw std::logic_error("ResNet" + std::to_string(depth_) +
                           "::forward needs the classifier: construct with options.classifier = true");
  auto c5 = features(x).back();
  // Global average pool [B,C,h,w] -> [B,C], as torchvision's avgpool + flatten.
  return fc(c5.mean({2, 3}));
}

int ResNetImpl::part_of(const std::string& key) const {
  if (key.rfind("layer", 0) == 0 && key.size() > 5 && key[5] >= '1' && key[5] <= '4') return key[5] - '0';
  return key.rfind("fc.", 0) == 0 ? 5 : 0;
}

std::shared_ptr<BackboneImpl> make_resnet(const std::string& name, const BackboneOptions& options) {
  return std::make_shared<ResNetImpl>(resnet_depth(name), options);
}

}  // namespace cspn
