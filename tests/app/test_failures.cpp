// Tests the `cspn` command (apps/cspn/main.cpp) and the library under it on bad input, full disks and
// careless commands (issue 14): each case reproduced as a user would meet it, through the library or
// the real command, with the exit codes docs/failures.md documents.
#include <sys/mount.h>
#include <sys/stat.h>

#include <csignal>
#include <functional>
#include <fstream>
#include <thread>

#include <opencv2/imgcodecs.hpp>
#include <torch/cuda.h>

#include "cspn/core/io/atomic_file.hpp"
#include "cspn/cspn.hpp"
#include "cspn/data/readers.hpp"
#include "common.hpp"

namespace fs = std::filesystem;
using namespace cspn;

namespace {

const std::string& cspn_binary() {
  static const std::string path = std::string(test::kBinaryDir) + "/cspn";
  return path;
}

struct Outcome {
  int code;
  std::string err;  // standard error
};

Outcome run_cspn(const std::vector<std::string>& args, const fs::path& dir) {
  std::vector<std::string> argv{cspn_binary()};
  argv.insert(argv.end(), args.begin(), args.end());
  const auto err = dir / "stderr.txt";
  const int code = test::run_process(argv, (dir / "stdout.txt").string(), err.string());
  return {code, test::file_bytes(err)};
}

// Files in `dir` whose names hold ".tmp" or ".probe": what a failed write must not leave behind.
std::vector<std::string> leftovers(const fs::path& dir) {
  std::vector<std::string> found;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.find(".tmp") != std::string::npos || name.find(".probe") != std::string::npos) found.push_back(name);
  }
  return found;
}

// A 256 KiB tmpfs mounted for one test, or a skip where this process may not mount.
class SmallDisk {
 public:
  explicit SmallDisk(const fs::path& at) : at_(at) {
    fs::create_directories(at_);
    mounted_ = ::mount("tmpfs", at_.c_str(), "tmpfs", 0, "size=256k") == 0;
  }
  ~SmallDisk() {
    if (mounted_) ::umount(at_.c_str());
  }
  bool mounted() const { return mounted_; }
  // Fills the disk but for about `room` bytes.
  void fill(size_t room) const {
    std::ofstream filler(at_ / "filler", std::ios::binary);
    const std::string block(4096, 'x');
    while (filler.write(block.data(), block.size())) {
    }
    filler.close();
    fs::resize_file(at_ / "filler", fs::file_size(at_ / "filler") - room);
  }

 private:
  fs::path at_;
  bool mounted_ = false;
};

#define REQUIRE_SMALL_DISK(disk) \
  if (!(disk).mounted()) GTEST_SKIP() << "cannot mount a tmpfs here (needs root): disk-full cases not run"

}  // namespace

// Cases 2 and 6: a full disk fails the write with a reason, leaves no temporary file and keeps the
// old content; LibTorch's checkpoint writer no longer aborts the process.
TEST(Failures, FullDiskFailsTheWriteAndKeepsTheOldFile) {
  const auto dir = test::scratch_dir("failures_full_disk");
  SmallDisk disk(dir / "disk");
  REQUIRE_SMALL_DISK(disk);
  const std::string target = (dir / "disk" / "result.json").string();
  write_file_atomically(target, std::string("old\n"));
  try {
    write_file_atomically(target, std::string(1 << 20, 'x'));
    ADD_FAILURE() << "1 MiB written to a 256 KiB disk";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("result.json"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("No space left"), std::string::npos) << e.what();
  }
  EXPECT_EQ(test::file_bytes(target), "old\n");
  EXPECT_TRUE(leftovers(dir / "disk").empty());

  // A writer that throws midway (as LibTorch's does) leaves nothing either.
  const std::string partial = (dir / "disk" / "partial.bin").string();
  EXPECT_THROW(write_file_atomically(partial,
                                     [](std::ostream& out) {
                                       out << std::string(1000, 'x');
                                       throw std::runtime_error("serializer failed");
                                     }),
               IoError);
  EXPECT_FALSE(fs::exists(partial));
  EXPECT_TRUE(leftovers(dir / "disk").empty());
}

