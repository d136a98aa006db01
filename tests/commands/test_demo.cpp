// Tests src/commands/demo.cpp: what `cspn demo` writes, and what a second run reuses.
#include <filesystem>

#include <nlohmann/json.hpp>

#include "cspn/commands/demo.hpp"
#include "cspn/core/io/model_file.hpp"
#include "common.hpp"

using namespace cspn;
namespace fs = std::filesystem;

// The main job end to end at a tiny budget: scenes, both halves trained, the report page, and a
// second call that reuses the scenes and writes run-2 and report-2 beside the first.
TEST(Demo, WritesTheReportPageAndAModelThatLoads) {
  const fs::path dir = test::scratch_dir("demo");
  DemoOptions opt;
  opt.out_dir = dir.string();
  opt.minutes = 0.1;
  opt.count = 30;
  opt.photos = "";
  const DemoResult first = run_demo(opt);
  EXPECT_EQ(fs::path(first.page), dir / "report-1" / "index.html");
  const std::string page = test::file_bytes(first.page);
  for (const char* part : {"<h2>Predictions</h2>", "<h2>Evaluation", "<h2>Training</h2>", "src=\"pipeline/", "cspn serve --model"})
    EXPECT_NE(page.find(part), std::string::npos) << part;
  const ModelFile model = load_model_file(first.model);
  EXPECT_TRUE(model.config.model.detector.enabled);
  EXPECT_TRUE(model.config.model.keypoints.enabled);
  const auto predictions = nlohmann::json::parse(test::file_bytes(dir / "report-1" / "predictions.json"));
  EXPECT_EQ(predictions["images"].size() + predictions["errors"].size(), 3u) << "the held-out scenes (10% of 30)";
  EXPECT_EQ(predictions["errors"].size(), 0u);
  EXPECT_TRUE(fs::exists(dir / "report-1" / "metrics.json"));

  const auto scenes_written = fs::last_write_time(dir / "scenes" / "annotations.json");
  const DemoResult second = run_demo(opt);
  EXPECT_EQ(fs::path(second.page), dir / "report-2" / "index.html");
  EXPECT_EQ(fs::last_write_time(dir / "scenes" / "annotations.json"), scenes_written);
  EXPECT_TRUE(fs::exists(second.model));
}
