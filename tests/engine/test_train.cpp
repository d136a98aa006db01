// Tests src/engine/train/: training end to end on a small synthetic set must learn (beat the
// untrained network), keep to its budgets, run each phase, resume after a kill where an
// uninterrupted run ends, and refuse to overwrite a run; the gradient scaler of mixed precision.
#include <signal.h>
#include <unistd.h>
#include <sys/wait.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <thread>

#include "cspn/core/io/model_file.hpp"
#include "cspn/core/io/weights.hpp"
#include "cspn/core/model/cspn_net.hpp"
#include "cspn/data/readers.hpp"
#include "cspn/engine/evaluate.hpp"
#include "cspn/engine/train.hpp"
#include "common.hpp"
#include "train_fixtures.hpp"

using namespace cspn;
namespace fs = std::filesystem;
using cspn::test::small_config;
using cspn::test::synthetic_set;

namespace {

// The records of one type ("train", "epoch", ...) of a run's log.jsonl, in order.
std::vector<nlohmann::json> log_records(const std::string& run_dir, const std::string& type) {
  std::ifstream log(fs::path(run_dir) / "log.jsonl");
  std::vector<nlohmann::json> out;
  for (std::string line; std::getline(log, line);) {
    auto rec = nlohmann::json::parse(line);
    if (rec["type"] == type) out.push_back(std::move(rec));
  }
  return out;
}

}  // namespace

TEST(Train, LearnsOnHeldOutImages) {
  // A short run must cut the held-out error of the same network before training (random
  // heatmaps) substantially, and its per-epoch loss must fall.
  const Config cfg = small_config();
  const Dataset train_set = read_split(synthetic_set(), "fld", "train", cfg, false);
  const Dataset test_set = read_split(synthetic_set(), "fld", "test", cfg, false);
  TrainOptions opt;
  opt.out_dir = test::scratch_dir("train-learn").string();
  opt.progress = false;
  const TrainSummary summary = train(cfg, train_set, Dataset{train_set.schema, {}, {}}, opt);
  EXPECT_EQ(summary.epochs, cfg.train.epochs);

  ModelFile untrained{cfg, train_set.schema, {}, {}};
  torch::manual_seed(cfg.train.seed);
  CSPNNet fresh(cfg.model.keypoints, train_set.schema.num_landmarks());
  for (auto& [name, tensor] : state_dict(*fresh)) untrained.tensors.emplace_back("keypoints." + name, tensor);
  const EvalOptions quiet{"gt", "cpu", false};
  const double before = evaluate_model(untrained, test_set, quiet).metrics["ne_image"]["avg"];
  const double after =
      evaluate_model(load_model_file(summary.model_path), test_set, quiet).metrics["ne_image"]["avg"];
  std::cout << "held-out ne_image: untrained " << before << ", trained " << after << "\n";
  EXPECT_LT(after, 0.6 * before);

  std::vector<double> epoch_loss;
  for (const auto& rec : log_records(opt.out_dir, "epoch")) epoch_loss.push_back(rec["loss"]);
  ASSERT_EQ(epoch_loss.size(), static_cast<size_t>(cfg.train.epochs));
  EXPECT_LT(epoch_loss.back(), 0.8 * epoch_loss.front());
}

TEST(Train, TimeBudgetCutsTheScheduleToFit) {
  // 1000 epochs cannot fit in 0.1 minutes: training stops when the budget is spent, the schedule
  // compressed to the iterations that fit.
  Config cfg = small_config();
  cfg.train.epochs = 1000;
  cfg.train.time_limit_minutes = 0.1f;
  const Dataset train_set = read_split(synthetic_set(), "fld", "train", cfg, false);
  TrainOptions opt;
  opt.out_dir = test::scratch_dir("train-budget").string();
  opt.progress = false;
  const TrainSummary summary = train(cfg, train_set, Dataset{train_set.schema, {}, {}}, opt);
  EXPECT_LT(summary.seconds, 60.0);
  const auto records = log_records(opt.out_dir, "train");
  ASSERT_FALSE(records.empty());
  const auto& last = records.back();
  const int64_t iters_per_epoch = static_cast<int64_t>(train_set.samples.size()) / cfg.train.batch_size;
  EXPECT_LT(last["iter"].get<int64_t>(), 1000 * iters_per_epoch);
  EXPECT_EQ(last["iter"].get<int64_t>(), last["total_iters"].get<int64_t>()) << "stopped at the fitted end";
}

