#include "cspn/core/detect/faster_rcnn.hpp"
#include "cspn/core/util.hpp"

#include <algorithm>
#include <array>
#include <sstream>
#include <stdexcept>
#include <utility>

#include "cspn/core/detect/ops.hpp"

namespace cspn {
namespace {

namespace F = torch::nn::functional;

// torchvision's fixed post-processing constants.
constexpr double kRpnMinSize = 1e-3;  // proposals thinner than this are dropped
constexpr double kBoxMinSize = 1e-2;  // detections thinner than this are dropped whatever min_box_size says
constexpr double kSmoothL1Beta = 1.0 / 9.0;

const DetectorModelConfig& validated(const DetectorModelConfig& c, int num_classes) {
  c.validate();
  if (num_classes < 2)
    throw std::invalid_argument("cspn::FasterRCNN: num_classes counts the background and should "
                                "be >= 2, got " + std::to_string(num_classes));
  return c;
}

void init_normal(torch::nn::Module& layer, double std) {
  torch::NoGradGuard no_grad;
  for (auto& p : layer.named_parameters(/*recurse=*/false)) {
    if (p.key() == "weight")
      p.value().normal_(0, std);
    else
      p.value().zero_();
  }
}

}  // namespace

FasterRCNNImpl::FasterRCNNImpl(const DetectorModelConfig& cfg, int num_classes)
    : cfg_(validated(cfg, num_classes)),
      num_classes_(num_classes),
      anchors_(cfg.anchor_sizes, cfg.anchor_ratios),
      rpn_coder_({1.0, 1.0, 1.0, 1.0}),
      box_coder_({10.0, 10.0, 5.0, 5.0}) {
  // The trunk up to stride 16 (ResNet: conv1..layer3, C4; VGG16: conv5_3), with VGG16's fc6/fc7
  // when they serve as the box head.
  BackboneOptions trunk;
  trunk.last_stride = kStride;
  trunk.classifier = cfg_.box_head == "vgg";
  backbone_ = register_module("backbone", make_backbone(cfg_.backbone, trunk));
  const int64_t channels = backbone_->channels().back();
  // torchvision's trainable_layers: the last n of its five parts learn (ResNet: layer4, layer3,
  // layer2, layer1, conv1 + bn1; the stride-16 trunk has no layer4), the rest is frozen, BatchNorm
  // statistics included. A classifier serving as box head always learns.
  const auto learns = [&](const std::string& key) { return backbone_->part_of(key) >= 5 - cfg_.trainable_layers; };
  for (const auto& m : backbone_->named_modules()) {
    auto bn = std::dynamic_pointer_cast<BatchNormImpl>(m.value());
    if (!bn || (!cfg_.freeze_bn && learns(m.key()))) continue;
    for (auto& p : bn->parameters()) p.requires_grad_(false);
    bn->eval();
    frozen_bn_.emplace_back(bn);
  }
  for (auto& p : backbone_->named_parameters())
    if (!learns(p.key())) p.value().requires_grad_(false);

  const int64_t A = anchors_.num_anchors_per_location();
  auto rpn = register_module("rpn", std::make_shared<torch::nn::Module>("RegionProposalNetwork"));
  auto rpn_head = rpn->register_module("head", std::make_shared<torch::nn::Module>("RPNHead"));
  rpn_conv_ = rpn_head->register_module(
      "conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, channels, 3).padding(1)));
  rpn_cls_ = rpn_head->register_module("cls_logits",
                                       torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, A, 1)));
  rpn_bbox_ = rpn_head->register_module(
      "bbox_pred", torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, 4 * A, 1)));
  for (auto* layer : {rpn_conv_.get(), rpn_cls_.get(), rpn_bbox_.get()}) init_normal(*layer, 0.01);

  auto roi_heads = register_module("roi_heads", std::make_shared<torch::nn::Module>("RoIHeads"));
  int64_t representation = backbone_->box_head_dim();
  if (cfg_.box_head == "fc") {
    auto box_head = roi_heads->register_module("box_head",
                                               std::make_shared<torch::nn::Module>("TwoMLPHead"));
    const int64_t in = channels * cfg_.roi_size * cfg_.roi_size;
    fc6_ = box_head->register_module("fc6", torch::nn::Linear(in, cfg_.head_dim));
    fc7_ = box_head->register_module("fc7", torch::nn::Linear(cfg_.head_dim, cfg_.head_dim));
    representation = cfg_.head_dim;
  }
  auto predictor = roi_heads->register_module(
      "box_predictor", std::make_shared<torch::nn::Module>("FastRCNNPredictor"));
  cls_score_ = predictor->register_module("cls_score",
                                          torch::nn::Linear(representation, num_classes_));
  bbox_pred_ = predictor->register_module("bbox_pred",
                                          torch::nn::Linear(representation, 4 * num_classes_));
  // Small initial predictions (Detectron's choice): near-uniform scores, boxes ~ proposals.
  init_normal(*cls_score_, 0.01);
  init_normal(*bbox_pred_, 0.001);
}

