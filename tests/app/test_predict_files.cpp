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

// A photo named twice (the same path, or another path to it) is predicted once, in --json and in
// --jsonl, and the summary says how many repeats were skipped.
TEST(PredictFiles, RepeatedPathsArePredictedOnce) {
  CSPN_REQUIRE_TINY_MODEL();
  const auto dir = test::scratch_dir("predict_duplicates");
  const std::string a = (test::tiny_scenes() / "img" / "000001.jpg").string();
  const std::string b = (test::tiny_scenes() / "img" / "000002.jpg").string();
  const std::string a_again = (test::tiny_scenes() / "img" / ".." / "img" / "000001.jpg").string();
  std::ofstream(dir / "list.txt") << a << "\n" << b << "\n" << a << "\n" << a_again << "\n";
  std::vector<std::string> files{a, b, a, a_again};
  EXPECT_EQ(drop_duplicates(files), 2u);
  EXPECT_EQ(files, (std::vector<std::string>{a, b}));

  const std::string cspn = std::string(test::kBinaryDir) + "/cspn";
  const std::vector<std::string> common{cspn, "predict", "--model", test::tiny_model().string(), "--quiet",
                                        "--list", (dir / "list.txt").string()};
  auto json_args = common;
  json_args.insert(json_args.end(), {"--json", (dir / "out.json").string()});
  ASSERT_EQ(test::run_process(json_args, "", (dir / "json.log").string()), 0);
  const auto out = nlohmann::json::parse(test::file_bytes(dir / "out.json"));
  EXPECT_EQ(out["images"].size(), 2u);
  EXPECT_EQ(out["duplicates_skipped"], 2);
  EXPECT_NE(test::file_bytes(dir / "json.log").find("2 repeated paths skipped"), std::string::npos);

  auto jsonl_args = common;
  jsonl_args.insert(jsonl_args.end(), {"--jsonl", (dir / "out.jsonl").string()});
  ASSERT_EQ(test::run_process(jsonl_args, "", (dir / "jsonl.log").string()), 0);
  EXPECT_EQ(jsonl_lines(dir / "out.jsonl").size(), 2u);
  EXPECT_NE(test::file_bytes(dir / "jsonl.log").find("2 repeated paths skipped"), std::string::npos);
}

// A shard whose share is empty is normal in a large job: it says so, writes nothing and exits 0.
TEST(PredictFiles, AnEmptyShardExitsZeroAndWritesNothing) {
  CSPN_REQUIRE_TINY_MODEL();
  const auto dir = test::scratch_dir("predict_empty_shard");
  const std::string photo = (test::tiny_scenes() / "img" / "000001.jpg").string();
  std::vector<std::string> one{photo};
  int empty = -1;
  for (int i = 0; i < 3 && empty < 0; ++i)
    if (shard_files(one, i, 3).empty()) empty = i;
  ASSERT_GE(empty, 0);
  const std::string cspn = std::string(test::kBinaryDir) + "/cspn";
  const std::string shard = std::to_string(empty) + "/3";
  ASSERT_EQ(test::run_process({cspn, "predict", "--model", test::tiny_model().string(), "--quiet", photo, "--jsonl",
                               (dir / "out.jsonl").string(), "--shard", shard},
                              "", (dir / "log.txt").string()),
            0);
  EXPECT_FALSE(fs::exists(dir / "out.jsonl"));
  EXPECT_NE(test::file_bytes(dir / "log.txt").find("shard " + shard + " of 1 images is empty"), std::string::npos)
      << test::file_bytes(dir / "log.txt");
}
