#pragma once
// What both networks need from an image backbone, and the one registry of backbone names.
//
// A backbone turns an ImageNet-normalised image into feature maps at strides 4, 8, 16 and 32; the
// landmark network reads all four, the detector the stride-16 one. Parameter names are
// torchvision's, so ImageNet weights load one to one. Adding a backbone takes its own source file
// (a class deriving from BackboneImpl and a factory) and one entry in src/core/model/backbone.cpp.
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace cspn {

struct BackboneOptions {
  int last_stride = 32;     // 32: all four levels; 16: stop at stride 16 (the detector's trunk),
                            // later layers are not built
  bool classifier = false;  // also build the ImageNet classifier (parity tests; VGG16's fc6/fc7
                            // as the detector's box head)
};

class BackboneImpl : public torch::nn::Module {
 public:
  // x [B,3,H,W] -> one map per level, finest first: [B,channels()[l],H/4,W/4], /8, /16 (, /32).
  virtual std::vector<torch::Tensor> features(const torch::Tensor& x) = 0;
  // Channels of each level that features() returns.
  const std::vector<int64_t>& channels() const { return channels_; }
  // Key prefixes of torchvision's ImageNet weights that this backbone leaves out on purpose (the
  // classifier, layers past last_stride): loading reports them neither missing nor unexpected.
  const std::vector<std::string>& skipped_keys() const { return skipped_; }
  // The part a parameter key belongs to, for the detector's trainable_layers: 0 the stem, 1..4
  // the layers that end at strides 4, 8, 16 and 32, 5 the classifier.
  virtual int part_of(const std::string& key) const = 0;
  // The ImageNet classifier's hidden layers as a box head: RoI features [R,box_head_input()] ->
  // [R,box_head_dim()]. Backbones without one (box_head_dim() == 0) throw std::logic_error.
  virtual torch::Tensor box_head(const torch::Tensor& rois);
  virtual int64_t box_head_dim() const { return 0; }
  virtual int64_t box_head_input() const { return 0; }
  // For inference only, once the weights are loaded (as fold_batch_norm): puts the box head's
  // parameters in the layout its fastest form needs. The module is then neither trained nor saved
  // (its parameters may change shape). Default: nothing to do.
  virtual void box_head_for_inference() {}

 protected:
  explicit BackboneImpl(const std::string& name) : torch::nn::Module(name) {}
  // Throws std::invalid_argument "NAME: expected input [B,3,H,W], got [..]".
  void check_input(const torch::Tensor& x) const;
  // Runs `layers` in order on x and keeps the output after each index listed in `taps`.
  static std::vector<torch::Tensor> run_tapped(torch::nn::Sequential& layers, torch::Tensor x,
                                               const std::vector<int>& taps);
  std::vector<int64_t> channels_;
  std::vector<std::string> skipped_;
};

// For every submodule: Conv2d weights kaiming normal (fan_out, ReLU gain) and zero biases,
// BatchNorm weight 1 and bias 0 (torchvision's ResNet initialisation).
void init_conv_bn(torch::nn::Module& module);

// Every registered name, in registry order ("resnet18" ... "vgg16", "mobilenet_v2").
const std::vector<std::string>& backbone_names();
// "resnet18, resnet34, ... or mobilenet_v2", for messages.
std::string backbone_list();
bool is_backbone(const std::string& name);
// Whether the backbone brings an ImageNet box head (model.detector.box_head: vgg).
bool backbone_has_box_head(const std::string& name);
// A freshly initialised backbone; throws std::invalid_argument naming an unknown name and the known
// ones, or a last_stride other than 16 or 32.
std::shared_ptr<BackboneImpl> make_backbone(const std::string& name, const BackboneOptions& options = {});

}  // namespace cspn
