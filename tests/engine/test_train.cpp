// Training end to end on a small synthetic set: it must learn (beat the mean-shape baseline), and a
// run stopped after an epoch and resumed must end where an uninterrupted run ends. The evaluation
// and the demo built on it. The process's memory settings.
#include <malloc.h>
#include <signal.h>
#include <unistd.h>
#include <sys/wait.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <thread>

#include "common.hpp"
#include "cspn/data/readers.hpp"
#include "cspn/data/synth.hpp"
#include "cspn/engine/demo.hpp"
#include "cspn/engine/evaluate.hpp"
#include "cspn/engine/process.hpp"
#include "cspn/engine/train.hpp"
#include "cspn/io/model_file.hpp"
#include "cspn/io/weights.hpp"
#include "cspn/model/cspn_net.hpp"

using namespace cspn;
namespace fs = std::filesystem;

namespace {

// Shared by the tests of this file: 160 synthetic 128x128 images, made once per process (ctest
// runs the tests in parallel processes, each with its own copy).
const std::string& synthetic_set() {
  static const std::string dir = [] {
    const auto d = test::scratch_dir("train-synth-" + std::to_string(getpid()));
    SynthOptions opt;
    opt.count = 160;
    opt.seed = 7;
    opt.width = opt.height = 128;
    synthesize(d.string(), opt);
    return d.string();
  }();
  return dir;
}

Config small_config() {
  Config cfg;
  cfg.load_yaml_string(R"(
model: {keypoints: {backbone: resnet18, stages: 1, channels: 64, input_size: [64, 64], sigma: 1.5}}
data: {workers: 0, rotate_aug: 10, occlusion_aug: 0.0}
train: {lr: 0.001, epochs: 10, batch_size: 8, warmup_iters: 20, val_every: 0, seed: 3, log_every: 1}
test: {flip: true, batch_size: 64}
)", "test config");
  return cfg;
}

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
  const Dataset train_set = load_split(synthetic_set(), "fld", "train", cfg, false);
  const Dataset test_set = load_split(synthetic_set(), "fld", "test", cfg, false);
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

TEST(Evaluate, ScoresEveryStageAndTheLastIsTheModelsAnswer) {
  Config cfg = small_config();
  cfg.model.keypoints.stages = 3;
  const Dataset test_set = load_split(synthetic_set(), "fld", "test", cfg, false);
  ModelFile model{cfg, test_set.schema, {}, {}};
  torch::manual_seed(5);
  CSPNNet net(cfg.model.keypoints, test_set.schema.num_landmarks());
  for (auto& [name, tensor] : state_dict(*net)) model.tensors.emplace_back("keypoints." + name, tensor);
  const auto result = evaluate_model(model, test_set, EvalOptions{"gt", "cpu", false});
  const auto& m = result.metrics;
  ASSERT_EQ(m["per_stage"].size(), 3u);
  for (int s = 0; s < 3; ++s) {
    EXPECT_EQ(m["per_stage"][s]["stage"], s + 1);
    EXPECT_TRUE(m["per_stage"][s]["ne_image"]["avg"].is_number());
  }
  const auto& last = m["per_stage"].back();
  EXPECT_EQ(last["ne_image"]["avg"], m["ne_image"]["avg"]);
  EXPECT_EQ(last["ne_paper"]["avg"], m["ne_paper"]["avg"]);
  EXPECT_EQ(last["pck_0_2"], m["pck_0_2"]);
  // Untrained correction heads are not zero: the stages' answers differ.
  EXPECT_NE(m["per_stage"][0]["ne_image"]["avg"], last["ne_image"]["avg"]);
  EXPECT_NE(result.table.find("per stage ne_image: 1 "), std::string::npos) << result.table;
}

// The baseline by hand: the training garments' landmarks in box units, averaged, placed in the
// test box. Every test landmark is 3 px right and 4 px below that: 5 px off each.
TEST(Evaluate, MeanShapeIsTheAverageLayoutInTheTestBox) {
  const LandmarkSchema schema = LandmarkSchema::deepfashion();
  const int upper = schema.category_index("upper");
  const auto& slots = schema.categories[upper].landmarks;  // collars, sleeves, hems
  const auto garment = [&](Box box, const std::function<Keypoint(size_t)>& at) {
    Garment g;
    g.category = upper;
    g.box = box;
    g.keypoints.assign(schema.num_landmarks(), Keypoint{});
    for (size_t i = 0; i < slots.size(); ++i) g.keypoints[slots[i]] = at(i);
    return g;
  };
  const auto sample = [](Garment g, int width, int height) {
    Sample s;
    s.image = "unused.jpg";
    s.width = width;
    s.height = height;
    s.garments.push_back(std::move(g));
    return s;
  };
  Dataset train, test;
  train.schema = test.schema = schema;
  // Box units (0.1 + 0.1 i, 0.2) and (0.3 + 0.1 i, 0.4): mean (0.2 + 0.1 i, 0.3).
  train.samples.push_back(sample(garment({0, 0, 100, 100}, [](size_t i) {
    return Keypoint{float(100 * (0.1 + 0.1 * i)), 20, Visibility::Visible};
  }), 100, 100));
  train.samples.push_back(sample(garment({0, 0, 200, 100}, [](size_t i) {
    return Keypoint{float(200 * (0.3 + 0.1 * i)), 40, Visibility::Occluded};
  }), 200, 100));
  // Test box 200 x 200 at (100, 50): the mean shape puts landmark i at (140 + 20 i, 110).
  test.samples.push_back(sample(garment({100, 50, 300, 250}, [](size_t i) {
    return Keypoint{float(140 + 20 * i + 3), 110 + 4, Visibility::Visible};
  }), 400, 300));

  const nlohmann::json m = evaluate_mean_shape(train, test).metrics;
  EXPECT_EQ(m["crops"], 1);
  EXPECT_NEAR(m["epe_px"].get<double>(), 5.0, 1e-4);
  // Sleeves (slots 2 and 3 of the category) are 20 px apart: ne_paper 5 / 20.
  EXPECT_NEAR(m["ne_paper"]["avg"].get<double>(), 0.25, 1e-5);
  EXPECT_NEAR(m["ne_image"]["avg"].get<double>(), std::hypot(3.0 / 400, 4.0 / 300), 1e-6);
  EXPECT_EQ(m["pck_0_2"].get<double>(), 1.0);
  EXPECT_THROW(evaluate_mean_shape(Dataset{schema, {}, {}}, test), std::invalid_argument);
}

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

TEST(Train, TimeBudgetCutsTheScheduleToFit) {
  // 1000 epochs cannot fit in 0.1 minutes: training stops when the budget is spent, the schedule
  // compressed to the iterations that fit.
  Config cfg = small_config();
  cfg.train.epochs = 1000;
  cfg.train.time_limit_minutes = 0.1f;
  const Dataset train_set = load_split(synthetic_set(), "fld", "train", cfg, false);
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
  Dataset train_set = load_split(synthetic_set(), "fld", "train", cfg, false);
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
  Dataset train_set = load_split(synthetic_set(), "fld", "train", cfg, false);
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
    const Dataset train_set = load_split(synthetic_set(), "fld", "train", cfg, false);
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
  const Dataset train_set = load_split(synthetic_set(), "fld", "train", cfg, false);
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
  const Dataset train_set = load_split(synthetic_set(), "fld", "train", cfg, false);
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
  const Dataset train_set = load_split(synthetic_set(), "fld", "train", cfg, false);
  TrainOptions opt;
  opt.out_dir = dir.string();
  opt.progress = false;
  EXPECT_THROW(train(cfg, train_set, Dataset{train_set.schema, {}, {}}, opt), std::invalid_argument);
  std::ifstream in(dir / "model.cspn");
  std::string text;
  in >> text;
  EXPECT_EQ(text, "precious");
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

TEST(Process, HeapOnlyKeepsLargeBlocksOffTheMapsUntilSwitchedBack) {
  // Blocks above glibc's 32 MiB threshold are mapped unless the heap already has room for them.
  const auto blocks_mapped_by_a_malloc_of = [](size_t mib) {
    const size_t before = mallinfo2().hblks;
    auto* block = static_cast<volatile char*>(std::malloc(mib << 20));
    block[0] = 1;
    const size_t during = mallinfo2().hblks;
    std::free(const_cast<char*>(block));
    return during - before;
  };
  keep_freed_memory(/*heap_only=*/false);
  EXPECT_EQ(blocks_mapped_by_a_malloc_of(64), 1u);
  keep_freed_memory(/*heap_only=*/true);
  EXPECT_EQ(blocks_mapped_by_a_malloc_of(64), 0u);
  keep_freed_memory(/*heap_only=*/false);  // more than the heap now holds free
  EXPECT_EQ(blocks_mapped_by_a_malloc_of(256), 1u);
}
