// Tests src/commands/bench_pipeline.cpp: `cspn bench --parts pipeline`'s JSON, in float32 and in
// bfloat16, and its parity file against the plain network.
#include <filesystem>
#include <map>
#include <string>

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>

#include "cspn/core/io/model_file.hpp"
#include "cspn/core/io/weights.hpp"
#include "cspn/core/model/cspn_net.hpp"
#include "cspn/cspn.hpp"
#include "common.hpp"
#include "tensors.hpp"

namespace fs = std::filesystem;
using namespace cspn;
using cspn::test::max_relative_difference;

TEST(BenchCommand, PipelineJsonAndParityFile) {
  CSPN_REQUIRE_TINY_MODEL();
  const fs::path dir = test::scratch_dir("bench_pipeline");
  const fs::path json = dir / "bench.json", io = dir / "io.safetensors", photos = dir / "photos";
  fs::create_directories(photos);
  for (const char* name : {"000001.jpg", "000002.jpg", "000003.jpg"})
    fs::copy_file(test::tiny_scenes() / "img" / name, photos / name, fs::copy_options::overwrite_existing);
  const std::string binary = std::string(test::kBinaryDir) + "/cspn";
  ASSERT_EQ(test::run_process({binary, "bench", "--parts", "pipeline", "--model", test::tiny_model().string(), "--images",
                               photos.string(), "--garments", "2", "--iters", "1",
                               "--image-sizes", "96", "128", "--image-batches", "1", "3", "--json", json.string(),
                               "--io", io.string()},
                              (dir / "out.txt").string(), (dir / "err.txt").string()),
            0)
      << test::file_bytes(dir / "err.txt");
  const auto result = nlohmann::json::parse(test::file_bytes(json));
  ASSERT_EQ(result["pipeline"].size(), 2u);
  const cv::Mat first = read_image((test::tiny_scenes() / "img/000001.jpg").string());
  for (int row = 0; row < 2; ++row) {
    const auto& r = result["pipeline"][row];
    const int shorter = row == 0 ? 96 : 128;  // square scenes: both sides take the shorter side's size
    EXPECT_EQ(r["detector_input"], nlohmann::json({shorter * first.cols / first.rows, shorter})) << r.dump();
    EXPECT_GT(r["pipeline_ms"].get<double>(), 0.0);
    EXPECT_GE(r["pipeline_p90_ms"].get<double>(), r["pipeline_ms"].get<double>());
    EXPECT_DOUBLE_EQ(r["garments"].get<double>(), 2.0);
    EXPECT_EQ(r["images"], 3);
    ASSERT_EQ(r["throughput"].size(), 2u);
    EXPECT_EQ(r["throughput"][1]["batch"], 3);
  }
  const auto& net = result["landmark_network"];
  EXPECT_EQ(net["precision"], "float32");
  EXPECT_GT(net["inference"][0]["network_gflops"].get<double>(), net["inference"][0]["backbone_gflops"].get<double>());
  EXPECT_GT(net["train_step"]["ms"].get<double>(), 0.0);
  EXPECT_FALSE(net["inference"][0].contains("speedup_vs_float32"));

  // In bfloat16 the float32 network is timed in turn with it, and each row says by how much; the
  // training step can be left out.
  const fs::path bf16_json = dir / "bench_bf16.json";
  ASSERT_EQ(test::run_process({binary, "bench", "--parts", "pipeline", "--model", test::tiny_model().string(), "--images",
                               photos.string(), "--iters", "1", "--image-sizes", "96", "--image-batches", "1", "--set",
                               "test.precision=bfloat16", "--no-train-step", "--json", bf16_json.string()},
                              (dir / "out.txt").string(), (dir / "err.txt").string()),
            0)
      << test::file_bytes(dir / "err.txt");
  const auto bf16 = nlohmann::json::parse(test::file_bytes(bf16_json))["landmark_network"];
  EXPECT_EQ(bf16["precision"], "bfloat16");
  EXPECT_FALSE(bf16.contains("train_step")) << "--no-train-step";
  for (const auto& row : bf16["inference"]) {
    const double ms = row["ms_per_crop"].get<double>(), float32_ms = row["float32_ms_per_crop"].get<double>();
    EXPECT_GT(float32_ms, 0.0);
    EXPECT_NEAR(row["speedup_vs_float32"].get<double>(), float32_ms / ms, 1e-9 * float32_ms / ms) << row.dump();
  }

  const StateDict tensors = read_safetensors(io.string());
  std::map<std::string, torch::Tensor> by_name(tensors.begin(), tensors.end());
  ASSERT_TRUE(by_name.count("input") && by_name.count("stage1") && by_name.count("stage2"));
  EXPECT_TRUE(by_name.count("keypoints.stage1.head.weight"));
  const ModelFile file = load_model_file(test::tiny_model().string());
  CSPNNet plain(file.config.model.keypoints, file.schema.num_landmarks());
  load_state_dict(*plain, file.tensors, "keypoints.");
  plain->eval();
  torch::NoGradGuard no_grad;
  EXPECT_LT(max_relative_difference(by_name["stage2"], plain->forward(by_name["input"]).stages[1]), 1e-4);
}
