// The inference path's optimisations against the plain network, and `cspn bench --parts pipeline`'s
// JSON and parity file.
#include <cmath>
#include <fstream>

#include <opencv2/imgcodecs.hpp>

#include "common.hpp"
#include "cspn/bench.hpp"
#include "cspn/cspn.hpp"
#include "cspn/engine/landmarks_model.hpp"
#include "cspn/engine/evaluate.hpp"
#include "cspn/engine/report.hpp"
#include "cspn/io/weights.hpp"

namespace fs = std::filesystem;
using namespace cspn;

namespace {

double max_relative_difference(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>() / std::max(1e-12, b.abs().max().item<double>());
}

}  // namespace

// Channels-last weights and inputs and inference mode (LandmarkPredictor::from_model_file) give the
// heatmaps of the network as built and loaded, run in the default layout under NoGradGuard.
TEST(InferencePath, ChannelsLastAndInferenceModeMatchThePlainNetwork) {
  CSPN_REQUIRE_TINY_MODEL();
  const ModelFile file = load_model_file(test::tiny_model().string());
  LandmarkPredictor predictor = LandmarkPredictor::from_model_file(file, torch::kCPU);
  CSPNNet plain(file.config.model.keypoints, file.schema.num_landmarks());
  load_state_dict(*plain, file.tensors, "keypoints.");
  plain->eval();
  torch::manual_seed(3);
  const auto& size = file.config.model.keypoints.input_size;
  const auto x = torch::randn({3, 3, size[0], size[1]});
  torch::NoGradGuard no_grad;
  const auto expected = plain->forward(x).stages;
  const auto got = predictor.run_network(x);
  ASSERT_EQ(got.size(), expected.size());
  for (size_t s = 0; s < got.size(); ++s) {
    EXPECT_TRUE(predictor.network_input(x).is_contiguous(torch::MemoryFormat::ChannelsLast));
    EXPECT_LT(max_relative_difference(got[s], expected[s]), 1e-4) << "stage " << s + 1;
  }
}

// bfloat16 moves the heatmaps a little and the landmarks hardly at all; float16 needs a GPU.
TEST(InferencePath, Bfloat16KeepsTheLandmarks) {
  CSPN_REQUIRE_TINY_MODEL();
  ModelFile file = load_model_file(test::tiny_model().string());
  Pipeline f32(file, torch::kCPU);
  file.config.test.precision = "bfloat16";
  Pipeline bf16(file, torch::kCPU);
  file.config.test.precision = "float16";
  EXPECT_THROW(Pipeline(file, torch::kCPU), std::invalid_argument);

  std::vector<cv::Mat> images;
  for (int i = 1; i <= 6; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "img/%06d.jpg", i);
    images.push_back(read_image((test::tiny_scenes() / name).string()));
  }
  const std::vector<PredictOptions> one_garment{PredictOptions{0.0f, 1, std::nullopt}};
  const auto a = f32.predict(images, one_garment), b = bf16.predict(images, one_garment);
  double moved = 0, count = 0;
  for (size_t i = 0; i < images.size(); ++i) {
    ASSERT_EQ(a[i].size(), 1u);
    ASSERT_EQ(b[i].size(), 1u);
    EXPECT_FLOAT_EQ(a[i][0].box.x1, b[i][0].box.x1) << "the detector stays in float32";
    EXPECT_FLOAT_EQ(a[i][0].box.y2, b[i][0].box.y2);
    for (size_t k = 0; k < a[i][0].landmarks.size(); ++k) {
      const auto &p = a[i][0].landmarks[k], &q = b[i][0].landmarks[k];
      moved += std::hypot(p.x - q.x, p.y - q.y);
      ++count;
    }
  }
  const float box_width = a[0][0].box.width();
  EXPECT_LT(moved / count, 0.02 * box_width) << "mean landmark shift in bfloat16, px";
}

TEST(BenchCommand, AlternatingTimingRunsTheFunctionsInTurn) {
  std::string order;
  const auto medians = median_ms_alternating(
      {[&] { order += 'a'; }, [&] { order += 'b'; }, [&] { order += 'c'; }}, 3, torch::Device(torch::kCPU));
  EXPECT_EQ(order, "aabbcc" "abcabcabc");  // two warm-up runs each, then one of each per round
  ASSERT_EQ(medians.size(), 3u);
  for (double ms : medians) EXPECT_GE(ms, 0.0);
}

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

// The evaluation report: metrics as evaluated, the loss curves of a run's log (one validation of
// which had no visible landmark: a null NE), and example images.
TEST(Report, WritesMetricsCurvesAndExamplesFromALogWithNullValidation) {
  CSPN_REQUIRE_TINY_MODEL();
  const auto dir = test::scratch_dir("report");
  const ModelFile model = load_model_file(test::tiny_model().string());
  const Dataset test_set = load_split(test::tiny_scenes().string(), "coco", "test", model.config, false);
  EvalOptions eo;
  eo.progress = false;
  const EvalResult result = evaluate_model(model, test_set, eo);
  {
    std::ofstream log(dir / "log.jsonl");
    for (int i = 1; i <= 3; ++i) {
      log << nlohmann::json{{"type", "train"}, {"phase", "keypoints"}, {"iter", i}, {"loss", 1.0 / i}}.dump() << "\n";
      log << nlohmann::json{{"type", "train"}, {"phase", "detector"}, {"iter", i}, {"loss", 2.0 / i}}.dump() << "\n";
    }
    log << nlohmann::json{{"type", "epoch"}, {"phase", "keypoints"}, {"epoch", 1}, {"val", {{"ne_image", {{"avg", nullptr}}}}}}.dump()
        << "\n";
    log << nlohmann::json{{"type", "epoch"}, {"phase", "keypoints"}, {"epoch", 2}, {"val", {{"ne_image", {{"avg", 0.05}}}}}}.dump()
        << "\n";
    log << nlohmann::json{{"type", "epoch"}, {"phase", "detector"}, {"epoch", 1}, {"val", {{"det_ap50", nullptr}}}}.dump() << "\n";
  }
  write_report((dir / "out").string(), model, test_set, result, (dir / "log.jsonl").string(), 2, "cpu");
  EXPECT_EQ(nlohmann::json::parse(test::file_bytes(dir / "out" / "metrics.json")), result.metrics);
  EXPECT_NE(test::file_bytes(dir / "out" / "metrics.md").find(result.table), std::string::npos);
  for (const char* png : {"loss.png", "loss-detector.png"}) {
    const cv::Mat curve = cv::imread((dir / "out" / png).string());
    EXPECT_EQ(curve.cols, 800) << png;
  }
  int examples = 0;
  for (const auto& e : fs::directory_iterator(dir / "out" / "examples"))
    examples += !cv::imread(e.path().string()).empty();
  EXPECT_EQ(examples, 2);
}
