// Tests src/core/detect/faster_rcnn.cpp, the Faster R-CNN detector: parameter names, shapes, input
// checks, frozen layers, a model that must learn (overfitting one synthetic image until detect()
// finds both of its boxes), and training and detecting on CUDA.
#include <cmath>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cspn/core/detect/faster_rcnn.hpp"
#include "cspn/core/detect/ops.hpp"
#include "cspn/core/io/weights.hpp"
#include "cspn/core/model/batch_norm.hpp"
#include "cuda.hpp"

namespace {

using cspn::DetectorModelConfig;
using cspn::DetTarget;
using cspn::FasterRCNN;

bool has_key(const torch::nn::Module& m, const std::string& key) {
  return m.named_parameters().contains(key) || m.named_buffers().contains(key);
}

DetectorModelConfig small_config() {
  DetectorModelConfig cfg;
  cfg.backbone = "resnet18";
  cfg.anchor_sizes = {32, 64};
  cfg.rpn_pre_nms_train = 300;
  cfg.rpn_post_nms_train = 64;
  cfg.rpn_pre_nms_test = 300;
  cfg.rpn_post_nms_test = 32;
  cfg.rpn_batch = 64;
  cfg.box_batch = 32;
  cfg.head_dim = 128;
  cfg.freeze_bn = true;  // one image per batch: BatchNorm keeps its initial statistics
  return cfg;
}

// The paper's detector at small_config's sizes: VGG16, RoI pooling, fc6/fc7 as the box head.
DetectorModelConfig vgg_config() {
  auto cfg = small_config();
  cfg.backbone = "vgg16";
  cfg.box_head = "vgg";
  cfg.roi_op = "pool";
  return cfg;
}

TEST(DetectFasterRCNN, ParameterNamesFollowTorchvision) {
  FasterRCNN model(small_config(), 3);
  for (const char* key : {"backbone.conv1.weight", "backbone.bn1.running_mean",
                          "backbone.layer3.1.conv2.weight", "rpn.head.conv.weight",
                          "rpn.head.cls_logits.bias", "rpn.head.bbox_pred.weight",
                          "roi_heads.box_head.fc6.weight", "roi_heads.box_head.fc7.weight",
                          "roi_heads.box_predictor.cls_score.weight",
                          "roi_heads.box_predictor.bbox_pred.bias"})
    EXPECT_TRUE(has_key(*model, key)) << key;
  for (const auto& p : model->named_parameters())
    EXPECT_EQ(p.key().rfind("backbone.layer4", 0), std::string::npos) << p.key();
  EXPECT_EQ(model->named_parameters()["rpn.head.cls_logits.weight"].size(0), 6);  // 2 sizes x 3 ratios
  EXPECT_EQ(model->named_parameters()["roi_heads.box_head.fc6.weight"].size(1), 256 * 7 * 7);
  EXPECT_EQ(model->named_parameters()["roi_heads.box_predictor.bbox_pred.weight"].size(0), 12);
  // Frozen BatchNorm: no trainable affine, eval mode even in a training model.
  model->train();
  for (const auto& m : model->backbone()->modules())
    if (auto bn = std::dynamic_pointer_cast<cspn::BatchNormImpl>(m)) {
      EXPECT_FALSE(bn->is_training());
      EXPECT_FALSE(bn->weight.requires_grad());
    }
}

TEST(DetectFasterRCNN, RejectsBadConfigAndInputs) {
  auto cfg = small_config();
  cfg.backbone = "resnet";  // not a registered backbone
  EXPECT_THROW(FasterRCNN(cfg, 3), std::invalid_argument);
  cfg = small_config();
  cfg.box_head = "vgg";  // needs the vgg16 backbone
  EXPECT_THROW(FasterRCNN(cfg, 3), std::invalid_argument);
  EXPECT_THROW(FasterRCNN(small_config(), 1), std::invalid_argument);
  FasterRCNN model(small_config(), 3);
  const auto images = torch::randn({1, 3, 64, 64});
  EXPECT_THROW(model->losses(images, {}), std::invalid_argument);
  EXPECT_THROW(model->losses(images, {DetTarget{torch::zeros({1, 4}), torch::tensor({3L})}}),
               std::invalid_argument);  // label 3 with 3 classes (0..2)
  EXPECT_THROW(model->detect(torch::randn({1, 64, 64})), std::invalid_argument);
}

// The paper's detector (VGG16, RoI pooling, fc6/fc7) finds the same top boxes with fc6 relaid as
// a convolution: the RPN is untouched, the box head's scores and deltas move by rounding only.
TEST(DetectFasterRCNN, VggBoxHeadForInferenceKeepsTheDetections) {
  auto cfg = vgg_config();
  cfg.score_thresh = 0.0f;
  cfg.detections_per_image = 3;
  FasterRCNN plain(cfg, 4), relaid(cfg, 4);
  cspn::load_state_dict(*relaid, cspn::state_dict(*plain), "");
  plain->eval();
  relaid->eval();
  relaid->backbone()->box_head_for_inference();
  torch::NoGradGuard no_grad;
  const auto images = torch::randn({1, 3, 96, 128});
  const auto a = plain->detect(images)[0], b = relaid->detect(images)[0];
  ASSERT_EQ(a.boxes.size(0), 3);
  ASSERT_EQ(b.boxes.sizes(), a.boxes.sizes());
  EXPECT_TRUE(torch::equal(a.labels, b.labels));
  EXPECT_LT((a.boxes - b.boxes).abs().max().item<double>(), 1e-3);  // pixels
  EXPECT_LT((a.scores - b.scores).abs().max().item<double>(), 1e-5);
}

TEST(DetectFasterRCNN, LossesAndDetectionsHaveTheRightShapes) {
  for (const char* roi_op : {"align", "pool"}) {
    auto cfg = small_config();
    cfg.roi_op = roi_op;
    FasterRCNN model(cfg, 4);
    model->train();
    const auto images = torch::randn({2, 3, 96, 80});
    // The second image has no objects: all its anchors and proposals are background.
    const std::vector<DetTarget> targets{
        {torch::tensor({{10.f, 12.f, 50.f, 70.f}, {40.f, 20.f, 78.f, 60.f}}), torch::tensor({1L, 3L})},
        {torch::zeros({0, 4}), torch::zeros({0}, torch::kLong)}};
    const auto losses = model->losses(images, targets);
    ASSERT_EQ(losses.size(), 4u);
    torch::Tensor total = torch::zeros({});
    for (const auto& [name, value] : losses) {
      EXPECT_EQ(value.dim(), 0) << name;
      EXPECT_TRUE(std::isfinite(value.item<double>())) << name;
      total = total + value;
    }
    total.backward();
    EXPECT_TRUE(model->named_parameters()["rpn.head.conv.weight"].grad().defined());
    EXPECT_TRUE(model->named_parameters()["backbone.layer1.0.conv1.weight"].grad().defined());

    model->eval();
    const auto dets = model->detect(images);
    ASSERT_EQ(dets.size(), 2u);
    for (const auto& d : dets) {
      const int64_t n = d.boxes.size(0);
      EXPECT_LE(n, cfg.detections_per_image);
      EXPECT_EQ(d.boxes.sizes(), (std::vector<int64_t>{n, 4}));
      EXPECT_EQ(d.scores.sizes(), (std::vector<int64_t>{n}));
      EXPECT_EQ(d.labels.scalar_type(), torch::kLong);
      if (n > 0) {
        EXPECT_GE(d.labels.min().item<int64_t>(), 1);
        EXPECT_LT(d.labels.max().item<int64_t>(), 4);
        EXPECT_GT(d.scores.min().item<float>(), cfg.score_thresh);
        EXPECT_GE(d.boxes.min().item<float>(), 0.f);
        EXPECT_TRUE(torch::equal(d.scores, std::get<0>(d.scores.sort(0, true))));
      }
    }
  }
}

TEST(DetectFasterRCNN, DetectionsStayInsideEachImageAndAreNotSlivers) {
  auto cfg = small_config();
  cfg.score_thresh = 0.0f;  // an untrained head: keep whatever it finds
  cfg.min_box_size = 6.0f;
  FasterRCNN model(cfg, 4);
  model->eval();
  // Two images padded into one batch: the second one covers only its top-left 40x30.
  const auto images = torch::randn({2, 3, 96, 80});
  const auto dets = model->detect(images, {{96, 80}, {40, 30}});
  ASSERT_EQ(dets.size(), 2u);
  ASSERT_GT(dets[1].boxes.size(0), 0) << "no detections to check";
  for (int b = 0; b < 2; ++b) {
    const auto& boxes = dets[b].boxes;
    if (boxes.size(0) == 0) continue;
    const float w = b == 0 ? 80.f : 30.f, h = b == 0 ? 96.f : 40.f;
    EXPECT_GE(boxes.min().item<float>(), 0.f);
    EXPECT_LE(boxes.select(1, 2).max().item<float>(), w) << "image " << b;
    EXPECT_LE(boxes.select(1, 3).max().item<float>(), h) << "image " << b;
    const auto widths = boxes.select(1, 2) - boxes.select(1, 0), heights = boxes.select(1, 3) - boxes.select(1, 1);
    EXPECT_GE(torch::min(widths.min(), heights.min()).item<float>(), cfg.min_box_size) << "image " << b;
  }
  EXPECT_THROW(model->detect(images, {{96, 80}}), std::invalid_argument);  // one size for two images
}

TEST(DetectFasterRCNN, TrainableLayersFreezeTheRest) {
  auto cfg = small_config();
  cfg.freeze_bn = false;
  cfg.trainable_layers = 3;  // layer4 (absent in C4), layer3, layer2 learn; layer1 and the stem do not
  FasterRCNN model(cfg, 3);
  model->train();
  const auto before = model->named_buffers()["backbone.layer1.0.bn1.running_mean"].clone();
  const auto learning_before = model->named_buffers()["backbone.layer2.0.bn1.running_mean"].clone();
  const std::vector<DetTarget> targets{{torch::tensor({{10.f, 12.f, 50.f, 70.f}}), torch::tensor({1L})}};
  torch::Tensor total = torch::zeros({});
  for (const auto& [name, value] : model->losses(torch::randn({1, 3, 96, 80}), targets)) total = total + value;
  total.backward();
  const auto params = model->named_parameters();
  for (const char* frozen : {"backbone.conv1.weight", "backbone.bn1.weight", "backbone.layer1.1.conv2.weight",
                             "backbone.layer1.0.bn1.bias"}) {
    EXPECT_FALSE(params[frozen].requires_grad()) << frozen;
    EXPECT_FALSE(params[frozen].grad().defined()) << frozen;
  }
  for (const char* learning : {"backbone.layer2.0.conv1.weight", "backbone.layer2.0.downsample.1.weight",
                               "backbone.layer3.1.bn2.weight", "rpn.head.conv.weight"})
    EXPECT_TRUE(params[learning].grad().defined()) << learning;
  EXPECT_TRUE(model->named_buffers()["backbone.layer1.0.bn1.running_mean"].equal(before))
      << "a frozen layer's BatchNorm must keep its statistics";
  EXPECT_FALSE(model->named_buffers()["backbone.layer2.0.bn1.running_mean"].equal(learning_before));
  cfg.trainable_layers = 6;
  EXPECT_THROW(FasterRCNN(cfg, 3), std::invalid_argument);

  // VGG16's five conv blocks are its parts; fc6/fc7 as the box head always learn.
  cfg.backbone = "vgg16";
  cfg.box_head = "vgg";
  cfg.trainable_layers = 3;
  FasterRCNN vgg(cfg, 3);
  const auto vgg_params = vgg->named_parameters();
  for (const char* frozen : {"backbone.features.0.weight", "backbone.features.7.bias"})
    EXPECT_FALSE(vgg_params[frozen].requires_grad()) << frozen;
  for (const char* learning : {"backbone.features.10.weight", "backbone.features.28.weight", "backbone.classifier.0.weight"})
    EXPECT_TRUE(vgg_params[learning].requires_grad()) << learning;
}

TEST(DetectFasterRCNN, Vgg16BackboneWithItsFcHead) {
  auto cfg = vgg_config();
  cfg.rpn_post_nms_train = 8;
  cfg.box_batch = 8;
  cfg.rpn_post_nms_test = 8;
  FasterRCNN model(cfg, 2);
  EXPECT_TRUE(has_key(*model, "backbone.features.28.weight"));
  EXPECT_TRUE(has_key(*model, "backbone.classifier.3.weight"));
  EXPECT_FALSE(has_key(*model, "roi_heads.box_head.fc6.weight"));
  EXPECT_EQ(model->named_parameters()["roi_heads.box_predictor.cls_score.weight"].size(1), 4096);
  const auto images = torch::randn({1, 3, 64, 64});
  const auto losses =
      model->losses(images, {DetTarget{torch::tensor({{8.f, 8.f, 40.f, 56.f}}), torch::tensor({1L})}});
  for (const auto& [name, value] : losses) EXPECT_TRUE(std::isfinite(value.item<double>())) << name;
  model->eval();
  EXPECT_EQ(model->detect(images).size(), 1u);
}

TEST(DetectFasterRCNN, RunsOnCuda) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const torch::Device cuda(torch::kCUDA);
  for (const char* roi_op : {"align", "pool"}) {
    auto cfg = small_config();
    cfg.roi_op = roi_op;
    FasterRCNN model(cfg, 3);
    model->to(cuda);
    model->train();
    const auto images = torch::randn({2, 3, 96, 96}, cuda);
    const std::vector<DetTarget> targets{
        {torch::tensor({{10.f, 12.f, 50.f, 70.f}}, cuda), torch::tensor({2L}, cuda)},
        {torch::zeros({0, 4}, cuda), torch::zeros({0}, torch::TensorOptions(cuda).dtype(torch::kLong))}};
    torch::Tensor total = torch::zeros({}, cuda);
    for (const auto& [name, value] : model->losses(images, targets)) {
      EXPECT_TRUE(value.is_cuda()) << name;
      EXPECT_TRUE(std::isfinite(value.item<double>())) << name;
      total = total + value;
    }
    total.backward();
    EXPECT_TRUE(model->named_parameters()["roi_heads.box_head.fc6.weight"].grad().is_cuda());
    model->eval();
    for (const auto& d : model->detect(images)) {
      EXPECT_TRUE(d.boxes.is_cuda());
      EXPECT_TRUE(d.labels.is_cuda());
    }
  }
}