TEST(Train, IterationBudgetIsExactEvenWithFewerExamplesThanABatch) {
  // train.iters fixes the run's length whatever the machine's speed; 5 garments at batch 8 make
  // one short batch per epoch (this once read past the end of the epoch's order).
  Config cfg = small_config();
  cfg.train.epochs = 1000;
  cfg.train.iters = 7;
  Dataset train_set = read_split(synthetic_set(), "fld", "train", cfg, false);
  train_set.samples.resize(5);
  TrainOptions opt;
  opt.out_dir = test::scratch_dir("train-iters").string();
  opt.progress = false;
  const TrainSummary summary = train(cfg, train_set, Dataset{train_set.schema, {}, {}}, opt);
  EXPECT_EQ(summary.epochs, 7);
  const auto records = log_records(opt.out_dir, "train");
  ASSERT_FALSE(records.empty());
  const auto& last = records.back();
  EXPECT_EQ(last["iter"], 7);
  EXPECT_EQ(last["total_iters"], 7);
}

TEST(Train, DetectorPhaseWithFewerImagesThanABatch) {
  // The detector's phase too: 3 images at batch 4 (issue 14, case 1).
  Config cfg;
  cfg.load_yaml_string(R"(
model: {keypoints: {enabled: false}, detector: {enabled: true, backbone: resnet18, min_size: 96, max_size: 128}}
data: {workers: 0}
train_detector: {batch_size: 4, iters: 3, warmup_iters: 1, val_every: 0, log_every: 1}
)", "test config");
  Dataset train_set = read_split(synthetic_set(), "fld", "train", cfg, false);
  train_set.samples.resize(3);
  TrainOptions opt;
  opt.out_dir = test::scratch_dir("train-detector-short").string();
  opt.progress = false;
  train(cfg, train_set, Dataset{train_set.schema, {}, {}}, opt);
  const auto records = log_records(opt.out_dir, "train");
  ASSERT_FALSE(records.empty());
  EXPECT_EQ(records.back()["iter"], 3);
  EXPECT_EQ(records.back()["phase"], "detector");
}

// bfloat16 autocast in both phases starts where float32 starts: the same first batches (same
// seeds) give nearly the same losses, and every logged loss is finite. The detector's phase failed
// in bfloat16 until its RoI ops pooled in float32.
TEST(Train, BothHalvesInBfloat16StartWhereFloat32Starts) {
  const auto first_losses = [](const std::string& precision) {
    Config cfg;
    cfg.load_yaml_string(R"(
model: {keypoints: {backbone: resnet18, stages: 2, channels: 32, input_size: [64, 64], sigma: 1.5},
        detector: {enabled: true, backbone: resnet18, backbone_from_keypoints: true, min_size: 96, max_size: 128}}
data: {workers: 0}
train: {batch_size: 8, iters: 3, warmup_iters: 1, val_every: 0, log_every: 1, seed: 5}
train_detector: {batch_size: 2, iters: 3, warmup_iters: 1, val_every: 0, log_every: 1, seed: 5}
)", "test config");
    cfg.train.precision = cfg.train_detector.precision = precision;
    const Dataset train_set = read_split(synthetic_set(), "fld", "train", cfg, false);
    TrainOptions opt;
    opt.out_dir = test::scratch_dir("train-precision-" + precision).string();
    opt.progress = false;
    train(cfg, train_set, Dataset{train_set.schema, {}, {}}, opt);
    std::map<std::string, double> first;
    for (const auto& r : log_records(opt.out_dir, "train")) {
      EXPECT_TRUE(std::isfinite(r["loss"].get<double>())) << precision << " " << r.dump();
      first.emplace(r["phase"].get<std::string>(), r["loss"].get<double>());
    }
    EXPECT_EQ(first.size(), 2u) << precision;
    return first;
  };
  const auto f32 = first_losses("float32");
  const auto bf16 = first_losses("bfloat16");
  EXPECT_NEAR(bf16.at("keypoints"), f32.at("keypoints"), 0.05 * f32.at("keypoints"));
  // Proposals are ranked by bfloat16 scores, so the detector may sample other boxes: looser.
  EXPECT_NEAR(bf16.at("detector"), f32.at("detector"), 0.25 * f32.at("detector"));
}