TEST(Failures, PredictOnAFullDiskExitsWithIoErrorAndNoFile) {
  CSPN_REQUIRE_TINY_MODEL();
  const auto dir = test::scratch_dir("failures_predict_full");
  SmallDisk disk(dir / "disk");
  REQUIRE_SMALL_DISK(disk);
  disk.fill(16 * 1024);
  const auto out = run_cspn({"predict", "--model", test::tiny_model().string(), "--quiet", "--json",
                             (dir / "disk" / "p.json").string(), (test::tiny_scenes() / "img").string()},
                            dir);
  EXPECT_EQ(out.code, 4) << out.err;
  EXPECT_NE(out.err.find("p.json"), std::string::npos) << out.err;
  EXPECT_FALSE(fs::exists(dir / "disk" / "p.json")) << "no empty or partial result";
  EXPECT_TRUE(leftovers(dir / "disk").empty());

  // Training into the full disk: config.yaml fits, the first checkpoint (megabytes) does not.
  const std::string config = (fs::path(test::kSourceDir) / "tests/fixtures/tiny_pipeline.yaml").string();
  const auto train = run_cspn({"train", "--config", config, "--data", test::tiny_scenes().string(), "--quiet", "--out",
                               (dir / "disk" / "run").string(), "--set", "model.detector.enabled=false"},
                              dir);
  EXPECT_EQ(train.code, 4) << train.err;
  EXPECT_NE(train.err.find("checkpoint-keypoints.pt"), std::string::npos) << train.err;
  EXPECT_TRUE(leftovers(dir / "disk").empty());

  // JSON Lines append as they go: a full disk stops them with the same I/O error.
  disk.fill(64);
  const auto lines = run_cspn({"predict", "--model", test::tiny_model().string(), "--quiet", "--jsonl",
                               (dir / "disk" / "p.jsonl").string(), (test::tiny_scenes() / "img").string()},
                              dir);
  EXPECT_EQ(lines.code, 4) << lines.err;
  EXPECT_NE(lines.err.find("p.jsonl"), std::string::npos) << lines.err;
}

// Case 4: errors from LibTorch are one line, not a C++ backtrace.
TEST(Failures, DeviceErrorsAreOneLine) {
  CSPN_REQUIRE_TINY_MODEL();
  const auto dir = test::scratch_dir("failures_device");
  // Checked before anything runs, against this build and machine: a usage error of one short line
  // naming the flag (LibTorch's own message for a CUDA index that is not there fills pages).
  const bool cuda = torch::cuda::is_available();
  for (const char* device : {"gpu", "cuda:x", "cuda:99", "cuda"}) {
    if (cuda && std::string(device) == "cuda") continue;
    const auto out = run_cspn({"predict", "--model", test::tiny_model().string(), "--device", device,
                               (test::tiny_scenes() / "img" / "000001.jpg").string()},
                              dir);
    EXPECT_EQ(out.code, 2) << device << ": " << out.err;
    EXPECT_EQ(std::count(out.err.begin(), out.err.end(), '\n'), 1) << device << ":\n" << out.err;
    EXPECT_EQ(out.err.rfind(std::string("error: --device ") + device + ": ", 0), 0u) << out.err;
    EXPECT_LT(out.err.size(), 200u) << out.err;
  }
}

