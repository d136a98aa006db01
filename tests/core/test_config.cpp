// Tests src/core/config.cpp: YAML and --set overrides, errors naming the key, the bounds and model
// rules of validate(), and the JSON round trip.
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cspn/core/config.hpp"
#include "cspn/core/util.hpp"
#include "cspn/core/detect/faster_rcnn.hpp"
#include "cspn/core/model/cspn_net.hpp"

using cspn::Config;
using cspn::decimal;

namespace {

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Config, YamlThenSetOverridesDefaults) {
  Config cfg;
  EXPECT_EQ(cfg.model.keypoints.stages, 4);
  cfg.load_yaml_string("model:\n  keypoints:\n    stages: 2\n    input_size: [128, 96]\ntrain:\n  lr: 0.01\n", "t.yaml");
  EXPECT_EQ(cfg.model.keypoints.stages, 2);
  EXPECT_EQ(cfg.model.keypoints.input_size, (std::vector<int>{128, 96}));
  EXPECT_FLOAT_EQ(cfg.train.lr, 0.01f);
  cfg.set("train.lr=0.5");
  cfg.set("test.flip=false");
  cfg.set("model.keypoints.backbone=resnet18");
  EXPECT_FLOAT_EQ(cfg.train.lr, 0.5f);
  EXPECT_FALSE(cfg.test.flip);
  EXPECT_EQ(cfg.model.keypoints.backbone, "resnet18");
  EXPECT_EQ(cfg.train.epochs, Config().train.epochs);  // untouched keys keep their defaults
}

// Floats are written with the digits they have: 0.3, not 0.30000001192092896.
TEST(Config, FloatsAreWrittenWithTheirOwnDigits) {
  EXPECT_EQ(decimal(0.3f), 0.3);
  EXPECT_EQ(decimal(1e-3f), 0.001);
  EXPECT_EQ(decimal(2.0f), 2.0);
  EXPECT_EQ(static_cast<float>(decimal(0.1f + 0.2f)), 0.1f + 0.2f) << "every float reads back exactly";
  Config cfg;
  cfg.set("data.scale_aug=0.3");
  const std::string text = cfg.to_json().dump();
  EXPECT_NE(text.find("\"scale_aug\":0.3,"), std::string::npos) << text;
  EXPECT_EQ(text.find("0000001"), std::string::npos) << text;
  EXPECT_EQ(Config::from_json(cfg.to_json()).data.scale_aug, 0.3f);
}