void FasterRCNNImpl::train(bool on) {
  torch::nn::Module::train(on);
  for (auto& bn : frozen_bn_) bn->eval();
}

void FasterRCNNImpl::check_images(const char* where, const torch::Tensor& images) const {
  if (!images.defined() || images.dim() != 4 || images.size(1) != 3 || images.size(2) < kStride ||
      images.size(3) < kStride)
    throw std::invalid_argument(std::string("cspn::FasterRCNN::") + where +
                                ": images should be [B,3,H,W] with H, W >= 16, got " +
                                (images.defined() ? shape_of(images) : std::string("undefined")));
}

torch::Tensor FasterRCNNImpl::features(const torch::Tensor& images) {
  return backbone_->features(images).back();
}

FasterRCNNImpl::RpnOutput FasterRCNNImpl::rpn(const torch::Tensor& feat) {
  const int64_t B = feat.size(0), h = feat.size(2), w = feat.size(3);
  const int64_t A = anchors_.num_anchors_per_location();
  const auto t = torch::relu(rpn_conv_->forward(feat));
  // [B,A,h,w] -> [B,h*w*A] and [B,4A,h,w] -> [B,h*w*A,4], the anchor order of grid_anchors.
  auto objectness = rpn_cls_->forward(t).permute({0, 2, 3, 1}).reshape({B, -1});
  auto deltas =
      rpn_bbox_->forward(t).view({B, A, 4, h, w}).permute({0, 3, 4, 1, 2}).reshape({B, -1, 4});
  // Boxes stay float32 under autocast: in float16 a 256-pixel anchor's area (65536) overflows.
  auto anchors = anchors_.grid_anchors(h, w, kStride, kStride, feat.options().dtype(torch::kFloat));
  return {std::move(objectness), std::move(deltas), std::move(anchors)};
}

std::vector<torch::Tensor> FasterRCNNImpl::proposals(const RpnOutput& out,
                                                     const std::vector<std::array<int64_t, 2>>& sizes,
                                                     int64_t pre_nms, int64_t post_nms) const {
  torch::NoGradGuard no_grad;
  const int64_t B = out.objectness.size(0), N = out.objectness.size(1);
  const int64_t k = std::min(pre_nms, N);
  // Top-k by objectness for the whole batch at once; only those are decoded.
  const auto [scores, index] = out.objectness.topk(k, 1);  // [B,k]
  const auto deltas = out.deltas.gather(1, index.unsqueeze(2).expand({B, k, 4}));
  const auto anchors = out.anchors.index_select(0, index.reshape(-1));
  const auto decoded = rpn_coder_.decode(deltas.reshape({-1, 4}).to(torch::kFloat), anchors).view({B, k, 4});
  std::vector<torch::Tensor> result;
  result.reserve(B);
  for (int64_t b = 0; b < B; ++b) {
    const auto boxes = detect::clip_boxes(decoded[b], sizes[b][0], sizes[b][1]);
    const auto keep = detect::remove_small_boxes(boxes, kRpnMinSize);
    const auto kept_boxes = boxes.index_select(0, keep);
    auto order = detect::nms(kept_boxes, scores[b].index_select(0, keep), cfg_.rpn_nms);
    order = order.narrow(0, 0, std::min<int64_t>(post_nms, order.size(0)));
    result.push_back(kept_boxes.index_select(0, order));
  }
  return result;
}

