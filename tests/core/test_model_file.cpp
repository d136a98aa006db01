// Tests src/core/io/model_file.cpp: model files round trip their config, schema, extra values and
// tensors; older formats load as they were written; bad files are refused.
#include <map>
#include <string>
#include <utility>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "cspn/core/io/model_file.hpp"
#include "cspn/core/io/weights.hpp"
#include "common.hpp"

using cspn::test::error_of;

TEST(ModelFile, RoundTripsConfigSchemaExtraAndTensors) {
  const auto dir = cspn::test::scratch_dir("model_file");
  cspn::ModelFile model;
  model.config.model.keypoints.stages = 2;
  model.config.train.lr = 0.0125f;
  model.schema = cspn::LandmarkSchema::deepfashion();
  model.extra = {{"epochs", 3}, {"ne", 0.061}};
  model.tensors = {{"keypoints.w", torch::randn({3, 3})}, {"detector.b", torch::arange(5)}};
  const auto path = (dir / "m.cspn").string();
  cspn::save_model_file(path, model);

  const auto back = cspn::load_model_file(path);
  EXPECT_EQ(back.config.to_json(), model.config.to_json());
  EXPECT_EQ(back.config.model.keypoints.stages, 2);
  EXPECT_EQ(back.schema.to_json(), model.schema.to_json());
  EXPECT_EQ(back.extra, model.extra);
  ASSERT_EQ(back.tensors.size(), 2u);
  EXPECT_EQ(back.tensors[1].first, "detector.b");
  EXPECT_TRUE(torch::equal(back.tensors[0].second, model.tensors[0].second));
}

TEST(ModelFile, FormatTwoKeepsItsStrideFourCascade) {
  // Format 2 files were written before model.keypoints.refine_stride: their configs lack the key and
  // their later stages answer at stride 4, whatever today's default.
  const auto dir = cspn::test::scratch_dir("model_file_format2");
  cspn::ModelFile model;
  model.schema = cspn::LandmarkSchema::deepfashion();
  model.config.model.keypoints.refine_stride = 2;
  const auto path = (dir / "m.cspn").string();
  cspn::save_model_file(path, model);
  std::map<std::string, std::string> meta;
  const auto tensors = cspn::read_safetensors(path, &meta);
  auto config = nlohmann::json::parse(meta.at("cspn.config"));
  ASSERT_EQ(config["model"]["keypoints"]["refine_stride"], 2);
  config["model"]["keypoints"].erase("refine_stride");
  meta["cspn.config"] = config.dump();
  const auto old = (dir / "old.cspn").string();
  for (const auto& [format, stride] : {std::pair<const char*, int>{"2", 4}, {"3", cspn::KeypointModelConfig{}.refine_stride}}) {
    meta["cspn.format"] = format;
    cspn::write_safetensors(old, tensors, meta);
    EXPECT_EQ(cspn::load_model_file(old).config.model.keypoints.refine_stride, stride) << "format " << format;
  }
}

TEST(ModelFile, RejectsPlainWeightsNewerFormatsAndBadMetadata) {
  const auto dir = cspn::test::scratch_dir("model_file_bad");
  const auto plain = (dir / "plain.safetensors").string();
  cspn::write_safetensors(plain, {{"w", torch::zeros({1})}});
  auto msg = error_of([&] { cspn::load_model_file(plain); });
  EXPECT_NE(msg.find("not a CSPN model file"), std::string::npos) << msg;
  EXPECT_NE(msg.find(plain), std::string::npos) << msg;

  cspn::ModelFile model;
  model.schema = cspn::LandmarkSchema::deepfashion();
  const auto good = (dir / "good.cspn").string();
  cspn::save_model_file(good, model);
  std::map<std::string, std::string> meta;
  const auto tensors = cspn::read_safetensors(good, &meta);

  auto with = [&](const std::string& key, const std::string& value) {
    auto m = meta;
    m[key] = value;
    const auto p = (dir / "edited.cspn").string();
    cspn::write_safetensors(p, tensors, m);
    return error_of([&] { cspn::load_model_file(p); });
  };
  EXPECT_NE(with("cspn.format", "4").find("format 4"), std::string::npos);
  // Format 1 predates the cascade redesign: its landmark network is refused, saying why.
  msg = with("cspn.format", "1");
  EXPECT_NE(msg.find("old cascade layout"), std::string::npos) << msg;
  EXPECT_NE(msg.find("retrain"), std::string::npos) << msg;
  EXPECT_NE(with("cspn.format", "one").find("not a version number"), std::string::npos);
  EXPECT_NE(with("cspn.config", "{broken").find("cspn.config"), std::string::npos);
  // A stored config past the bounds is refused before any network is built (issue 14, case 3).
  auto config = nlohmann::json::parse(meta.at("cspn.config"));
  config["model"]["keypoints"]["channels"] = 2000000000;
  msg = with("cspn.config", config.dump());
  EXPECT_NE(msg.find("model.keypoints.channels"), std::string::npos) << msg;
  config["model"]["keypoints"]["channels"] = 64;
  config["model"]["keypoints"]["input_size"] = {100000, 100000};
  msg = with("cspn.config", config.dump());
  EXPECT_NE(msg.find("model.keypoints.input_size"), std::string::npos) << msg;
  EXPECT_NE(with("cspn.schema", "{\"landmarks\": 3}").find("cspn.schema"), std::string::npos);
}