TEST(DetectFasterRCNN, OverfitsOneSyntheticImage) {
  torch::manual_seed(3);
  // Two flat-coloured rectangles on noise, 128 x 128; labels 1 (red) and 2 (green).
  auto image = torch::randn({1, 3, 128, 128}) * 0.5;
  const auto gt = torch::tensor({{14.f, 18.f, 62.f, 86.f}, {72.f, 40.f, 118.f, 108.f}});
  image.index_put_({0, torch::indexing::Slice(), torch::indexing::Slice(18, 86),
                    torch::indexing::Slice(14, 62)},
                   torch::tensor({2.f, -1.f, -1.f}).view({3, 1, 1}));
  image.index_put_({0, torch::indexing::Slice(), torch::indexing::Slice(40, 108),
                    torch::indexing::Slice(72, 118)},
                   torch::tensor({-1.f, 2.f, -1.f}).view({3, 1, 1}));
  const std::vector<DetTarget> targets{{gt, torch::tensor({1L, 2L})}};

  // The from-scratch backbone trains at 1/20 of the heads' rate so that their features drift
  // slowly; larger box batches with half positives make the few box head steps less noisy.
  auto cfg = small_config();
  cfg.box_batch = 128;
  cfg.box_pos_fraction = 0.5f;
  cfg.head_dim = 256;
  FasterRCNN model(cfg, 3);
  model->train();
  std::vector<torch::Tensor> backbone, heads;
  for (const auto& p : model->named_parameters())
    (p.key().rfind("backbone.", 0) == 0 ? backbone : heads).push_back(p.value());
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(heads, std::make_unique<torch::optim::AdamOptions>(2e-3));
  groups.emplace_back(backbone, std::make_unique<torch::optim::AdamOptions>(1e-4));
  torch::optim::Adam opt(groups, torch::optim::AdamOptions(2e-3));
  std::vector<double> totals;
  for (int step = 0; step < 50; ++step) {
    const auto losses = model->losses(image, targets);
    auto total = losses.at("loss_objectness") + losses.at("loss_rpn_box_reg") +
                 losses.at("loss_classifier") + losses.at("loss_box_reg");
    ASSERT_TRUE(std::isfinite(total.item<double>())) << "step " << step;
    totals.push_back(total.item<double>());
    opt.zero_grad();
    total.backward();
    opt.step();
  }
  const auto mean5 = [&](size_t from) {
    return std::accumulate(totals.begin() + from, totals.begin() + from + 5, 0.0) / 5;
  };
  EXPECT_LT(mean5(totals.size() - 5), 0.3 * mean5(0)) << "first " << totals.front() << ", last "
                                                      << totals.back();

  model->eval();
  // The mirrored view alone has never been seen: the direct view must carry flip averaging, and
  // the box deltas from the mirrored view must come back unmirrored, or the boxes drift.
  for (const bool flip : {false, true}) {
    const auto dets = model->detect(image, {}, flip)[0];
    ASSERT_GE(dets.boxes.size(0), 2) << "flip " << flip;
    for (int64_t g = 0; g < 2; ++g) {
      // The best-scoring detection of the object's class overlaps it with IoU > 0.7.
      const auto of_class = (dets.labels == g + 1).nonzero().select(1, 0);
      ASSERT_GT(of_class.numel(), 0) << "no detection of class " << g + 1 << ", flip " << flip;
      const auto best = dets.boxes.index_select(0, of_class.narrow(0, 0, 1));
      const double iou = cspn::detect::box_iou(best, gt.narrow(0, g, 1)).item<double>();
      EXPECT_GT(iou, 0.7) << "class " << g + 1 << ", flip " << flip;
    }
  }
}

