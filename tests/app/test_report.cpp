// Tests src/commands/report.cpp: the evaluation report's metrics, loss curves and example images.
#include <filesystem>
#include <fstream>

#include <opencv2/imgcodecs.hpp>

#include "cspn/commands/report.hpp"
#include "cspn/cspn.hpp"
#include "cspn/data/readers.hpp"
#include "cspn/engine/evaluate.hpp"
#include "common.hpp"

namespace fs = std::filesystem;
using namespace cspn;

// The evaluation report: metrics as evaluated, the loss curves of a run's log (one validation of
// which had no visible landmark: a null NE), and example images.
TEST(Report, WritesMetricsCurvesAndExamplesFromALogWithNullValidation) {
  CSPN_REQUIRE_TINY_MODEL();
  const auto dir = test::scratch_dir("report");
  const ModelFile model = load_model_file(test::tiny_model().string());
  const Dataset test_set = read_split(test::tiny_scenes().string(), "coco", "test", model.config, false);
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
