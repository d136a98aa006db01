#pragma once
// Faster R-CNN garment detector (the paper's "Detection Proposal" stage) on one stride-16 feature
// map: any registered backbone built to stride 16 (VGG16 conv5_3, ResNet C4 = conv1..layer3,
// MobileNetV2 features.13) -> RPN (3x3 conv, objectness and 4 deltas per
// anchor) -> proposals (decode, clip, drop tiny boxes, top-N, NMS, top-N) -> RoIAlign or RoIPool
// -> two FC layers -> class scores and class-specific box deltas. Training and inference follow
// torchvision.models.detection.FasterRCNN (matching, sampling, losses, post-processing).
//
// Parameter names: "backbone.<torchvision key>" (ImageNet weights load into backbone() as they
// are), "rpn.head.{conv,cls_logits,bbox_pred}", "roi_heads.box_head.{fc6,fc7}" (box_head "fc"),
// "roi_heads.box_predictor.{cls_score,bbox_pred}".
#include <cstdint>
#include <array>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "cspn/core/config.hpp"
#include "cspn/core/detect/box_coder.hpp"
#include "cspn/core/model/backbone.hpp"
#include "cspn/core/model/batch_norm.hpp"

namespace cspn {

// Ground truth of one image, in the pixels of the network input.
struct DetTarget {
  torch::Tensor boxes;   // [G,4] x1,y1,x2,y2 (floating point; G may be 0)
  torch::Tensor labels;  // [G] int64 in 1..num_classes-1
};

// Detections of one image, by decreasing score.
struct Detections {
  torch::Tensor boxes;   // [D,4] x1,y1,x2,y2 in network-input pixels
  torch::Tensor scores;  // [D]
  torch::Tensor labels;  // [D] int64 in 1..num_classes-1
};

class FasterRCNNImpl : public torch::nn::Module {
 public:
  // num_classes counts the background (label 0). Throws std::invalid_argument on a bad config.
  FasterRCNNImpl(const DetectorModelConfig& cfg, int num_classes);

  // images [B,3,H,W] (resized, ImageNet-normalised, padded to a common size), targets[B] ->
  // {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"} (scalars; the
  // training loss is their sum). Uses the *_train RPN top-N values; call in train mode.
  std::map<std::string, torch::Tensor> losses(const torch::Tensor& images,
                                              const std::vector<DetTarget>& targets);
  // images [B,3,H,W] -> per image up to detections_per_image detections above score_thresh and
  // at least min_box_size wide and high, after per-class NMS. Runs without gradients with the
  // *_test RPN values; call in eval mode. sizes[b] = {height, width} of image b before padding
  // (boxes are clipped to it); empty: every image fills the tensor. flip: the box head's class
  // probabilities and box deltas are averaged with those of the mirrored proposal in the mirrored
  // image (one more trunk pass).
  std::vector<Detections> detect(const torch::Tensor& images, const std::vector<std::array<int64_t, 2>>& sizes = {},
                                 bool flip = false);

  // Keeps frozen BatchNorm layers (freeze_bn) in eval mode whatever the module's mode.
  void train(bool on = true) override;

  std::shared_ptr<BackboneImpl> backbone() const { return backbone_; }
  const DetectorModelConfig& config() const { return cfg_; }
  int64_t num_classes() const { return num_classes_; }
  static constexpr int64_t kStride = 16;  // backbone feature stride in input pixels

 private:
  struct RpnOutput {
    torch::Tensor objectness;  // [B,N] logits, N = h*w*A
    torch::Tensor deltas;      // [B,N,4]
    torch::Tensor anchors;     // [N,4]
  };
  // images [B,3,H,W] -> stride-16 features [B,C,h,w].
  torch::Tensor features(const torch::Tensor& images);
  RpnOutput rpn(const torch::Tensor& features);
  // Per image: proposals [P_b,4] (no gradient), P_b <= post_nms.
  // sizes[b] = {height, width} that image b's boxes are clipped to.
  std::vector<torch::Tensor> proposals(const RpnOutput& out, const std::vector<std::array<int64_t, 2>>& sizes,
                                       int64_t pre_nms, int64_t post_nms) const;
  // RoI features of boxes per image -> (class logits [R,K], box deltas [R,4K]), R = sum of P_b.
  std::pair<torch::Tensor, torch::Tensor> box_predictions(const torch::Tensor& features,
                                                          const std::vector<torch::Tensor>& boxes);
  void check_images(const char* where, const torch::Tensor& images) const;

  DetectorModelConfig cfg_;
  int64_t num_classes_;
  detect::AnchorGenerator anchors_;
  detect::BoxCoder rpn_coder_, box_coder_;

  std::shared_ptr<BackboneImpl> backbone_;  // built to stride 16
  std::vector<BatchNorm> frozen_bn_;

  torch::nn::Conv2d rpn_conv_{nullptr}, rpn_cls_{nullptr}, rpn_bbox_{nullptr};
  torch::nn::Linear fc6_{nullptr}, fc7_{nullptr}, cls_score_{nullptr}, bbox_pred_{nullptr};
};
TORCH_MODULE(FasterRCNN);

}  // namespace cspn