// Case 5: rendering into the folder of the photos must not overwrite them.
TEST(Failures, PredictNeverOverwritesItsInputs) {
  CSPN_REQUIRE_TINY_MODEL();
  const auto dir = test::scratch_dir("failures_overwrite");
  fs::create_directories(dir / "photos");
  fs::copy_file(test::tiny_scenes() / "img" / "000001.jpg", dir / "photos" / "000001.jpg");
  const std::string before = test::file_bytes(dir / "photos" / "000001.jpg");
  const auto out = run_cspn({"predict", "--model", test::tiny_model().string(), "--quiet", "--out",
                             (dir / "photos").string(), (dir / "photos").string()},
                            dir);
  EXPECT_EQ(out.code, 2) << out.err;
  EXPECT_NE(out.err.find("overwrite"), std::string::npos) << out.err;
  EXPECT_EQ(test::file_bytes(dir / "photos" / "000001.jpg"), before);

  // Two photos of the same name, one of them in the output folder: the other's rendering would
  // take its name. Refused before any work; both photos unchanged.
  fs::create_directories(dir / "elsewhere");
  fs::copy_file(test::tiny_scenes() / "img" / "000002.jpg", dir / "elsewhere" / "000001.jpg");
  const std::string other = test::file_bytes(dir / "elsewhere" / "000001.jpg");
  const auto clash = run_cspn({"predict", "--model", test::tiny_model().string(), "--quiet", "--out",
                               (dir / "photos").string(), (dir / "elsewhere" / "000001.jpg").string(),
                               (dir / "photos" / "000001.jpg").string()},
                              dir);
  EXPECT_EQ(clash.code, 2) << clash.err;
  EXPECT_EQ(test::file_bytes(dir / "photos" / "000001.jpg"), before);
  EXPECT_EQ(test::file_bytes(dir / "elsewhere" / "000001.jpg"), other);
  EXPECT_FALSE(fs::exists(dir / "photos" / "000001-2.jpg"));
}

// Cases 7 and 12: --resume needs a run to resume, with the config it started with.
TEST(Failures, ResumeNeedsTheRunAndItsConfig) {
  CSPN_REQUIRE_TINY_MODEL();
  const auto dir = test::scratch_dir("failures_resume");
  const std::string config = (fs::path(test::kSourceDir) / "tests/fixtures/tiny_pipeline.yaml").string();
  const std::vector<std::string> base{"train", "--config", config, "--data", test::tiny_scenes().string(), "--quiet",
                                      "--set", "model.detector.enabled=false"};
  auto args = base;
  args.insert(args.end(), {"--out", (dir / "missing").string(), "--resume"});
  auto out = run_cspn(args, dir);
  EXPECT_EQ(out.code, 2) << out.err;
  EXPECT_NE(out.err.find("no run to resume"), std::string::npos) << out.err;
  EXPECT_FALSE(fs::exists(dir / "missing" / "model.cspn")) << "nothing trained from scratch";

  // A run interrupted before its end: its folder has config.yaml and a checkpoint, no model.
  fs::create_directories(dir / "run");
  args = base;
  args.insert(args.end(), {"--out", (dir / "run").string()});
  ASSERT_EQ(run_cspn(args, dir).code, 0);
  fs::remove(dir / "run" / "model.cspn");
  const std::string stored = test::file_bytes(dir / "run" / "config.yaml");
  args = base;
  args.insert(args.end(), {"--out", (dir / "run").string(), "--resume", "--set", "train.lr=0.5"});
  out = run_cspn(args, dir);
  EXPECT_EQ(out.code, 2) << out.err;
  EXPECT_NE(out.err.find("config differs"), std::string::npos) << out.err;
  EXPECT_EQ(test::file_bytes(dir / "run" / "config.yaml"), stored) << "config.yaml kept";

  // An empty folder holds no run either.
  fs::create_directories(dir / "empty");
  args = base;
  args.insert(args.end(), {"--out", (dir / "empty").string(), "--resume"});
  out = run_cspn(args, dir);
  EXPECT_EQ(out.code, 2) << out.err;
  EXPECT_NE(out.err.find("no run to resume"), std::string::npos) << out.err;

  // A run stopped before its first checkpoint (config.yaml alone) starts over, and says so.
  for (const auto& e : fs::directory_iterator(dir / "run"))
    if (e.path().filename() != "config.yaml") fs::remove_all(e.path());
  args = base;
  args.insert(args.end(), {"--out", (dir / "run").string(), "--resume"});
  out = run_cspn(args, dir);
  EXPECT_EQ(out.code, 0) << out.err;
  EXPECT_NE(out.err.find("nothing to resume"), std::string::npos) << out.err;
  EXPECT_TRUE(fs::exists(dir / "run" / "model.cspn"));
}

