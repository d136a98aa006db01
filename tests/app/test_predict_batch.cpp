// The public API's image decoding and per-image options, and `cspn predict --jsonl`: resumable
// after SIGKILL, sharded across jobs, with unreadable images recorded as error lines.
#include <csignal>
#include <fstream>
#include <map>
#include <thread>

#include <opencv2/imgcodecs.hpp>

#include "common.hpp"
#include "cspn/cspn.hpp"
#include "cspn/data/synth.hpp"
#include "cspn/engine/predict.hpp"

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

TEST(DecodeImage, BytesGetTheChecksOfFilesWithTheirKind) {
  const auto dir = test::scratch_dir("decode_image");
  const cv::Mat image(48, 64, CV_8UC3, cv::Scalar(20, 120, 220));
  for (const char* ext : {".jpg", ".png", ".webp", ".bmp"}) {
    std::vector<uchar> encoded;
    ASSERT_TRUE(cv::imencode(ext, image, encoded)) << ext;
    const std::string bytes(encoded.begin(), encoded.end());
    const cv::Mat back = decode_image(bytes, std::string("upload") + ext);
    EXPECT_EQ(back.cols, 64) << ext;
    EXPECT_EQ(back.rows, 48) << ext;
    std::ofstream(dir / (std::string("a") + ext), std::ios::binary) << bytes;
    EXPECT_EQ(read_image((dir / (std::string("a") + ext)).string()).cols, 64) << ext;
    EXPECT_THROW(decode_image(bytes, "small", 64 * 48 - 1), ImageError) << ext << ": over max_pixels";
    try {
      decode_image(bytes, "small", 100);
    } catch (const ImageError& e) {
      EXPECT_EQ(e.kind, ImageError::Kind::TooLarge);
      EXPECT_NE(std::string(e.what()).find("small: image is 64x48"), std::string::npos) << e.what();
    }
  }
  const auto kind_of = [](const std::string& bytes) {
    try {
      decode_image(bytes, "upload");
    } catch (const ImageError& e) {
      EXPECT_NE(std::string(e.what()).find("upload: "), std::string::npos) << "names the input: " << e.what();
      return e.kind;
    }
    ADD_FAILURE() << "accepted";
    return ImageError::Kind::Unreadable;
  };
  std::vector<uchar> jpeg;
  cv::imencode(".jpg", image, jpeg);
  EXPECT_EQ(kind_of(""), ImageError::Kind::Corrupt);
  EXPECT_EQ(kind_of("hello, this is text"), ImageError::Kind::Unsupported);
  EXPECT_EQ(kind_of(std::string(jpeg.begin(), jpeg.begin() + jpeg.size() / 2)), ImageError::Kind::Corrupt);
  EXPECT_EQ(kind_of(std::string("RIFF\x10\x00\x00\x00WEBPVP8 ", 16)), ImageError::Kind::Corrupt) << "truncated WebP";

  fs::create_directories(dir / "folder.jpg");
  try {
    read_image((dir / "folder.jpg").string());
    ADD_FAILURE() << "a folder was read as an image";
  } catch (const ImageError& e) {
    EXPECT_EQ(e.kind, ImageError::Kind::Unreadable);
  }
}

TEST(PipelineOptions, PerImageOptionsMatchSeparateCalls) {
  CSPN_REQUIRE_TINY_MODEL();
  const ModelFile model = load_model_file(test::tiny_model().string());
  Pipeline pipeline(model, torch::kCPU);
  const cv::Mat a = read_image((test::tiny_scenes() / "img" / "000001.jpg").string());
  const cv::Mat b = read_image((test::tiny_scenes() / "img" / "000002.jpg").string());
  PredictOptions flipped, plain, two;
  flipped.min_score = plain.min_score = two.min_score = 0;
  flipped.flip = true;
  plain.flip = false;
  two.max_garments = 2;
  PredictTimings timings;
  const auto together = pipeline.predict({a, b, a}, {flipped, plain, two}, &timings);
  const auto alone_a = pipeline.predict({a}, {flipped}).front();
  const auto alone_b = pipeline.predict({b}, {plain}).front();
  ASSERT_EQ(together.size(), 3u);
  ASSERT_EQ(together[0].size(), 4u) << "min_score 0: the fixture detector's 4 boxes";
  ASSERT_EQ(together[1].size(), alone_b.size());
  EXPECT_EQ(together[2].size(), 2u) << "max_garments";
  EXPECT_EQ(timings.crops, 4 + static_cast<int>(alone_b.size()) + 2);
  EXPECT_GT(timings.detector_ms, 0);
  EXPECT_GT(timings.landmarks_ms, 0);
  const auto same = [&](const std::vector<GarmentPrediction>& x, const std::vector<GarmentPrediction>& y) {
    ASSERT_EQ(x.size(), y.size());
    for (size_t g = 0; g < x.size(); ++g) {
      EXPECT_EQ(x[g].category, y[g].category);
      // Batches of other sizes take other kernels: boxes agree to float rounding (hundreds of
      // pixels, through exp of the box deltas).
      EXPECT_NEAR(x[g].box.x1, y[g].box.x1, 0.01);
      EXPECT_NEAR(x[g].box.y1, y[g].box.y1, 0.01);
      EXPECT_NEAR(x[g].box.x2, y[g].box.x2, 0.01);
      EXPECT_NEAR(x[g].box.y2, y[g].box.y2, 0.01);
      // The crop is resampled by OpenCV's fixed-point bilinear warp (1/32 px steps), so a box that
      // moved by rounding can shift the crop's samples, and this barely trained model's flat peaks
      // turn that into landmark moves of up to 0.07 px (seen in a clang build; 2e-5 px with GCC).
      // An option applied to the wrong image moves landmarks by pixels (the flip: up to 10 px).
      for (size_t k = 0; k < x[g].landmarks.size(); ++k) {
        EXPECT_NEAR(x[g].landmarks[k].x, y[g].landmarks[k].x, 0.25);
        EXPECT_NEAR(x[g].landmarks[k].y, y[g].landmarks[k].y, 0.25);
      }
    }
  };
  same(together[0], alone_a);
  same(together[1], alone_b);
  // The flip test changes the answer (it averages two views), so the groups really differ.
  PredictOptions a_plain = plain;
  const auto unflipped = pipeline.predict({a}, {a_plain}).front();
  float moved = 0;
  for (size_t k = 0; k < unflipped[0].landmarks.size(); ++k)
    moved += std::abs(unflipped[0].landmarks[k].x - alone_a[0].landmarks[k].x);
  EXPECT_GT(moved, 0.0f);
  EXPECT_THROW(pipeline.predict({a, b}, {plain, plain, plain}), std::invalid_argument);
}

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
