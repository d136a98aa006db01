// Tests src/core/model/vgg.cpp: VGG16 against torchvision.models.vgg16 (same weights, same input),
// and its fc6/fc7 box head relaid for inference.
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "cspn/core/model/vgg.hpp"
#include "common.hpp"
#include "tensor_exchange.hpp"

namespace {

// VGG16 as the detector builds it (to stride 16, with fc6/fc7), in eval mode.
cspn::VGG16 detector_vgg16() {
  cspn::BackboneOptions trunk;
  trunk.classifier = true;
  trunk.last_stride = 16;
  cspn::VGG16 vgg(trunk);
  vgg->eval();
  return vgg;
}

TEST(DetectVGG16, MatchesTorchvisionFeatures) {
  CSPN_REQUIRE_TORCHVISION();
  const auto dir = cspn::test::scratch_dir("detect_vgg16_torchvision");
  cspn::test::run_reference_script("torchvision_ops_reference.py", "vgg16 '" + dir.string() + "'",
                                   dir);
  const auto ref = cspn::test::read_tensors(dir, "outputs.json");
  cspn::VGG16 vgg = detector_vgg16();
  {
    torch::NoGradGuard no_grad;
    for (auto& p : vgg->named_parameters()) {
      if (p.key().rfind("features.", 0) != 0) continue;
      ASSERT_TRUE(ref.count(p.key())) << "torchvision has no " << p.key();
      ASSERT_EQ(p.value().sizes(), ref.at(p.key()).sizes()) << p.key();
      p.value().copy_(ref.at(p.key()));
    }
  }
  const auto levels = vgg->features(ref.at("input"));
  ASSERT_EQ(levels.size(), 3u);  // conv3_3, conv4_3, conv5_3
  const auto& out = levels.back();
  ASSERT_EQ(out.sizes(), ref.at("conv5_3").sizes());
  const double scale = ref.at("conv5_3").abs().max().item<double>();
  EXPECT_LT((out - ref.at("conv5_3")).abs().max().item<double>(), 1e-4 * scale);

  // Every parameter of ours is in torchvision's state dict with the same shape.
  std::ifstream in(dir / "state_dict_shapes.json");
  const auto shapes = nlohmann::json::parse(in);
  for (const auto& p : vgg->named_parameters()) {
    ASSERT_TRUE(shapes.contains(p.key())) << p.key();
    EXPECT_EQ(p.value().sizes().vec(), shapes[p.key()].get<std::vector<int64_t>>()) << p.key();
  }
  EXPECT_EQ(vgg->named_parameters().size(), 13u * 2 + 2 * 2);  // 13 convs, fc6, fc7
}

// fc6 run as a 7x7 convolution (channels-last) gives fc7's activations of the matrix product, up
// to rounding; the relaid module refuses to train and handles no RoIs.
TEST(DetectVGG16, BoxHeadForInferenceKeepsTheActivations) {
  cspn::VGG16 vgg = detector_vgg16();
  torch::NoGradGuard no_grad;
  const auto rois = torch::randn({6, vgg->box_head_input()}).relu();  // RoI features follow a ReLU
  const auto before = vgg->box_head(rois);
  ASSERT_GT(before.abs().max().item<double>(), 0.0);
  vgg->box_head_for_inference();
  EXPECT_EQ(vgg->named_parameters()["classifier.0.weight"].sizes(), torch::IntArrayRef({4096, 512, 7, 7}));
  const auto after = vgg->box_head(rois);
  ASSERT_EQ(after.sizes(), before.sizes());
  EXPECT_LT((after - before).abs().max().item<double>(), 1e-5 * before.abs().max().item<double>());
  EXPECT_EQ(vgg->box_head(torch::zeros({0, vgg->box_head_input()})).sizes(), torch::IntArrayRef({0, 4096}));
  vgg->train();
  EXPECT_THROW(vgg->box_head(rois), std::logic_error);
}

}  // namespace