// Case 3: values each within their bounds can still ask together for more memory than the machine
// has (here about 12 TB of feature maps). The estimate refuses them before anything is allocated,
// naming the values, instead of the kernel killing the process; a training run writes nothing.
TEST(Failures, ConfigsTooBigForTheMachineAreRefusedBeforeAllocating) {
  CSPN_REQUIRE_TINY_MODEL();
  const auto dir = test::scratch_dir("failures_memory");
  const std::string config = (fs::path(test::kSourceDir) / "tests/fixtures/tiny_pipeline.yaml").string();
  const std::vector<std::string> huge{"--set", "model.keypoints.channels=2048", "--set", "model.keypoints.stages=4",
                                      "--set", "model.keypoints.input_size=[1024, 1024]"};
  auto args = std::vector<std::string>{"info", "--config", config, "--set", "test.batch_size=4096"};
  args.insert(args.end(), huge.begin(), huge.end());
  auto out = run_cspn(args, dir);
  EXPECT_EQ(out.code, 2) << out.err;
  EXPECT_EQ(std::count(out.err.begin(), out.err.end(), '\n'), 1) << out.err;
  for (const char* named : {"cspn info: the configuration needs at least", "model.keypoints.channels 2048",
                            "input_size 1024x1024", "test.batch_size 4096", "of memory available"})
    EXPECT_NE(out.err.find(named), std::string::npos) << named << " in: " << out.err;

  args = {"train", "--config", config, "--data", test::tiny_scenes().string(), "--quiet", "--out",
          (dir / "run").string(), "--set", "train.batch_size=4096"};
  args.insert(args.end(), huge.begin(), huge.end());
  out = run_cspn(args, dir);
  EXPECT_EQ(out.code, 2) << out.err;
  EXPECT_NE(out.err.find("cspn train: the configuration needs at least"), std::string::npos) << out.err;
  EXPECT_NE(out.err.find("train.batch_size 4096"), std::string::npos) << out.err;
  EXPECT_FALSE(fs::exists(dir / "run")) << "nothing written";
}

// Case 8: NaN weights and a flipped byte are refused on load.
TEST(Failures, DamagedModelFilesAreRefused) {
  CSPN_REQUIRE_TINY_MODEL();
  const auto dir = test::scratch_dir("failures_model");
  ModelFile model = load_model_file(test::tiny_model().string());
  auto& [name, weights] = *std::find_if(model.tensors.begin(), model.tensors.end(),
                                        [](const auto& kv) { return kv.second.is_floating_point(); });
  weights = weights.clone();
  weights.view(-1)[0] = std::numeric_limits<float>::quiet_NaN();
  const std::string nan_file = (dir / "nan.cspn").string();
  save_model_file(nan_file, model);
  try {
    load_model_file(nan_file);
    ADD_FAILURE() << "NaN weights accepted";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("'" + name + "'"), std::string::npos) << e.what();
  }

  // Found by fuzz/fuzz_model_file.cpp: a number too large for a double in the header escaped as a
  // JSON library exception instead of an error naming the file.
  const auto overflow = fs::path(test::kSourceDir) / "fuzz/seeds/model_file/finding-1.cspn";
  try {
    load_model_file(overflow.string());
    ADD_FAILURE() << "a damaged header was accepted";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("finding-1.cspn"), std::string::npos) << e.what();
  }

  std::string bytes = test::file_bytes(test::tiny_model());
  bytes[bytes.size() - 100] ^= 0x10;  // inside the last tensor's data
  const std::string flipped = (dir / "flipped.cspn").string();
  std::ofstream(flipped, std::ios::binary) << bytes;
  try {
    load_model_file(flipped);
    ADD_FAILURE() << "a flipped byte went unnoticed";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("checksum mismatch"), std::string::npos) << e.what();
  }
  const auto out = run_cspn({"predict", "--model", flipped, (test::tiny_scenes() / "img" / "000001.jpg").string()}, dir);
  EXPECT_EQ(out.code, 3) << out.err;
}