TEST(Train, SyntheticPretrainingRunsFirstInTheSameCommand) {
  // data.pretrain_synthetic: cspn generates garments into the run folder and trains on them (at
  // their own crop size) before the data given; both phases are logged, the model file says so.
  Config cfg = small_config();
  cfg.data.pretrain_synthetic = 24;
  cfg.data.pretrain_input_size = {32, 32};
  cfg.train_pretrain.iters = 3;
  cfg.train_pretrain.batch_size = 8;
  cfg.train_pretrain.log_every = 1;
  cfg.train.iters = 2;
  const Dataset train_set = read_split(synthetic_set(), "fld", "train", cfg, false);
  TrainOptions opt;
  opt.out_dir = test::scratch_dir("train-pretrain").string();
  opt.progress = false;
  const TrainSummary summary = train(cfg, train_set, Dataset{train_set.schema, {}, {}}, opt);
  EXPECT_TRUE(fs::exists(fs::path(opt.out_dir) / "pretrain-synthetic" / "Anno" / "list_landmarks.txt"));
  std::vector<std::pair<std::string, int64_t>> phases;  // (phase, last iteration) in order
  for (const auto& rec : log_records(opt.out_dir, "train")) {
    if (phases.empty() || phases.back().first != rec["phase"]) phases.emplace_back(rec["phase"], 0);
    phases.back().second = rec["iter"];
  }
  ASSERT_EQ(phases.size(), 2u);
  EXPECT_EQ(phases[0], (std::pair<std::string, int64_t>{"pretrain", 3}));
  EXPECT_EQ(phases[1], (std::pair<std::string, int64_t>{"keypoints", 2}));
  const auto model = load_model_file(summary.model_path);
  EXPECT_GT(model.extra["pretrain"]["synthetic_garments"].get<int>(), 0);
}

TEST(Train, BackboneFromAnEarlierModelFile) {
  // A landmark model file (another pyramid width) hands its backbone to a new run.
  Config cfg = small_config();
  cfg.train.epochs = 1;
  cfg.train.lr = 1e-9f;  // training barely moves the weights
  const Dataset train_set = read_split(synthetic_set(), "fld", "train", cfg, false);
  Config earlier_cfg = cfg;
  earlier_cfg.model.keypoints.channels = 32;
  torch::manual_seed(99);
  CSPNNet earlier(earlier_cfg.model.keypoints, train_set.schema.num_landmarks());
  ModelFile file{earlier_cfg, train_set.schema, {}, {}};
  for (auto& [name, tensor] : state_dict(*earlier)) file.tensors.emplace_back("keypoints." + name, tensor);
  const auto dir = test::scratch_dir("train-pretrained");
  save_model_file((dir / "earlier.cspn").string(), file);

  cfg.model.keypoints.pretrained = (dir / "earlier.cspn").string();
  TrainOptions opt;
  opt.out_dir = (dir / "run").string();
  opt.progress = false;
  const ModelFile trained = load_model_file(train(cfg, train_set, Dataset{train_set.schema, {}, {}}, opt).model_path);
  torch::Tensor conv1;
  for (const auto& [name, t] : trained.tensors)
    if (name == "keypoints.backbone.layer2.0.conv1.weight") conv1 = t;
  ASSERT_TRUE(conv1.defined());
  EXPECT_LT((conv1 - earlier->backbone->named_parameters()["layer2.0.conv1.weight"]).abs().max().item<double>(), 1e-5);

  cfg.model.keypoints.backbone = "resnet50";  // nothing of a ResNet-50 in it: an error, not a silent no-op
  opt.out_dir = (dir / "run50").string();
  EXPECT_THROW(train(cfg, train_set, Dataset{train_set.schema, {}, {}}, opt), std::invalid_argument);
}

