// Tests src/commands/predict_files.cpp: `cspn predict --jsonl`, sharded across jobs with unreadable
// images recorded as error lines, and resumable after SIGKILL.
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "cspn/commands/predict_files.hpp"
#include "cspn/cspn.hpp"
#include "cspn/data/synth.hpp"
#include "common.hpp"

namespace fs = std::filesystem;
using namespace cspn;

namespace {

std::vector<nlohmann::json> jsonl_lines(const fs::path& p) {
  std::vector<nlohmann::json> lines;
  std::ifstream in(p);
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

size_t count_newlines(const fs::path& p) {
  const std::string text = test::file_bytes(p);
  return static_cast<size_t>(std::count(text.begin(), text.end(), '\n'));
}

}  // namespace

TEST(PredictJsonl, SharesCoverTheCollectionOnceAndErrorsAreLines) {
  CSPN_REQUIRE_TINY_MODEL();
  const auto dir = test::scratch_dir("predict_jsonl_shards");
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(test::tiny_scenes() / "img")) files.push_back(e.path().string());
  std::ofstream(dir / "notes.jpg") << "not an image\n";
  files.push_back((dir / "notes.jpg").string());
  {
    std::ofstream list(dir / "list.txt");
    list << "# every scene and one text file\n\n";
    for (const auto& f : files) list << f << "\n";
  }
  const std::string cspn = std::string(test::kBinaryDir) + "/cspn";
  std::map<std::string, int> seen;
  for (int shard = 0; shard < 3; ++shard) {
    const auto out = dir / ("shard-" + std::to_string(shard) + ".jsonl");
    ASSERT_EQ(test::run_process({cspn, "predict", "--model", test::tiny_model().string(), "--quiet", "--list",
                                 (dir / "list.txt").string(), "--jsonl", out.string(), "--shard",
                                 std::to_string(shard) + "/3"}),
              0);
    const auto lines = jsonl_lines(out);
    EXPECT_GT(lines.size(), 0u) << "shard " << shard << " of " << files.size() << " files";
    for (const auto& l : lines) {
      ++seen[l["file"].get<std::string>()];
      if (l["file"].get<std::string>().find("notes.jpg") != std::string::npos) {
        EXPECT_TRUE(l.contains("error"));
        EXPECT_NE(l["error"].get<std::string>().find("not a JPEG"), std::string::npos);
      } else {
        EXPECT_TRUE(l["garments"].is_array()) << l.dump();
        EXPECT_GT(l["width"].get<int>(), 0);
      }
    }
  }
  EXPECT_EQ(seen.size(), files.size());
  for (const auto& f : files) EXPECT_EQ(seen[f], 1) << f;
  EXPECT_EQ(shard_files(files, 0, 1), files);
  EXPECT_THROW(shard_files(files, 3, 3), std::invalid_argument);
}

TEST(PredictJsonl, KilledRunResumesWithExactlyOneLinePerImage) {
  CSPN_REQUIRE_TINY_MODEL();
  const auto dir = test::scratch_dir("predict_jsonl_resume");
  SynthOptions so;
  so.count = 240;
  so.seed = 4;
  so.width = so.height = 128;
  so.scenes = true;
  synthesize((dir / "photos").string(), so);
  const auto out = dir / "predictions.jsonl";
  const std::vector<std::string> command = {std::string(test::kBinaryDir) + "/cspn", "predict", "--model",
                                            test::tiny_model().string(), "--quiet", "--jsonl", out.string(),
                                            (dir / "photos" / "img").string()};
  const pid_t pid = test::spawn_process(command);
  ASSERT_GT(pid, 0);
  size_t at_kill = 0;
  for (int i = 0; i < 6000 && at_kill == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (fs::exists(out)) at_kill = count_newlines(out);
  }
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  at_kill = count_newlines(out);
  EXPECT_GT(at_kill, 0u);
  EXPECT_LT(at_kill, 240u) << "killed before the end";
  // A write cut short leaves a partial line: the rerun drops it.
  std::ofstream(out, std::ios::app) << R"({"file": "half a li)";
  ASSERT_EQ(test::run_process(command), 0);
  const auto lines = jsonl_lines(out);
  std::map<std::string, int> seen;
  for (const auto& l : lines) ++seen[l["file"].get<std::string>()];
  EXPECT_EQ(lines.size(), 240u);
  EXPECT_EQ(seen.size(), 240u);
  // A third run has nothing left to do and adds nothing.
  ASSERT_EQ(test::run_process(command), 0);
  EXPECT_EQ(jsonl_lines(out).size(), 240u);
  // A line that is not ours stops the resume with its line number instead of guessing.
  std::ofstream(out, std::ios::app) << "garbage\n";
  EXPECT_EQ(test::run_process(command), 3) << "bad input";
}