std::pair<torch::Tensor, torch::Tensor> FasterRCNNImpl::box_predictions(
    const torch::Tensor& feat, const std::vector<torch::Tensor>& boxes) {
  std::vector<torch::Tensor> rois;
  rois.reserve(boxes.size());
  for (size_t b = 0; b < boxes.size(); ++b)
    rois.push_back(torch::cat(
        {torch::full({boxes[b].size(0), 1}, static_cast<double>(b), boxes[b].options()), boxes[b]},
        1));
  const auto all = torch::cat(rois).to(feat.scalar_type());  // [R,5]
  const std::array<int64_t, 2> size{cfg_.roi_size, cfg_.roi_size};
  const double scale = 1.0 / static_cast<double>(kStride);
  const auto pooled =
      cfg_.roi_op == "align"
          ? detect::roi_align(feat, all, size, scale, cfg_.roi_sampling_ratio, cfg_.roi_aligned)
          : detect::roi_pool(feat, all, size, scale);
  auto x = pooled.flatten(1);  // [R, C*S*S]
  x = cfg_.box_head == "vgg" ? backbone_->box_head(x) : torch::relu(fc7_->forward(torch::relu(fc6_->forward(x))));
  return {cls_score_->forward(x), bbox_pred_->forward(x)};
}

std::map<std::string, torch::Tensor> FasterRCNNImpl::losses(const torch::Tensor& images,
                                                            const std::vector<DetTarget>& targets) {
  check_images("losses", images);
  const int64_t B = images.size(0), H = images.size(2), W = images.size(3);
  if (static_cast<int64_t>(targets.size()) != B)
    throw std::invalid_argument("cspn::FasterRCNN::losses: expected one target per image (" +
                                std::to_string(B) + "), got " + std::to_string(targets.size()));
  std::vector<torch::Tensor> gt_boxes, gt_labels;
  for (int64_t b = 0; b < B; ++b) {
    const auto& t = targets[b];
    const std::string where = "cspn::FasterRCNN::losses: targets[" + std::to_string(b) + "].";
    check_boxes("cspn::FasterRCNN::losses", "targets[" + std::to_string(b) + "].boxes", t.boxes, /*floating=*/true);
    if (!t.labels.defined() || t.labels.dim() != 1 || t.labels.size(0) != t.boxes.size(0) ||
        t.labels.scalar_type() != torch::kLong)
      throw std::invalid_argument(where + "labels should be int64 [" +
                                  std::to_string(t.boxes.size(0)) + "], got " +
                                  (t.labels.defined() ? shape_of(t.labels) : "undefined"));
    if (t.labels.numel() > 0 &&
        (t.labels.min().item<int64_t>() < 1 || t.labels.max().item<int64_t>() >= num_classes_))
      throw std::invalid_argument(where + "labels should be in [1, " +
                                  std::to_string(num_classes_ - 1) + "], got [" +
                                  std::to_string(t.labels.min().item<int64_t>()) + ", " +
                                  std::to_string(t.labels.max().item<int64_t>()) + "]");
    gt_boxes.push_back(t.boxes.to(images.device(), images.scalar_type()));
    gt_labels.push_back(t.labels.to(images.device()));
  }

  const auto feat = features(images);
  const auto rpn_out = rpn(feat);
  const auto& anchors = rpn_out.anchors;

  // RPN targets: anchors with IoU >= rpn_fg_iou (or a gt's best anchor) are positive, < rpn_bg_iou
  // negative; a balanced sample of rpn_batch anchors per image enters the losses.
  const detect::Matcher rpn_matcher(cfg_.rpn_fg_iou, cfg_.rpn_bg_iou, true);
  const detect::BalancedPositiveNegativeSampler rpn_sampler(cfg_.rpn_batch, cfg_.rpn_pos_fraction);
  std::vector<torch::Tensor> obj_logits, obj_labels, rpn_deltas, rpn_targets;
  for (int64_t b = 0; b < B; ++b) {
    torch::Tensor labels, matched;  // [N] 1/0/-1; [N] gt index (or negative)
    {
      torch::NoGradGuard no_grad;
      matched = rpn_matcher(detect::box_iou(gt_boxes[b], anchors));
      labels = torch::where(matched >= 0, torch::ones_like(matched),
                            torch::where(matched == detect::Matcher::kBetween,
                                         torch::full_like(matched, -1), torch::zeros_like(matched)));
    }
    const auto sample = rpn_sampler(labels);
    const auto sampled = torch::cat({sample.positive, sample.negative});
    obj_logits.push_back(rpn_out.objectness[b].index_select(0, sampled));
    obj_labels.push_back(labels.index_select(0, sampled).to(images.scalar_type()));
    rpn_deltas.push_back(rpn_out.deltas[b].index_select(0, sample.positive));
    rpn_targets.push_back(rpn_coder_.encode(
        gt_boxes[b].index_select(0, matched.index_select(0, sample.positive)),
        anchors.index_select(0, sample.positive)));
  }
  const auto logits = torch::cat(obj_logits);
  std::map<std::string, torch::Tensor> out;
  out["loss_objectness"] = F::binary_cross_entropy_with_logits(logits, torch::cat(obj_labels));
  out["loss_rpn_box_reg"] = torch::smooth_l1_loss(torch::cat(rpn_deltas), torch::cat(rpn_targets),
                                                  at::Reduction::Sum, kSmoothL1Beta) /
                            std::max<int64_t>(logits.size(0), 1);

  // Box head targets on the proposals plus the ground truth boxes: IoU >= box_fg_iou takes the
  // gt's label, < box_bg_iou is background; box_batch RoIs per image, box_pos_fraction positive.
  auto boxes = proposals(rpn_out, std::vector<std::array<int64_t, 2>>(B, {H, W}), cfg_.rpn_pre_nms_train,
                         cfg_.rpn_post_nms_train);
  const detect::Matcher box_matcher(cfg_.box_fg_iou, cfg_.box_bg_iou, false);
  const detect::BalancedPositiveNegativeSampler box_sampler(cfg_.box_batch, cfg_.box_pos_fraction);
  std::vector<torch::Tensor> roi_labels, roi_targets;
  for (int64_t b = 0; b < B; ++b) {
    torch::NoGradGuard no_grad;
    const auto candidates = torch::cat({boxes[b], gt_boxes[b]});
    const auto matched = box_matcher(detect::box_iou(gt_boxes[b], candidates));
    const auto labels = torch::where(
        matched >= 0,
        gt_labels[b].numel() > 0 ? gt_labels[b].index_select(0, matched.clamp_min(0))
                                 : torch::zeros_like(matched),
        torch::where(matched == detect::Matcher::kBetween, torch::full_like(matched, -1),
                     torch::zeros_like(matched)));
    const auto sample = box_sampler(labels);
    const auto sampled = torch::cat({sample.positive, sample.negative});
    boxes[b] = candidates.index_select(0, sampled);
    roi_labels.push_back(labels.index_select(0, sampled));
    // Regression targets of the positives (first in `sampled`); negatives get no box loss.
    roi_targets.push_back(box_coder_.encode(
        gt_boxes[b].index_select(0, matched.index_select(0, sample.positive)),
        candidates.index_select(0, sample.positive)));
  }
  const auto [class_logits, box_deltas] = box_predictions(feat, boxes);
  const auto labels = torch::cat(roi_labels);  // [R]
  out["loss_classifier"] = F::cross_entropy(class_logits, labels);
  const auto positive = (labels > 0).nonzero().select(1, 0);  // the rows with regression targets
  const auto positive_deltas =
      box_deltas.view({box_deltas.size(0), num_classes_, 4})
          .index({positive, labels.index_select(0, positive)});  // [P,4] of each RoI's class
  out["loss_box_reg"] = torch::smooth_l1_loss(positive_deltas, torch::cat(roi_targets),
                                              at::Reduction::Sum, kSmoothL1Beta) /
                        std::max<int64_t>(labels.size(0), 1);
  return out;
}