TEST(Train, ResumeAfterAKillMatchesAnUninterruptedRun) {
  // The real command, killed with SIGKILL once its epoch-1 checkpoint exists, then resumed.
  const std::string cspn = std::string(test::kBinaryDir) + "/cspn";
  const Config cfg = small_config();
  const auto config_file = test::scratch_dir("train-kill-config") / "small.yaml";
  std::ofstream(config_file) << cfg.to_yaml() << "\n";
  auto command = [&](const fs::path& out, bool resume) {
    std::vector<std::string> args{cspn, "train", "--config", config_file.string(), "--set", "train.epochs=3",
                                  "--set", "model.keypoints.stages=1", "--data", synthetic_set(), "--format", "fld",
                                  "--out", out.string(), "--quiet"};
    if (resume) args.push_back("--resume");
    return args;
  };
  const auto straight = test::scratch_dir("train-straight"), killed = test::scratch_dir("train-killed");
  ASSERT_EQ(test::run_process(command(straight, false)), 0);

  const pid_t pid = test::spawn_process(command(killed, false));
  while (!fs::exists(killed / "checkpoint-keypoints.pt")) {
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, WNOHANG), 0) << "training ended before its first checkpoint";
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  ASSERT_FALSE(fs::exists(killed / "model.cspn")) << "the run finished before it was killed; nothing was tested";
  ASSERT_EQ(test::run_process(command(killed, false)), 2) << "a second run into the same folder must refuse (usage)";
  ASSERT_EQ(test::run_process(command(killed, true)), 0);

  const auto a = load_model_file((straight / "model.cspn").string());
  const auto b = load_model_file((killed / "model.cspn").string());
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  double worst = 0;
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    ASSERT_EQ(a.tensors[i].first, b.tensors[i].first);
    worst = std::max(worst, (a.tensors[i].second - b.tensors[i].second).abs().max().item<double>());
  }
  EXPECT_LT(worst, 1e-4);
}

TEST(Train, RefusesToOverwriteARun) {
  const Config cfg = small_config();
  const auto dir = test::scratch_dir("train-exists");
  std::ofstream(dir / "model.cspn") << "precious";
  const Dataset train_set = read_split(synthetic_set(), "fld", "train", cfg, false);
  TrainOptions opt;
  opt.out_dir = dir.string();
  opt.progress = false;
  EXPECT_THROW(train(cfg, train_set, Dataset{train_set.schema, {}, {}}, opt), std::invalid_argument);
  std::ifstream in(dir / "model.cspn");
  std::string text;
  in >> text;
  EXPECT_EQ(text, "precious");
}

