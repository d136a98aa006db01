#include "cspn/core/model/vgg.hpp"
#include "cspn/core/util.hpp"

#include <array>
#include <cstdlib>
#include <stdexcept>

namespace cspn {
namespace {

// features.<index> after which each level is read: conv3_3, conv4_3, conv5_3 (their ReLUs).
constexpr std::array<int, 3> kLevelEnds{15, 22, 29};
// First index of conv blocks 2..5 (block 1 starts at 0).
constexpr int kBlockStarts[] = {5, 10, 17, 24};

}  // namespace

VGG16Impl::VGG16Impl(const BackboneOptions& options) : BackboneImpl("VGG16"), pool5_(options.last_stride == 32) {
  // torchvision's configuration "D"; 0 = 2x2 max pool. pool5 (features.30) has no parameters and
  // runs in features() at last_stride 32. Pools and ReLUs keep their indices so that the conv
  // layers sit at torchvision's features.<index>.
  const int cfg[] = {64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512};
  features_ = torch::nn::Sequential();
  int64_t in = 3;
  for (int c : cfg) {
    if (c == 0) {
      features_->push_back(torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(2).stride(2)));
      continue;
    }
    features_->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(in, c, 3).padding(1)));
    features_->push_back(torch::nn::ReLU(torch::nn::ReLUOptions().inplace(true)));
    in = c;
  }
  register_module("features", features_);
  channels_ = {256, 512, 512};
  if (pool5_) channels_.push_back(512);
  if (options.classifier) {
    classifier = torch::nn::Sequential(
        torch::nn::Linear(kChannels * kFcRoiSize * kFcRoiSize, kFcDim),
        torch::nn::ReLU(torch::nn::ReLUOptions().inplace(true)), torch::nn::Dropout(0.5),
        torch::nn::Linear(kFcDim, kFcDim), torch::nn::ReLU(torch::nn::ReLUOptions().inplace(true)),
        torch::nn::Dropout(0.5));
    register_module("classifier", classifier);
    skipped_ = {"classifier.6."};
  } else {
    skipped_ = {"classifier."};
  }
  // torchvision's initialisation: convs kaiming normal (fan_out), linear layers N(0, 0.01), zero biases.
  init_conv_bn(*this);
  torch::NoGradGuard no_grad;
  for (const auto& m : modules(/*include_self=*/false))
    if (auto* linear = m->as<torch::nn::Linear>()) {
      torch::nn::init::normal_(linear->weight, 0, 0.01);
      torch::nn::init::zeros_(linear->bias);
    }
}

std::vector<torch::Tensor> VGG16Impl::features(const torch::Tensor& x) {
  check_input(x);
  auto out = run_tapped(features_, x, {kLevelEnds.begin(), kLevelEnds.end()});
  if (pool5_) out.push_back(torch::max_pool2d(out.back(), 2, 2));
  return out;
}

torch::Tensor VGG16Impl::box_head(const torch::Tensor& rois) {
  if (!classifier)
    throw std::logic_error("cspn::VGG16::box_head: the module was built without the classifier "
                           "(options.classifier = false)");
  const int64_t in = box_head_input();
  if (rois.dim() != 2 || rois.size(1) != in)
    throw std::invalid_argument("cspn::VGG16::box_head: input should be [R," + std::to_string(in) +
                                "] (512x7x7 RoI features), got " + shape_of(rois));
  auto& fc6 = *classifier->ptr(0)->as<torch::nn::LinearImpl>();
  if (fc6.weight.dim() == 2) return classifier->forward(rois);
  if (is_training())
    throw std::logic_error("cspn::VGG16::box_head: fc6 is laid out for inference (box_head_for_inference); "
                           "build a new module to train");
  auto& fc7 = *classifier->ptr(3)->as<torch::nn::LinearImpl>();
  if (rois.size(0) == 0) return torch::empty({0, kFcDim}, rois.options());
  const auto x = torch::conv2d(rois.reshape({-1, kChannels, kFcRoiSize, kFcRoiSize}), fc6.weight, fc6.bias);
  return torch::relu(fc7.forward(torch::relu(x.flatten(1))));  // the Dropouts pass all at inference
}

void VGG16Impl::box_head_for_inference() {
  if (!classifier) return;
  auto& weight = classifier->ptr(0)->as<torch::nn::LinearImpl>()->weight;
  if (weight.dim() == 4) return;
  torch::NoGradGuard no_grad;
  weight.set_data(weight.view({kFcDim, kChannels, kFcRoiSize, kFcRoiSize}).contiguous(torch::MemoryFormat::ChannelsLast));
}

int VGG16Impl::part_of(const std::string& key) const {
  if (key.rfind("classifier.", 0) == 0) return 5;
  const int index = key.rfind("features.", 0) == 0 ? std::atoi(key.c_str() + 9) : 0;
  int part = 0;
  for (int start : kBlockStarts) part += index >= start;
  return part;
}

std::shared_ptr<BackboneImpl> make_vgg16(const std::string&, const BackboneOptions& options) {
  return std::make_shared<VGG16Impl>(options);
}

}  // namespace cspn