// Cases 10, 17 and 18: predict when nothing can be read, odd files in a folder, bad output paths.
TEST(Failures, PredictReportsUnreadableInputsAndBadOutputs) {
  CSPN_REQUIRE_TINY_MODEL();
  const auto dir = test::scratch_dir("failures_predict_inputs");
  std::ofstream(dir / "notes.jpg") << "not an image\n";
  auto out = run_cspn({"predict", "--model", test::tiny_model().string(), "--quiet", (dir / "notes.jpg").string()}, dir);
  EXPECT_EQ(out.code, 3) << "every input failed: " << out.err;

  // A folder with a photo, a link to itself and a FIFO: the photo is read, the rest skipped.
  fs::create_directories(dir / "mixed");
  fs::copy_file(test::tiny_scenes() / "img" / "000001.jpg", dir / "mixed" / "a.jpg");
  fs::create_symlink("loop.jpg", dir / "mixed" / "loop.jpg");
  ASSERT_EQ(::mkfifo((dir / "mixed" / "fifo.jpg").c_str(), 0644), 0);
  const auto json = dir / "mixed.json";
  out = run_cspn({"predict", "--model", test::tiny_model().string(), "--quiet", "--json", json.string(),
                  (dir / "mixed").string()},
                 dir);
  ASSERT_EQ(out.code, 0) << out.err;
  const auto result = nlohmann::json::parse(test::file_bytes(json));
  EXPECT_EQ(result["images"].size(), 1u) << result.dump();

  // The looping link named on the command line is an unreadable input like any other: reported,
  // and the good photo beside it still predicted.
  out = run_cspn({"predict", "--model", test::tiny_model().string(), "--quiet", "--json", json.string(),
                  (dir / "mixed" / "a.jpg").string(), (dir / "mixed" / "loop.jpg").string()},
                 dir);
  ASSERT_EQ(out.code, 0) << out.err;
  const auto named = nlohmann::json::parse(test::file_bytes(json));
  EXPECT_EQ(named["images"].size(), 1u) << named.dump();
  ASSERT_EQ(named["errors"].size(), 1u) << named.dump();
  EXPECT_NE(named["errors"][0]["file"].get<std::string>().find("loop.jpg"), std::string::npos);

  // An output folder where a file is: an I/O error in one line.
  out = run_cspn({"predict", "--model", test::tiny_model().string(), "--quiet", "--out", (dir / "notes.jpg").string(),
                  (dir / "mixed" / "a.jpg").string()},
                 dir);
  EXPECT_EQ(out.code, 4) << out.err;
  EXPECT_EQ(std::count(out.err.begin(), out.err.end(), '\n'), 1) << out.err;

  // A FIFO named on the command line is refused, not read forever.
  const pid_t pid = test::spawn_process({cspn_binary(), "predict", "--model", test::tiny_model().string(), "--quiet",
                                         (dir / "mixed" / "fifo.jpg").string()},
                                        (dir / "fifo-out.txt").string(), (dir / "fifo-err.txt").string());
  int status = -1;
  for (int i = 0; i < 600 && waitpid(pid, &status, WNOHANG) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  if (waitpid(pid, &status, WNOHANG) == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    FAIL() << "predict hung on a FIFO";
  }
  EXPECT_EQ(WEXITSTATUS(status), 3);
  EXPECT_NE(test::file_bytes(dir / "fifo-err.txt").find("not a regular file"), std::string::npos);

  // --json naming a folder fails at once, before any work, and leaves nothing behind.
  fs::create_directories(dir / "out-folder");
  out = run_cspn({"predict", "--model", test::tiny_model().string(), "--quiet", "--json", (dir / "out-folder").string(),
                  (dir / "mixed" / "a.jpg").string()},
                 dir);
  EXPECT_EQ(out.code, 4) << out.err;
  EXPECT_NE(out.err.find("it is a folder"), std::string::npos) << out.err;
  EXPECT_TRUE(leftovers(dir).empty());
  out = run_cspn({"predict", "--model", test::tiny_model().string(), "--min-score", "nan", (dir / "mixed" / "a.jpg").string()},
                 dir);
  EXPECT_EQ(out.code, 2) << out.err;
}

// Case 13: a diverging run says whether a checkpoint exists to go back to.
TEST(Failures, NanLossSaysWhetherACheckpointExists) {
  CSPN_REQUIRE_TINY_MODEL();
  const auto dir = test::scratch_dir("failures_nan_loss");
  const std::string config = (fs::path(test::kSourceDir) / "tests/fixtures/tiny_pipeline.yaml").string();
  const auto out = run_cspn({"train", "--config", config, "--data", test::tiny_scenes().string(), "--quiet", "--out",
                             (dir / "run").string(), "--set", "model.detector.enabled=false", "--set", "train.lr=1e30",
                             "--set", "train.warmup_iters=0"},
                            dir);
  EXPECT_EQ(out.code, 1) << out.err;
  EXPECT_NE(out.err.find("training loss became"), std::string::npos) << out.err;
  EXPECT_NE(out.err.find("no checkpoint was written yet"), std::string::npos) << out.err;
}

namespace {

// The fixture scenes' COCO file with its paths made absolute, so that variants of it can be written
// anywhere; edit(doc) damages it.
fs::path coco_variant(const fs::path& dir, const std::string& name, const std::function<void(nlohmann::json&)>& edit) {
  auto doc = nlohmann::json::parse(test::file_bytes(test::tiny_scenes() / "annotations.json"));
  for (auto& im : doc["images"]) {
    im["file_name"] = (test::tiny_scenes() / im["file_name"].get<std::string>()).string();
  }
  edit(doc);
  const auto path = dir / (name + ".json");
  std::ofstream(path) << doc.dump();
  return path;
}

}  // namespace

// Case 14: COCO sizes, categories and numbers out of range are errors naming the record.
TEST(Failures, CocoRecordsOutOfRangeAreRefused) {
  const auto dir = test::scratch_dir("failures_coco");
  if (!fs::exists(test::tiny_scenes())) GTEST_SKIP() << "run through ctest (fixture tiny_model)";
  const auto error_of = [](const fs::path& file) -> std::string {
    try {
      read_coco(file.string());
    } catch (const DataError& e) {
      return e.what();
    }
    return "accepted";
  };
  for (const double width : {-256.0, 0.0, 4294967296.0 + 256}) {
    const auto file = coco_variant(dir, "width", [&](nlohmann::json& d) { d["images"][0]["width"] = width; });
    const std::string e = error_of(file);
    EXPECT_NE(e.find("width: expected 1 to"), std::string::npos) << width << ": " << e;
    EXPECT_NE(e.find("images[0]"), std::string::npos) << e;
  }
  // Found by fuzz/fuzz_coco.cpp: a whole number beyond 2^63 was converted with undefined behaviour.
  const auto huge_id = coco_variant(dir, "huge-id", [](nlohmann::json& d) { d["images"][0]["id"] = 1.38889e94; });
  EXPECT_NE(error_of(huge_id).find("is out of range"), std::string::npos) << error_of(huge_id);
  const auto unknown = coco_variant(dir, "category", [](nlohmann::json& d) { d["annotations"][0]["category_id"] = 42; });
  EXPECT_NE(error_of(unknown).find("category_id 42 is not listed"), std::string::npos) << error_of(unknown);
  const auto huge = dir / "huge.json";
  std::ofstream(huge) << R"({"images": [{"id": 1, "file_name": "a.jpg", "width": 1e999}], "annotations": []})";
  EXPECT_NE(error_of(huge).find(huge.string()), std::string::npos) << error_of(huge);
}

// Case 15: a bad box is blamed on list_bbox.txt, where it is.
TEST(Failures, FldBoxErrorsNameTheBoxFile) {
  const auto dir = test::scratch_dir("failures_fld");
  fs::create_directories(dir / "Anno");
  fs::create_directories(dir / "Eval");
  fs::create_directories(dir / "img");
  cv::imwrite((dir / "img" / "a.jpg").string(), cv::Mat(64, 64, CV_8UC3, cv::Scalar(90, 90, 90)));
  std::ofstream(dir / "Anno" / "list_landmarks.txt")
      << "1\nimage_name clothes_type variation_type landmarks\nimg/a.jpg 2 1 0 10 10 0 50 10 0 10 60 0 50 60\n";
  std::ofstream(dir / "Anno" / "list_bbox.txt") << "1\nimage_name x_1 y_1 x_2 y_2\nimg/a.jpg 40 5 20 60\n";
  std::ofstream(dir / "Eval" / "list_eval_partition.txt") << "1\nimage_name evaluation_status\nimg/a.jpg test\n";
  try {
    read_fld(dir.string());
    ADD_FAILURE() << "an empty box was accepted";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("list_bbox.txt:3"), std::string::npos) << e.what();
  }
}