// --unlabelled (data.unlabelled): the photos nobody labelled join both halves' training. The run
// keeps teacher.cspn, which is exactly the model of the same run without them; the rounds train on
// the labelled and pseudo-labelled photos together, so the final model differs from it; an
// unreadable photo is reported and skipped.
TEST(Train, UnlabelledPhotosJoinTheTrainingOfBothHalves) {
  Config cfg = small_config();
  cfg.load_yaml_string(R"(
model: {detector: {enabled: true, backbone: resnet18, min_size: 96, max_size: 128, detections_per_image: 2}}
train: {iters: 6, warmup_iters: 2}
train_detector: {iters: 4, warmup_iters: 1, batch_size: 2, val_every: 0, log_every: 1}
semi: {min_score: 0, max_disagreement: 1, min_landmark_score: 0, keypoint_iters: 4, detector_iters: 3}
)", "test config");
  Dataset train_set = read_split(synthetic_set(), "fld", "train", cfg, false);
  train_set.samples.resize(12);
  const fs::path photos = test::scratch_dir("train-unlabelled-photos");
  for (const char* name : {"000150.jpg", "000151.jpg", "000152.jpg", "000153.jpg"})
    fs::copy_file(fs::path(synthetic_set()) / "img" / name, photos / name);
  std::ofstream(photos / "broken.jpg") << "not a JPEG";
  TrainOptions opt;
  opt.progress = false;
  opt.out_dir = test::scratch_dir("train-labelled-only").string();
  train(cfg, train_set, Dataset{train_set.schema, {}, {}}, opt);
  const std::string alone = opt.out_dir;
  cfg.data.unlabelled = photos.string();
  opt.out_dir = test::scratch_dir("train-unlabelled").string();
  train(cfg, train_set, Dataset{train_set.schema, {}, {}}, opt);

  const auto pseudo = log_records(opt.out_dir, "pseudo_labels");
  ASSERT_EQ(pseudo.size(), 1u);
  EXPECT_EQ(pseudo[0]["images"], 4);
  EXPECT_EQ(pseudo[0]["unreadable"], 1);
  const int garments = pseudo[0]["garments"].get<int>();
  ASSERT_GT(garments, 0);
  EXPECT_GT(pseudo[0]["landmarks"].get<int>(), 0);
  std::map<std::string, nlohmann::json> starts;
  for (const auto& r : log_records(opt.out_dir, "start")) starts[r["phase"].get<std::string>()] = r;
  ASSERT_TRUE(starts.count("keypoints-round1") && starts.count("detector-round1"));
  EXPECT_EQ(starts["keypoints"]["items"], 12);
  EXPECT_EQ(starts["keypoints-round1"]["items"], 12 + garments) << "the pseudo-labelled garments' crops";
  EXPECT_EQ(starts["detector-round1"]["items"], 12 + 4) << "the photos with a pseudo-garment";
  EXPECT_EQ(starts["keypoints-round1"]["iters"], 4);
  EXPECT_EQ(starts["detector-round1"]["iters"], 3);
  std::map<std::string, double> losses;
  for (const auto& r : log_records(opt.out_dir, "train")) {
    EXPECT_TRUE(std::isfinite(r["loss"].get<double>()));
    losses[r["phase"].get<std::string>()] = r["loss"].get<double>();
  }
  EXPECT_TRUE(losses.count("keypoints-round1") && losses.count("detector-round1"));

  const ModelFile without = load_model_file((fs::path(alone) / "model.cspn").string());
  const ModelFile teacher = load_model_file((fs::path(opt.out_dir) / "teacher.cspn").string());
  const ModelFile student = load_model_file((fs::path(opt.out_dir) / "model.cspn").string());
  ASSERT_EQ(without.tensors.size(), teacher.tensors.size());
  ASSERT_EQ(student.tensors.size(), teacher.tensors.size());
  bool differs = false;
  for (size_t i = 0; i < teacher.tensors.size(); ++i) {
    EXPECT_TRUE(torch::equal(without.tensors[i].second, teacher.tensors[i].second)) << teacher.tensors[i].first;
    differs = differs || !torch::equal(student.tensors[i].second, teacher.tensors[i].second);
  }
  EXPECT_TRUE(differs);
  EXPECT_EQ(student.extra["semi"]["rounds"].size(), 1u);
  EXPECT_EQ(student.extra["data"]["unlabelled"]["photos"], 4);
}

TEST(GradScaler, UnscalesSkipsOverflowsAndAdaptsTheScale) {
  GradScaler scaler(1024.0, /*growth_interval=*/2);
  const auto p = torch::zeros({3}, torch::requires_grad());
  scaler.scale((p * torch::tensor({1.0f, 2.0f, 3.0f})).sum()).backward();
  EXPECT_TRUE(torch::allclose(p.grad(), torch::tensor({1024.0f, 2048.0f, 3072.0f})));
  EXPECT_TRUE(scaler.unscale({p}));
  EXPECT_TRUE(torch::allclose(p.grad(), torch::tensor({1.0f, 2.0f, 3.0f})));
  EXPECT_EQ(scaler.value(), 1024.0);
  EXPECT_TRUE(scaler.unscale({p}));  // a second clean step in a row: the scale grows
  EXPECT_EQ(scaler.value(), 2048.0);
  p.mutable_grad()[1] = std::numeric_limits<float>::infinity();
  EXPECT_FALSE(scaler.unscale({p}));  // overflow: skip the step, halve the scale
  EXPECT_EQ(scaler.value(), 1024.0);
  p.mutable_grad().fill_(std::nanf(""));
  EXPECT_FALSE(scaler.unscale({p}));
  EXPECT_EQ(scaler.value(), 512.0);
}
