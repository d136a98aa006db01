// Tests src/core/model/backbone.cpp, the backbone registry: every backbone gives its levels at the
// strides and channels it declares, in both halves of the system; MobileNetV2 against torchvision.
#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cspn/core/config.hpp"
#include "cspn/core/detect/faster_rcnn.hpp"
#include "cspn/core/io/weights.hpp"
#include "cspn/core/model/backbone.hpp"
#include "cspn/core/model/cspn_net.hpp"
#include "common.hpp"
#include "torchvision_reference.hpp"

using cspn::test::by_name;
using cspn::test::expect_reference_levels;
using cspn::test::make_reference;

TEST(BackboneParity, MobileNetV2MatchesTorchvision) {
  REQUIRE_TORCHVISION();
  const auto dir = cspn::test::scratch_dir("backbone_parity_mobilenet_v2");
  ASSERT_EQ(make_reference("mobilenet_v2", dir), 0) << "scripts/torchvision_reference.py --arch mobilenet_v2";
  const auto pth = cspn::read_pth((dir / "weights.pth").string());
  auto net = cspn::make_backbone("mobilenet_v2");
  const auto report = cspn::load_state_dict(*net, pth, "", net->skipped_keys());
  ASSERT_TRUE(report.ok()) << report.summary();
  // Every tensor of ours loaded, in torchvision's order; only the classifier stays in the file.
  const auto ours = cspn::state_dict(*net);
  EXPECT_EQ(report.loaded, ours.size());
  ASSERT_EQ(ours.size() + 2, pth.size());  // classifier.1.weight and .bias
  for (size_t i = 0; i < ours.size(); ++i) EXPECT_EQ(ours[i].first, pth[i].first);

  expect_reference_levels(*net, by_name(cspn::read_safetensors((dir / "io.safetensors").string())));
}

TEST(Backbones, EveryRegisteredBackboneGivesItsLevels) {
  torch::NoGradGuard no_grad;
  const std::vector<std::string> expected{"resnet18", "resnet34", "resnet50",  "resnet101",
                                          "resnet152", "vgg16",   "mobilenet_v2"};
  EXPECT_EQ(cspn::backbone_names(), expected);
  const auto x = torch::randn({1, 3, 64, 96});
  for (const auto& name : cspn::backbone_names()) {
    for (int last_stride : {16, 32}) {
      cspn::BackboneOptions options;
      options.last_stride = last_stride;
      auto net = cspn::make_backbone(name, options);
      net->eval();
      const auto f = net->features(x);
      ASSERT_EQ(f.size(), last_stride == 16 ? 3u : 4u) << name;
      ASSERT_EQ(net->channels().size(), f.size()) << name;
      for (size_t l = 0; l < f.size(); ++l) {
        const int64_t stride = int64_t{4} << l;
        EXPECT_EQ(f[l].sizes(), (std::vector<int64_t>{1, net->channels()[l], 64 / stride, 96 / stride}))
            << name << " level " << l;
      }
      // What the trunk leaves out is exactly what its skipped keys name: the whole backbone's weights
      // (classifier included) load into it without a report.
      if (last_stride == 16) {
        cspn::BackboneOptions whole;
        whole.classifier = true;
        const auto report = cspn::load_state_dict(*net, cspn::state_dict(*cspn::make_backbone(name, whole)), "",
                                                  net->skipped_keys());
        EXPECT_TRUE(report.ok()) << name << ": " << report.summary();
        EXPECT_EQ(report.loaded, cspn::state_dict(*net).size()) << name;
      }
      for (const auto& [key, tensor] : net->named_parameters().pairs()) {
        const int part = net->part_of(key);
        EXPECT_TRUE(part >= 0 && part <= 5) << name << " " << key;
      }
    }
  }
}

TEST(Backbones, UnknownNamesAreRefusedNamingTheKnownOnes) {
  try {
    cspn::make_backbone("resnet");
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("'resnet'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("mobilenet_v2"), std::string::npos) << e.what();
  }
  cspn::BackboneOptions odd;
  odd.last_stride = 8;
  EXPECT_THROW(cspn::make_backbone("resnet18", odd), std::invalid_argument);
  cspn::BackboneOptions trunk_with_fc;  // ResNet's classifier sits on layer4, which the trunk leaves out
  trunk_with_fc.last_stride = 16;
  trunk_with_fc.classifier = true;
  EXPECT_THROW(cspn::make_backbone("resnet50", trunk_with_fc), std::invalid_argument);
  cspn::Config cfg;
  cfg.set("model.detector.backbone=mobilenet_v3");
  try {
    cfg.validate();
    FAIL() << "no error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("model.detector.backbone"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(cspn::backbone_list()), std::string::npos) << e.what();
  }
}

// A backbone added through the registry serves both halves without either knowing it.
TEST(Backbones, MobileNetV2InBothHalves) {
  cspn::KeypointModelConfig k;
  k.backbone = "mobilenet_v2";
  k.stages = 2;
  k.channels = 32;
  k.input_size = {64, 64};
  cspn::CSPNNet net(k, 8);
  const auto out = net->forward(torch::randn({2, 3, 64, 64}));
  ASSERT_EQ(out.stages.size(), 2u);
  EXPECT_EQ(out.stages.back().sizes(), (std::vector<int64_t>{2, 8, 32, 32}));  // stage 2 at stride 2
  out.stages.back().sum().backward();
  EXPECT_TRUE(net->backbone->named_parameters()["features.0.0.weight"].grad().defined());

  for (const char* name : {"mobilenet_v2", "resnet34"}) {
    cspn::DetectorModelConfig d;
    d.backbone = name;
    d.anchor_sizes = {32, 64};
    d.rpn_post_nms_train = 16;
    d.box_batch = 16;
    d.head_dim = 32;
    d.freeze_bn = true;
    cspn::FasterRCNN detector(d, 3);
    detector->train();
    const auto losses =
        detector->losses(torch::randn({1, 3, 96, 80}), {cspn::DetTarget{torch::tensor({{10.f, 12.f, 50.f, 70.f}}), torch::tensor({1L})}});
    for (const auto& [part, value] : losses) EXPECT_TRUE(std::isfinite(value.item<double>())) << name << " " << part;
    detector->eval();
    torch::NoGradGuard no_grad;
    EXPECT_EQ(detector->detect(torch::randn({1, 3, 96, 80})).size(), 1u) << name;
  }
}
