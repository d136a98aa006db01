// Tests src/engine/garment_detector.cpp, the detection half: detector input scaling and padding, and
// the whole two-stage pipeline end to end: train both halves briefly on synthetic scenes, evaluate
// with each box source, and predict on a folder holding good, corrupt, empty and non-image files.
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "cspn/commands/predict_files.hpp"
#include "cspn/data/readers.hpp"
#include "cspn/data/synth.hpp"
#include "cspn/engine/crop.hpp"
#include "cspn/engine/evaluate.hpp"
#include "cspn/engine/garment_detector.hpp"
#include "cspn/engine/train.hpp"
#include "common.hpp"

using namespace cspn;
namespace fs = std::filesystem;

TEST(Detection, ScaleFitsShorterSideAndCapsLongerSide) {
  DetectorModelConfig cfg;
  cfg.min_size = 320;
  cfg.max_size = 512;
  EXPECT_FLOAT_EQ(detector_scale(640, 480, cfg), 320.0f / 480.0f);
  EXPECT_FLOAT_EQ(detector_scale(480, 640, cfg), 320.0f / 480.0f);
  EXPECT_FLOAT_EQ(detector_scale(1000, 200, cfg), 512.0f / 1000.0f);  // 1.6 would make it 1600 wide
  EXPECT_FLOAT_EQ(detector_scale(160, 160, cfg), 2.0f);
}

TEST(Detection, InputPadsToTheStrideAndKeepsPixels) {
  cv::Mat a(50, 100, CV_8UC3, cv::Scalar(10, 200, 30)), b(70, 60, CV_8UC3, cv::Scalar(250, 0, 90));
  const auto batch = detector_input({a, b}, {1.0f, 1.0f});
  ASSERT_EQ(batch.sizes(), (std::vector<int64_t>{2, 3, 80, 112}));
  EXPECT_TRUE(batch[0].narrow(1, 0, 50).narrow(2, 0, 100).equal(to_input_tensor(a)));
  EXPECT_TRUE(batch[1].narrow(1, 0, 70).narrow(2, 0, 60).equal(to_input_tensor(b)));
  EXPECT_EQ(batch[0].narrow(1, 50, 30).abs().max().item<float>(), 0.0f);
  EXPECT_EQ(batch[1].narrow(2, 60, 52).abs().max().item<float>(), 0.0f);
  EXPECT_EQ(detector_input({a}, {0.5f}).sizes(), (std::vector<int64_t>{1, 3, 32, 64}));
}

