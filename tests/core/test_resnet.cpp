// Tests src/core/model/resnet.cpp: ResNet against torchvision (the same seeded weights, read from
// the .pth that torch.save wrote and from a hand-written .safetensors copy, must give the same
// features and logits), its levels' channels and strides, and what it refuses.
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cspn/core/io/weights.hpp"
#include "cspn/core/model/resnet.hpp"
#include "common.hpp"
#include "torchvision_reference.hpp"

namespace {

using cspn::test::by_name;
using cspn::test::expect_reference_levels;
using cspn::test::make_reference;
using cspn::test::max_abs_diff;

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