// Case 9: --skip-bad says what it skipped, in the log and the JSON; all skipped is said plainly.
TEST(Failures, SkippedRecordsAreReported) {
  CSPN_REQUIRE_TINY_MODEL();
  const auto dir = test::scratch_dir("failures_skip_bad");
  const auto one_bad = coco_variant(dir, "one-bad", [](nlohmann::json& d) { d["annotations"][0]["category_id"] = 42; });
  auto out = run_cspn({"eval", "--model", test::tiny_model().string(), "--data", one_bad.string(), "--format", "coco",
                       "--split", "all", "--skip-bad", "--quiet", "--json", (dir / "m.json").string()},
                      dir);
  ASSERT_EQ(out.code, 0) << out.err;
  EXPECT_NE(out.err.find("skipped 1 malformed record"), std::string::npos) << out.err;
  // A report folder that cannot be made fails before the evaluation, as --json does (case 18).
  std::ofstream(dir / "a-file") << "in the way\n";
  const auto report = run_cspn({"eval", "--model", test::tiny_model().string(), "--data", one_bad.string(), "--format",
                                "coco", "--split", "all", "--skip-bad", "--quiet", "--report",
                                (dir / "a-file" / "report").string()},
                               dir);
  EXPECT_EQ(report.code, 4) << report.err;
  EXPECT_NE(report.err.find("report folder"), std::string::npos) << report.err;
  EXPECT_EQ(report.err.find("skipped 1 malformed record"), std::string::npos) << "failed before reading: " << report.err;
  const auto json = run_cspn({"eval", "--model", test::tiny_model().string(), "--data", one_bad.string(), "--format",
                              "coco", "--split", "all", "--skip-bad", "--quiet", "--json",
                              (dir / "a-file" / "m.json").string()},
                             dir);
  EXPECT_EQ(json.code, 4) << json.err;
  EXPECT_EQ(json.err.find("skipped 1 malformed record"), std::string::npos) << "failed before reading: " << json.err;
  const auto metrics = nlohmann::json::parse(test::file_bytes(dir / "m.json"));
  EXPECT_EQ(metrics["skipped"]["count"], 1);
  EXPECT_NE(metrics["skipped"]["records"][0].get<std::string>().find("category_id 42"), std::string::npos);

  const auto all_bad = coco_variant(dir, "all-bad", [](nlohmann::json& d) {
    for (auto& a : d["annotations"]) a["category_id"] = 42;
  });
  out = run_cspn({"eval", "--model", test::tiny_model().string(), "--data", all_bad.string(), "--format", "coco",
                  "--split", "all", "--skip-bad", "--quiet"},
                 dir);
  EXPECT_EQ(out.code, 3) << out.err;
  EXPECT_NE(out.err.find("records were malformed and skipped"), std::string::npos) << out.err;

  const std::string config = (fs::path(test::kSourceDir) / "tests/fixtures/tiny_pipeline.yaml").string();
  out = run_cspn({"train", "--config", config, "--data", one_bad.string(), "--format", "coco", "--skip-bad", "--quiet",
                  "--out", (dir / "run").string(), "--set", "model.detector.enabled=false"},
                 dir);
  EXPECT_EQ(out.code, 0) << "train takes --skip-bad too: " << out.err;
  EXPECT_NE(out.err.find("skipped 1 malformed record"), std::string::npos) << out.err;
}
