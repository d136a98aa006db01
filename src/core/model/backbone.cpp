#include "cspn/core/model/backbone.hpp"
#include "cspn/core/model/batch_norm.hpp"
#include "cspn/core/util.hpp"

#include <algorithm>
#include <functional>
#include <stdexcept>

namespace cspn {

// The factories, each in its backbone's own file.
std::shared_ptr<BackboneImpl> make_resnet(const std::string& name, const BackboneOptions& options);
std::shared_ptr<BackboneImpl> make_vgg16(const std::string& name, const BackboneOptions& options);
std::shared_ptr<BackboneImpl> make_mobilenet_v2(const std::string& name, const BackboneOptions& options);

namespace {

struct Entry {
  std::string name;
  bool box_head;
  std::function<std::shared_ptr<BackboneImpl>(const std::string&, const BackboneOptions&)> make;
};

const std::vector<Entry>& registry() {
  static const std::vector<Entry> entries{
      {"resnet18", false, make_resnet},  {"resnet34", false, make_resnet},   {"resnet50", false, make_resnet},
      {"resnet101", false, make_resnet}, {"resnet152", false, make_resnet},  {"vgg16", true, make_vgg16},
      {"mobilenet_v2", false, make_mobilenet_v2},
  };
  return entries;
}

const Entry* find(const std::string& name) {
  for (const Entry& e : registry())
    if (e.name == name) return &e;
  return nullptr;
}

}  // namespace

void BackboneImpl::check_input(const torch::Tensor& x) const {
  if (!x.defined() || x.dim() != 4 || x.size(1) != 3)
    throw std::invalid_argument(name() + ": expected input [B,3,H,W], got " +
                                (x.defined() ? shape_of(x) : std::string("an undefined tensor")));
}

std::vector<torch::Tensor> BackboneImpl::run_tapped(torch::nn::Sequential& layers, torch::Tensor x,
                                                    const std::vector<int>& taps) {
  std::vector<torch::Tensor> out;
  int index = 0;
  for (auto& layer : *layers) {
    x = layer.forward(x);
    if (std::find(taps.begin(), taps.end(), index++) != taps.end()) out.push_back(x);
  }
  return out;
}

torch::Tensor BackboneImpl::box_head(const torch::Tensor&) {
  throw std::logic_error("backbone " + name() + " has no box head (built without its classifier, or none exists)");
}

void init_conv_bn(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (const auto& m : module.modules(/*include_self=*/false)) {
    if (auto* c = m->as<torch::nn::Conv2d>()) {
      torch::nn::init::kaiming_normal_(c->weight, /*a=*/0, torch::kFanOut, torch::kReLU);
      if (c->bias.defined()) torch::nn::init::zeros_(c->bias);
    } else if (auto* bn = m->as<BatchNorm>()) {
      torch::nn::init::ones_(bn->weight);
      torch::nn::init::zeros_(bn->bias);
    }
  }
}

const std::vector<std::string>& backbone_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (const Entry& e : registry()) out.push_back(e.name);
    return out;
  }();
  return names;
}

std::string backbone_list() {
  const auto& names = backbone_names();
  std::string out;
  for (size_t i = 0; i < names.size(); ++i)
    out += (i == 0 ? "" : i + 1 == names.size() ? " or " : ", ") + names[i];
  return out;
}

bool is_backbone(const std::string& name) { return find(name) != nullptr; }

bool backbone_has_box_head(const std::string& name) {
  const Entry* e = find(name);
  return e && e->box_head;
}

std::shared_ptr<BackboneImpl> make_backbone(const std::string& name, const BackboneOptions& options) {
  const Entry* e = find(name);
  if (!e) throw std::invalid_argument("unknown backbone '" + name + "': expected " + backbone_list());
  if (options.last_stride != 16 && options.last_stride != 32)
    throw std::invalid_argument("backbone " + name + ": last_stride must be 16 or 32, got " +
                                std::to_string(options.last_stride));
  return e->make(name, options);
}

}  // namespace cspn