std::vector<Detections> FasterRCNNImpl::detect(const torch::Tensor& images,
                                               const std::vector<std::array<int64_t, 2>>& sizes, bool flip) {
  check_images("detect", images);
  const int64_t B = images.size(0), H = images.size(2), W = images.size(3), K = num_classes_;
  if (!sizes.empty() && static_cast<int64_t>(sizes.size()) != B)
    throw std::invalid_argument("cspn::FasterRCNN::detect: expected one size per image (" + std::to_string(B) +
                                "), got " + std::to_string(sizes.size()));
  std::vector<std::array<int64_t, 2>> clip = sizes.empty() ? std::vector<std::array<int64_t, 2>>(B, {H, W}) : sizes;
  for (auto& [h, w] : clip) h = std::clamp<int64_t>(h, 1, H), w = std::clamp<int64_t>(w, 1, W);
  torch::NoGradGuard no_grad;
  // With flip, the mirrored images go through the trunk in the same batch; the proposals come from
  // the images as they are.
  const auto all_feat = features(flip ? torch::cat({images, images.flip({3})}) : images);
  const auto feat = all_feat.narrow(0, 0, B);
  const auto boxes = proposals(rpn(feat), clip, cfg_.rpn_pre_nms_test, cfg_.rpn_post_nms_test);
  auto [class_logits, box_deltas] = box_predictions(feat, boxes);
  auto scores = torch::softmax(class_logits, -1);  // [R,K]
  if (flip) {
    // The box head on each proposal's mirror image in the mirrored features; its class
    // probabilities and (unmirrored) box deltas are averaged with the direct ones.
    std::vector<torch::Tensor> mirrored;
    for (const auto& b : boxes) mirrored.push_back(detect::flip_boxes(b, W));
    const auto [flip_logits, flip_deltas] = box_predictions(all_feat.narrow(0, B, B), mirrored);
    scores = 0.5 * (scores + torch::softmax(flip_logits, -1));
    const auto unmirror = torch::tensor({-1.0, 1.0, 1.0, 1.0}, flip_deltas.options());
    box_deltas = 0.5 * (box_deltas + (flip_deltas.view({-1, K, 4}) * unmirror).view({-1, 4 * K}));
  }
  // Class-specific boxes [R,K,4]; the background column is dropped.
  const auto decoded = box_coder_.decode(box_deltas, torch::cat(boxes));
  const auto classes = torch::arange(1, K, scores.options().dtype(torch::kLong));

  std::vector<Detections> result;
  int64_t first = 0;
  for (size_t image = 0; image < boxes.size(); ++image) {
    const int64_t n = boxes[image].size(0);
    auto b = detect::clip_boxes(decoded.narrow(0, first, n), clip[image][0], clip[image][1])
                 .narrow(1, 1, K - 1)
                 .reshape({-1, 4});
    auto s = scores.narrow(0, first, n).narrow(1, 1, K - 1).reshape(-1);
    auto l = classes.unsqueeze(0).expand({n, K - 1}).reshape(-1);
    first += n;
    auto keep = (s > cfg_.score_thresh).nonzero().select(1, 0);
    b = b.index_select(0, keep), s = s.index_select(0, keep), l = l.index_select(0, keep);
    keep = detect::remove_small_boxes(b, std::max<double>(cfg_.min_box_size, kBoxMinSize));
    b = b.index_select(0, keep), s = s.index_select(0, keep), l = l.index_select(0, keep);
    keep = detect::batched_nms(b, s, l, cfg_.nms);
    keep = keep.narrow(0, 0, std::min<int64_t>(cfg_.detections_per_image, keep.size(0)));
    result.push_back({b.index_select(0, keep), s.index_select(0, keep), l.index_select(0, keep)});
  }
  return result;
}

}  // namespace cspn
