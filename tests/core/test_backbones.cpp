// Backbones against torchvision: the same seeded weights (read from the .pth that torch.save wrote,
// and from a hand-written .safetensors copy) must give the same features (and ResNet's logits).
// And the registry: every backbone gives its levels at the strides and channels it declares, in
// both halves of the system.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "common.hpp"
#include "cspn/io/weights.hpp"
#include "cspn/config.hpp"
#include "cspn/detect/faster_rcnn.hpp"
#include "cspn/model/backbone.hpp"
#include "cspn/model/cspn_net.hpp"
#include "cspn/model/resnet.hpp"

namespace fs = std::filesystem;

namespace {

constexpr const char* kPython = "/usr/bin/python3";

bool torchvision_available() {
  const std::string cmd = std::string(kPython) + " -c 'import torchvision' > /dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

#define REQUIRE_TORCHVISION()                                                              \
  do {                                                                                     \
    if (!torchvision_available())                                                          \
      GTEST_SKIP() << kPython << " cannot import torchvision: no reference outputs";      \
  } while (0)

// Runs scripts/torchvision_reference.py, which writes weights.pth, weights.safetensors and
// io.safetensors into `dir`; returns its exit status.
int make_reference(const std::string& arch, const fs::path& dir) {
  const auto script = fs::path(cspn::test::kSourceDir) / "scripts" / "torchvision_reference.py";
  const std::string cmd = std::string(kPython) + " " + script.string() + " --arch " + arch +
                          " --out " + dir.string();
  return std::system(cmd.c_str());
}

std::map<std::string, torch::Tensor> by_name(const cspn::StateDict& sd) {
  return {sd.begin(), sd.end()};
}

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  return (a - b).abs().max().item<double>();
}

// The four levels of `net` on the reference input against torchvision's ("c2".."c5"), within 1e-4
// of each level's largest value.
void expect_reference_levels(cspn::BackboneImpl& net, const std::map<std::string, torch::Tensor>& io) {
  net.eval();
  torch::NoGradGuard no_grad;
  const auto features = net.features(io.at("input"));
  ASSERT_EQ(features.size(), 4u);
  for (int l = 0; l < 4; ++l) {
    const auto& ref = io.at("c" + std::to_string(l + 2));
    EXPECT_EQ(features[l].size(1), net.channels()[l]);
    EXPECT_LE(max_abs_diff(features[l], ref), 1e-4 * std::max(1.0, ref.abs().max().item<double>())) << "level " << l;
  }
}

void check_parity(const std::string& arch, int depth) {
  const auto dir = cspn::test::scratch_dir("resnet_parity_" + arch);
  ASSERT_EQ(make_reference(arch, dir), 0) << "scripts/torchvision_reference.py --arch " << arch;
  const auto pth = cspn::read_pth((dir / "weights.pth").string());

  cspn::BackboneOptions with_fc;
  with_fc.classifier = true;
  cspn::ResNet net(depth, with_fc);
  const auto report = cspn::load_state_dict(*net, pth);
  ASSERT_TRUE(report.ok()) << report.summary();
  EXPECT_EQ(report.loaded, cspn::state_dict(*net).size());
  // Parameter and buffer order equals torchvision's state_dict order.
  const auto ours = cspn::state_dict(*net);
  ASSERT_EQ(ours.size(), pth.size());
  for (size_t i = 0; i < ours.size(); ++i) EXPECT_EQ(ours[i].first, pth[i].first);

  // BN step counters are int64 in the file: 3 train-mode passes in the script.
  const auto files = by_name(pth);
  const auto& steps = files.at("bn1.num_batches_tracked");
  EXPECT_EQ(steps.scalar_type(), torch::kInt64);
  EXPECT_EQ(steps.item<int64_t>(), 3);

  // The safetensors copy holds identical tensors, in the same order.
  const auto st = cspn::read_weights((dir / "weights.safetensors").string());
  ASSERT_EQ(st.size(), pth.size());
  for (size_t i = 0; i < st.size(); ++i) {
    EXPECT_EQ(st[i].first, pth[i].first);
    EXPECT_TRUE(torch::equal(st[i].second, pth[i].second)) << st[i].first;
  }

  const auto io = by_name(cspn::read_safetensors((dir / "io.safetensors").string()));
  expect_reference_levels(*net, io);
  EXPECT_LE(max_abs_diff(net->forward(io.at("input")), io.at("logits")), 1e-4) << "logits";
}

}  // namespace

TEST(ResNetParity, ResNet50MatchesTorchvision) {
  REQUIRE_TORCHVISION();
  check_parity("resnet50", 50);
}

TEST(ResNetParity, ResNet101MatchesTorchvision) {
  REQUIRE_TORCHVISION();
  check_parity("resnet101", 101);
}

TEST(ResNet, ChannelsAndStrides) {
  torch::NoGradGuard no_grad;
  for (int depth : {18, 50}) {
    cspn::ResNet net(depth);
    net->eval();
    const auto f = net->features(torch::randn({2, 3, 64, 96}));
    const std::vector<int64_t> expected_channels =
        depth == 18 ? std::vector<int64_t>{64, 128, 256, 512} : std::vector<int64_t>{256, 512, 1024, 2048};
    EXPECT_EQ(net->channels(), expected_channels);
    for (int l = 0; l < 4; ++l) {
      const int64_t stride = int64_t{4} << l;
      EXPECT_EQ(f[l].sizes(), (std::vector<int64_t>{2, expected_channels[l], 64 / stride, 96 / stride}));
    }
  }
}

TEST(ResNet, RejectsBadDepthAndInput) {
  EXPECT_THROW(cspn::ResNet(42), std::invalid_argument);
  EXPECT_EQ(cspn::resnet_depth("resnet101"), 101);
  EXPECT_THROW(cspn::resnet_depth("vgg16"), std::invalid_argument);
  cspn::ResNet net(18);
  EXPECT_THROW(net->features(torch::zeros({1, 1, 32, 32})), std::invalid_argument);
  EXPECT_THROW(net->forward(torch::zeros({1, 3, 32, 32})), std::logic_error);  // no classifier
}

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