TEST(Cuda, DetectorTrainsAndDetectsOnTheDevice) {
  CSPN_REQUIRE_CUDA();
  torch::manual_seed(2);
  cspn::DetectorModelConfig cfg;
  cfg.backbone = "resnet18";
  cspn::FasterRCNN det(cfg, 4);
  det->to(torch::kCUDA);
  det->train();
  const auto images = torch::randn({2, 3, 256, 256}, torch::kCUDA);
  std::vector<cspn::DetTarget> targets(2);
  for (auto& t : targets) {
    t.boxes = torch::tensor({{30.f, 40.f, 150.f, 200.f}}, torch::kCUDA);
    t.labels = torch::tensor({1}, torch::dtype(torch::kLong).device(torch::kCUDA));
  }
  auto losses = det->losses(images, targets);
  torch::Tensor total = torch::zeros({}, torch::kCUDA);
  for (auto& [name, value] : losses) {
    EXPECT_TRUE(value.is_cuda()) << name;
    EXPECT_TRUE(std::isfinite(value.item<double>())) << name;
    total = total + value;
  }
  total.backward();
  det->eval();
  const auto dets = det->detect(images);
  ASSERT_EQ(dets.size(), 2u);
  EXPECT_TRUE(dets[0].boxes.is_cuda() || dets[0].boxes.numel() == 0);
}

}  // namespace