TEST(Detection, PipelineEndToEnd) {
  const auto dir = test::scratch_dir("detection-pipeline-" + std::to_string(getpid()));
  SynthOptions so;
  so.count = 24;
  so.seed = 11;
  so.width = so.height = 128;
  so.scenes = true;
  so.max_garments = 2;
  synthesize((dir / "scenes").string(), so);

  Config cfg;
  cfg.load_yaml_string(R"(
model:
  detector: {enabled: true, backbone: resnet18, backbone_from_keypoints: true, min_size: 128, max_size: 128, anchor_sizes: [32, 64, 128],
             rpn_pre_nms_train: 300, rpn_post_nms_train: 64, rpn_pre_nms_test: 300, rpn_post_nms_test: 32,
             rpn_batch: 64, box_batch: 32, head_dim: 64, detections_per_image: 4, score_thresh: 0.0}
  keypoints: {backbone: resnet18, stages: 2, channels: 32, input_size: [64, 64], sigma: 1.5}
data: {workers: 0}
train_detector: {epochs: 1, batch_size: 4, warmup_iters: 2, val_every: 1, log_every: 1}
train: {epochs: 1, batch_size: 8, warmup_iters: 2, val_every: 0, log_every: 1}
test: {batch_size: 16, detector_batch_size: 2}
)", "pipeline test config");
  const std::string scenes = (dir / "scenes").string();
  const Dataset train_set = read_split(scenes, "coco", "train", cfg, false);
  const Dataset val_set = read_split(scenes, "coco", "val", cfg, false);
  const Dataset test_set = read_split(scenes, "coco", "test", cfg, false);
  TrainOptions to;
  to.out_dir = (dir / "run").string();
  to.progress = false;
  const TrainSummary summary = train(cfg, train_set, val_set, to);
  const ModelFile model = load_model_file(summary.model_path);
  bool has_detector = false, has_keypoints = false;
  for (const auto& [name, t] : model.tensors) {
    has_detector |= name.rfind("detector.rpn.head.", 0) == 0;
    has_keypoints |= name.rfind("keypoints.", 0) == 0;
  }
  EXPECT_TRUE(has_detector && has_keypoints) << "one model file holds both halves";
  EXPECT_TRUE(model.extra["detector"]["validation"].contains("det_ap50"));

  size_t garments = 0;
  for (const auto& s : test_set.samples) garments += s.garments.size();
  for (const char* boxes : {"gt", "image", "detector"}) {
    EvalOptions eo;
    eo.boxes = boxes;
    eo.progress = false;
    const auto r = evaluate_model(model, test_set, eo).metrics;
    EXPECT_EQ(r["boxes"], boxes);
    EXPECT_EQ(r["garments"].get<size_t>(), garments) << boxes << ": every garment is scored";
    EXPECT_TRUE(r["ne_image"]["avg"].is_number()) << boxes;
    if (std::string(boxes) == "detector") {
      EXPECT_EQ(r["matched"].get<size_t>() + r["missed"].get<size_t>(), garments);
      EXPECT_TRUE(r.contains("det_ap50") && r.contains("det_ap"));
      EXPECT_TRUE(r["detection"]["per_category"].contains("upper"));
    }
  }

  // predict: a good photo, then files that are not images; the bad ones are reported, not fatal.
  const auto inputs = dir / "inputs";
  fs::create_directories(inputs);
  fs::copy_file(test_set.samples[0].image, inputs / "good.jpg");
  {
    std::ifstream in(test_set.samples[0].image, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    std::ofstream(inputs / "truncated.jpg", std::ios::binary) << bytes.substr(0, bytes.size() / 3);
  }
  std::ofstream(inputs / "empty.png").close();
  std::ofstream(inputs / "notes.jpg") << "not an image\n";
  Pipeline pipeline(model, torch::kCPU);
  EXPECT_FLOAT_EQ(pipeline.min_score(), cfg.test.min_score);
  pipeline.set_min_score(0.0f);  // every detection of this barely trained detector
  PredictFilesOptions po;
  po.out_dir = (dir / "rendered").string();
  po.progress = false;
  auto files = image_files({inputs.string(), (inputs / "missing.jpg").string()});
  ASSERT_EQ(files.size(), 5u);
  const auto out = predict_files(pipeline, files, po);
  ASSERT_EQ(out["images"].size() + out["errors"].size(), 5u);
  EXPECT_EQ(out["errors"].size(), 4u) << out["errors"].dump();
  bool good_read = false;
  for (const auto& im : out["images"]) good_read |= im["file_name"].get<std::string>().find("good.jpg") != std::string::npos;
  EXPECT_TRUE(good_read);
  EXPECT_TRUE(fs::exists(dir / "rendered" / "good.jpg"));
  // The detector keeps its 4 best boxes whatever their score (score_thresh 0), so the good photo
  // has garments and the checks below have something to check.
  ASSERT_EQ(out["annotations"].size(), 4u) << out.dump().substr(0, 400);
  for (const auto& a : out["annotations"]) {
    EXPECT_EQ(a["keypoints"].size(), 3u * LandmarkSchema::deepfashion().num_landmarks());
    const auto cat = a["category"].get<std::string>();
    const auto& schema = LandmarkSchema::deepfashion();
    EXPECT_EQ(a["landmarks"].size(), schema.categories[schema.category_index(cat)].landmarks.size());
  }

  // The command line: the same run, written to a JSON file.
  const std::string cspn = std::string(test::kBinaryDir) + "/cspn";
  const auto json = dir / "cli.json";
  ASSERT_EQ(test::run_process({cspn, "predict", "--model", summary.model_path, "--json", json.string(), "--quiet",
                               "--min-score", "0", inputs.string(), (inputs / "missing.jpg").string()}),
            0);
  std::ifstream in(json);
  const auto cli = nlohmann::json::parse(in);
  EXPECT_EQ(cli["images"].size(), out["images"].size());
  EXPECT_EQ(cli["errors"].size(), out["errors"].size());
  EXPECT_EQ(cli["annotations"].size(), out["annotations"].size());
  EXPECT_EQ(cli["min_score"], 0.0);

  // The README's C++ API example, with the model's own min_score: one line per garment of the good
  // photo scoring at least that, then one per landmark of its category.
  const std::string example = std::string(test::kBinaryDir) + "/cspn_detect_example";
  const auto printed = dir / "example.txt";
  ASSERT_EQ(test::run_process({example, summary.model_path, (inputs / "good.jpg").string()}, printed.string()), 0);
  std::ifstream text(printed);
  int printed_garments = 0, printed_landmarks = 0;
  for (std::string line; std::getline(text, line);) (line.rfind("  ", 0) == 0 ? printed_landmarks : printed_garments)++;
  int expected_garments = 0, expected_landmarks = 0;
  for (const auto& a : out["annotations"])
    if (a["score"].get<float>() >= cfg.test.min_score) {
      ++expected_garments;
      expected_landmarks += static_cast<int>(a["landmarks"].size());
    }
  EXPECT_EQ(printed_garments, expected_garments);
  EXPECT_EQ(printed_landmarks, expected_landmarks);
  EXPECT_EQ(test::run_process({example, summary.model_path, (inputs / "notes.jpg").string()}), 1);
}
