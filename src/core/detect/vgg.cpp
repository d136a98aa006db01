#include "cspn/detect/vgg.hpp"

#include <sstream>
#include <stdexcept>

namespace cspn {

VGG16Impl::VGG16Impl(bool with_classifier) {
  // torchvision's configuration "D"; 0 = 2x2 max pool. The final pool (features.30) is dropped:
  // detection reads conv5_3 at stride 16. Pools and ReLUs keep their indices so that the conv
  // layers sit at torchvision's features.<index>.
  const int cfg[] = {64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512};
  features = torch::nn::Sequential();
  int64_t in = 3;
  for (int c : cfg) {
    if (c == 0) {
      features->push_back(torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(2).stride(2)));
      continue;
    }
    features->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(in, c, 3).padding(1)));
    features->push_back(torch::nn::ReLU(torch::nn::ReLUOptions().inplace(true)));
    in = c;
  }
  register_module("features", features);
  if (with_classifier) {
    classifier = torch::nn::Sequential(
        torch::nn::Linear(kChannels * kFcRoiSize * kFcRoiSize, kFcDim),
        torch::nn::ReLU(torch::nn::ReLUOptions().inplace(true)), torch::nn::Dropout(0.5),
        torch::nn::Linear(kFcDim, kFcDim), torch::nn::ReLU(torch::nn::ReLUOptions().inplace(true)),
        torch::nn::Dropout(0.5));
    register_module("classifier", classifier);
  }
}

torch::Tensor VGG16Impl::forward(const torch::Tensor& x) {
  if (x.dim() != 4 || x.size(1) != 3) {
    std::ostringstream s;
    s << "cspn::VGG16: input should be [B,3,H,W], got " << x.sizes();
    throw std::invalid_argument(s.str());
  }
  return features->forward(x);
}

torch::Tensor VGG16Impl::fc7(const torch::Tensor& x) {
  if (!has_classifier())
    throw std::logic_error("cspn::VGG16::fc7: the module was built without the classifier "
                           "(with_classifier = false)");
  const int64_t in = kChannels * kFcRoiSize * kFcRoiSize;
  if (x.dim() != 2 || x.size(1) != in) {
    std::ostringstream s;
    s << "cspn::VGG16::fc7: input should be [R," << in << "] (512x7x7 RoI features), got "
      << x.sizes();
    throw std::invalid_argument(s.str());
  }
  return classifier->forward(x);
}

}  // namespace cspn