TEST(Config, UnknownKeyNamesFileLineAndKey) {
  Config cfg;
  const auto msg = error_of([&] { cfg.load_yaml_string("train:\n  lr: 0.1\n  lerning_rate: 3\n", "run.yaml"); });
  EXPECT_NE(msg.find("run.yaml:3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("train.lerning_rate"), std::string::npos) << msg;
  EXPECT_NE(error_of([&] { cfg.set("model.keypoint.stages=2"); }).find("model.keypoint"), std::string::npos);
}

TEST(Config, BadValuesAreErrorsNamingTheKey) {
  Config cfg;
  const auto msg = error_of([&] { cfg.load_yaml_string("train:\n  epochs: many\n", "x.yaml"); });
  EXPECT_NE(msg.find("train.epochs"), std::string::npos) << msg;
  EXPECT_NE(msg.find("integer"), std::string::npos) << msg;
  EXPECT_NE(error_of([&] { cfg.set("no_equals_sign"); }), "");
  cfg.set("model.keypoints.stages=7");
  EXPECT_NE(error_of([&] { cfg.validate(); }).find("model.keypoints.stages"), std::string::npos);
  Config ok;
  ok.set("model.keypoints.input_size=[100, 96]");
  EXPECT_NE(error_of([&] { ok.validate(); }).find("multiples of 32"), std::string::npos);
  Config narrowing;
  narrowing.set("loss.same_stride_sigma=1.5");
  EXPECT_NE(error_of([&] { narrowing.validate(); }).find("loss.same_stride_sigma"), std::string::npos);
  Config transfer;  // the detector can start from the landmark network's backbone only if they match
  transfer.set("model.detector.enabled=true");
  transfer.set("model.detector.backbone_from_keypoints=true");
  EXPECT_NE(error_of([&] { transfer.validate(); }).find("model.detector.backbone_from_keypoints"), std::string::npos);
  transfer.set("model.keypoints.backbone=resnet18");
  EXPECT_EQ(error_of([&] { transfer.validate(); }), "");
  transfer.set("train_detector.batch_size=0");
  EXPECT_NE(error_of([&] { transfer.validate(); }).find("train_detector.batch_size"), std::string::npos);
}

// Issue 14, cases 3 and 16: values that would allocate without end, repeated keys, non-finite
// numbers, and shapes of YAML that the schema does not have (found by fuzz/fuzz_config.cpp).
TEST(Config, BoundsDuplicatesAndOddYamlAreErrorsNamingTheKey) {
  const auto error_in = [](const std::string& yaml) {
    return error_of([&] {
      Config cfg;
      cfg.load_yaml_string(yaml, "c.yaml");
      cfg.validate();
    });
  };
  EXPECT_NE(error_in("model:\n  keypoints: {channels: 2000000000}\n").find("model.keypoints.channels"), std::string::npos);
  EXPECT_NE(error_in("model:\n  keypoints: {input_size: [100000, 100000]}\n").find("model.keypoints.input_size"),
            std::string::npos);
  const auto twice = error_in("train:\n  lr: 0.1\n  epochs: 3\n  lr: 0.5\n");
  EXPECT_NE(twice.find("c.yaml:4"), std::string::npos) << twice;
  EXPECT_NE(twice.find("'train.lr' given twice"), std::string::npos) << twice;
  EXPECT_NE(error_in("model:\n  keypoints: {sigma: .inf}\n").find("finite"), std::string::npos);
  EXPECT_NE(error_in("model:\n  detector: {score_thresh: 1.5}\n").find("model.detector.score_thresh"), std::string::npos);
  EXPECT_NE(error_in("train:\n  warmup_iters: -100\n").find("train.warmup_iters"), std::string::npos);
  EXPECT_NE(error_in("test:\n  precision: float64\n").find("test.precision"), std::string::npos);
  EXPECT_NE(error_in("train_detector:\n  precision: half\n").find("train_detector.precision"), std::string::npos);
  EXPECT_NE(error_in("train:\n  dist_timeout_s: 0\n").find("train.dist_timeout_s"), std::string::npos);
  EXPECT_NE(error_in("model:\n  detector: {anchor_sizes: [-32, 64]}\n").find("model.detector.anchor_sizes"),
            std::string::npos);
  EXPECT_NE(error_in("model:\n  ? {a: 1}\n  : 3\n").find("not a plain name"), std::string::npos);
  const auto bytes = error_in("model:\n  keypoints: {backbone: \"res\xDAnet\"}\n");
  EXPECT_NE(bytes.find("model.keypoints.backbone"), std::string::npos) << bytes;
  // A disabled detector's settings are not held against the run (configs/scenes.yaml without it).
  Config landmarks_only;
  landmarks_only.set("model.detector.enabled=false");
  landmarks_only.set("model.detector.backbone_from_keypoints=true");
  landmarks_only.set("model.detector.backbone=vgg16");
  EXPECT_EQ(error_of([&] { landmarks_only.validate(); }), "");
}

// A model section's rules live in one place: the config and the model constructors give the same
// error for the same value.
TEST(Config, ModelRulesAreTheConstructorsRules) {
  Config cfg;
  cfg.set("model.keypoints.channels=33");  // odd: the pyramid's bottlenecks halve it
  const std::string from_config = error_of([&] { cfg.validate(); });
  EXPECT_NE(from_config.find("model.keypoints.channels"), std::string::npos) << from_config;
  EXPECT_EQ(error_of([&] { cspn::CSPNNet(cfg.model.keypoints, 8); }), from_config);

  Config det;
  det.set("model.detector.box_batch=0");
  const std::string detector = error_of([&] { det.validate(); });
  EXPECT_NE(detector.find("model.detector.box_batch"), std::string::npos) << detector;
  EXPECT_EQ(error_of([&] { cspn::FasterRCNN(det.model.detector, 4); }), detector);
}

TEST(Config, JsonRoundTripKeepsEveryValue) {
  Config cfg;
  cfg.set("model.keypoints.stages=3");
  cfg.set("data.holdout=0.3");
  cfg.set("train.steps=[3, 7]");
  cfg.set("model.detector.anchor_sizes=[16, 48]");
  const Config back = Config::from_json(cfg.to_json());
  EXPECT_EQ(back.to_json(), cfg.to_json());
  EXPECT_EQ(back.model.keypoints.stages, 3);
  EXPECT_EQ(back.train.steps, (std::vector<int>{3, 7}));
  EXPECT_EQ(Config::from_json(nlohmann::json::parse(cfg.to_json().dump())).to_yaml(), cfg.to_yaml());
}

TEST(Config, ResolveTakesTheBaseThenTheFileThenTheSets) {
  const std::string path = ::testing::TempDir() + "/resolve.yaml";
  {
    std::ofstream out(path);
    out << "model:\n  keypoints:\n    stages: 2\ntrain:\n  lr: 0.01\n";
  }
  Config base;
  base.test.flip = false;
  base.train.lr = 0.3f;
  const Config cfg = Config::resolve(path, {"train.lr=0.02"}, base);
  EXPECT_FALSE(cfg.test.flip);  // from the base, untouched by the file
  EXPECT_EQ(cfg.model.keypoints.stages, 2);  // from the file
  EXPECT_FLOAT_EQ(cfg.train.lr, 0.02f);  // the set wins over the file and the base
  EXPECT_TRUE(Config::resolve("", {}).test.flip);  // the defaults
  // Each layer's errors name where they come from, and the result is validated.
  EXPECT_NE(error_of([&] { Config::resolve(path, {"train.no_such_key=1"}); }).find("train.no_such_key"), std::string::npos);
  EXPECT_NE(error_of([&] { Config::resolve("", {"model.keypoints.stages=9"}); }).find("model.keypoints.stages"),
            std::string::npos);
  EXPECT_NE(error_of([&] { Config::resolve(path + ".missing", {}); }).find("resolve.yaml.missing"), std::string::npos);
}
