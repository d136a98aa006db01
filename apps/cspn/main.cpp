// The cspn command: a thin client of the library. Each subcommand parses its flags and calls it.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "cspn/data/readers.hpp"
#include "cspn/data/synth.hpp"
#include "cspn/bench.hpp"
#include "cspn/detect/faster_rcnn.hpp"
#include "cspn/device.hpp"
#include "cspn/engine/predict.hpp"
#include "cspn/engine/progress.hpp"
#include "cspn/engine/bench_pipeline.hpp"
#include "cspn/engine/demo.hpp"
#include "cspn/engine/evaluate.hpp"
#include "cspn/engine/process.hpp"
#include "cspn/engine/report.hpp"
#include "cspn/engine/distributed.hpp"
#include "cspn/engine/train.hpp"
#include "cspn/io/atomic_file.hpp"
#include "cspn/io/model_file.hpp"
#include "cspn/model/info.hpp"
#include "cspn/serve.hpp"

namespace fs = std::filesystem;
using namespace cspn;

namespace {

// Exit codes (README, "Failure behaviour").
constexpr int kExitFailure = 1;   // anything else (a bug, out of memory, a NaN loss)
constexpr int kExitUsage = 2;     // bad flags, config keys or values
constexpr int kExitBadInput = 3;  // unreadable or malformed data, images or model files
constexpr int kExitIo = 4;        // a file or folder could not be written or reached (disk full,
                                  // permissions, a file where a folder should be)

// One line on stderr, whatever the message holds.
// Names the process in error messages where several run side by side ("rank 1: ").
std::string& error_prefix() {
  static std::string prefix;
  return prefix;
}

int fail(std::string message, int code) {
  std::replace(message.begin(), message.end(), '\n', ' ');
  std::cerr << "error: " << error_prefix() << message << "\n";
  return code;
}

void write_json(const std::string& path, const nlohmann::json& j) {
  write_file_atomically(path, j.dump(2) + "\n");
}

Config make_config(const std::string& file, const std::vector<std::string>& sets) {
  Config cfg;
  if (!file.empty()) cfg.load_yaml_file(file);
  for (const auto& s : sets) cfg.set(s);
  cfg.validate();
  return cfg;
}

// A model file with `--set` overrides of its settings (e.g. test.precision=bfloat16), validated.
ModelFile load_model_with(const std::string& path, const std::vector<std::string>& sets) {
  ModelFile model = load_model_file(path);
  for (const auto& s : sets) model.config.set(s);
  model.config.validate();
  return model;
}

int run_synth(const std::string& out, SynthOptions opt, const std::string& schema) {
  if (LandmarkSchema::load(schema).name != LandmarkSchema::deepfashion().name)
    throw std::invalid_argument("--schema " + schema + ": cspn synth draws DeepFashion's 8 landmarks only; schema " + schema +
                                " is served by real data (--format deepfashion2 or fashionai)");
  Progress bar("synth", opt.count, "img");
  synthesize(out, opt, [&](int done, int) { bar.update(done); });
  bar.finish();
  std::cout << "wrote " << opt.count << (opt.scenes ? " scenes" : " images") << " to " << out << "\n";
  return 0;
}

// Says how many malformed records --skip-bad dropped, and which: {"count", "records"} for the JSON.
nlohmann::json report_skipped(const Dataset& data) {
  if (!data.skipped.empty()) spdlog::warn("skipped {} malformed record(s):", data.skipped.size());
  for (const auto& msg : data.skipped) spdlog::warn("  {}", msg);
  return {{"count", data.skipped.size()}, {"records", data.skipped}};
}

int run_train(const std::string& config, const std::vector<std::string>& sets, const std::string& data,
              const std::string& format, bool skip_bad, TrainOptions opt) {
  const Config cfg = make_config(config, sets);
  skip_bad = skip_bad || cfg.data.skip_bad;
  const Dataset train_set = load_split(data, format, "train", cfg, skip_bad);
  Dataset val_set{train_set.schema, {}, {}};
  try {
    val_set = load_split(data, format, "val", cfg, skip_bad);
  } catch (const std::invalid_argument&) {
    spdlog::info("{} has no 'val' split: training without validation", data);
  }
  const nlohmann::json skipped = report_skipped(train_set);  // the whole file was read for either split
  opt.data_info = {{"path", fs::absolute(data).string()}, {"format", format}, {"train_images", train_set.samples.size()},
                   {"val_images", val_set.samples.size()}, {"holdout", cfg.data.holdout},
                   {"skipped", skipped["count"]}};
  // One rank of a data-parallel launch (torchrun, srun), or a process of its own. Under torchrun a
  // single rank gets its process group too, as PyTorch's scripts do.
  const LaunchInfo launch = launch_info_from_environment();
  if (launch.world_size > 1 || launch.launcher == "torchrun") {
    spdlog::set_pattern(fmt::format("[%H:%M:%S rank {}] %v", launch.rank));
    if (launch.rank != 0) spdlog::set_level(spdlog::level::warn);  // rank 0 reports for all
    error_prefix() = "rank " + std::to_string(launch.rank) + ": ";
    if (opt.device == "cuda") opt.device = "cuda:" + std::to_string(launch.local_rank);  // one GPU per rank
    opt.distributed = std::make_shared<Distributed>(launch, cfg.train.dist_timeout_s, parse_device(opt.device));
  }
  const TrainSummary summary = train(cfg, train_set, val_set, opt);
  std::cout << "trained " << summary.epochs << " epochs in " << summary.seconds / 60 << " min: " << summary.model_path
            << "\n";
  return 0;
}

int run_eval(const std::string& model_path, const std::string& data, const std::string& format,
             const std::string& split, const std::string& json, const std::vector<std::string>& sets,
             const std::string& baseline, const std::string& train_data, const std::string& report, EvalOptions opt,
             bool skip_bad) {
  if (!json.empty()) check_writable(json);  // before the evaluation, not after it
  if (!report.empty()) {
    std::error_code ec;
    fs::create_directories(report, ec);
    if (ec || !fs::is_directory(report)) throw IoError("cannot write the report folder " + report + ": " +
                                                       (ec ? ec.message() : "a file is in the way"));
    check_writable((fs::path(report) / "metrics.json").string());
  }
  EvalResult result;
  if (!baseline.empty()) {
    if (baseline != "mean-shape") throw std::invalid_argument("--baseline " + baseline + ": known: mean-shape");
    if (train_data.empty()) throw std::invalid_argument("--baseline mean-shape needs --train-data PATH");
    const Config cfg = make_config("", sets);
    const Dataset test = load_split(data, format, split, cfg, skip_bad);
    const Dataset train_set = load_split(train_data, format, "train", cfg, skip_bad);
    result = evaluate_mean_shape(train_set, test);
    result.metrics["model"] = "mean-shape";
  } else {
    if (model_path.empty()) throw std::invalid_argument("cspn eval needs --model FILE (or --baseline mean-shape)");
    const ModelFile model = load_model_with(model_path, sets);
    const Dataset test = load_split(data, format, split, model.config, skip_bad, &model.schema);
    const nlohmann::json skipped = report_skipped(test);
    result = evaluate_model(model, test, opt);
    result.metrics["model"] = model_path;
    result.metrics["skipped"] = skipped;
    // The training log next to the model file (a run folder) gives the report its loss curve.
    const auto run_log = fs::path(model_path).parent_path() / "log.jsonl";
    if (!report.empty())
      write_report(report, model, test, result, fs::exists(run_log) ? run_log.string() : "", 6, opt.device);
  }
  result.metrics["split"] = split;
  std::cout << result.table;
  if (!json.empty()) write_json(json, result.metrics);
  return 0;
}

struct PredictCommand {
  std::vector<std::string> inputs;
  std::string list, json, jsonl, shard, device = "cpu";
  std::vector<std::string> sets;
  float min_score = -1;
  PredictFilesOptions opt;
};

int run_predict(const std::string& model_path, const PredictCommand& cmd) {
  if (std::isnan(cmd.min_score)) throw std::invalid_argument("--min-score nan: expected a number from 0 to 1");
  for (const std::string& out : {cmd.json, cmd.jsonl})
    if (!out.empty()) check_writable(out);
  const ModelFile model = load_model_with(model_path, cmd.sets);
  Pipeline pipeline(model, parse_device(cmd.device));
  if (cmd.min_score >= 0) pipeline.set_min_score(cmd.min_score);
  std::vector<std::string> files = image_files(cmd.inputs);
  if (!cmd.list.empty()) {
    const auto listed = read_list_file(cmd.list);
    files.insert(files.end(), listed.begin(), listed.end());
  }
  if (!cmd.shard.empty()) {
    int index = -1, count = 0;
    char slash = 0, rest = 0;
    if (std::sscanf(cmd.shard.c_str(), "%d%c%d%c", &index, &slash, &count, &rest) != 3 || slash != '/')
      throw std::invalid_argument("--shard " + cmd.shard + ": expected I/N, e.g. 0/4");
    files = shard_files(files, index, count);
  }
  if (files.empty()) throw std::invalid_argument("no image files found in the given inputs");
  if (!cmd.jsonl.empty()) {
    const JsonlSummary s = predict_jsonl(pipeline, files, cmd.jsonl, cmd.opt);
    std::cerr << s.written << " images written (" << s.errors << " unreadable), " << s.done_before
              << " already in " << cmd.jsonl << "\n";
    if (s.written > 0 && s.errors == s.written) throw DataError("none of the " + std::to_string(s.written) + " images could be read");
    return 0;
  }
  auto result = predict_files(pipeline, files, cmd.opt);
  result["model"] = model_path;
  result["min_score"] = pipeline.min_score();
  for (const auto& e : result["errors"]) spdlog::warn("{}", e["error"].get<std::string>());
  if (result["images"].empty()) throw DataError("none of the " + std::to_string(files.size()) + " images could be read");
  std::string target = cmd.json;
  if (target.empty() && !cmd.opt.out_dir.empty()) target = (fs::path(cmd.opt.out_dir) / "predictions.json").string();
  if (target.empty()) {
    std::cout << result.dump(2) << "\n";
  } else {
    write_json(target, result);
    std::cerr << result["images"].size() << " images, " << result["annotations"].size() << " garments, "
              << result["errors"].size() << " unreadable files: " << target << "\n";
  }
  return 0;
}

// SIGINT and SIGTERM, blocked in the calling thread and so in every thread started after it: one
// thread then waits for them (sigwait) instead of the process dying in whichever thread gets them.
sigset_t block_stop_signals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return signals;
}

int run_serve(const std::string& model_path, const std::vector<std::string>& sets, const std::string& device,
              const std::string& token_file, ServeOptions opt, sigset_t signals) {
  if (!token_file.empty()) {
    std::ifstream in(token_file);
    if (!in) throw std::invalid_argument("--token-file " + token_file + ": cannot read");
    std::getline(in, opt.token);
    while (!opt.token.empty() && std::isspace(static_cast<unsigned char>(opt.token.back()))) opt.token.pop_back();
    if (opt.token.empty()) throw std::invalid_argument("--token-file " + token_file + ": the first line is empty");
  }
  const ModelFile model = load_model_with(model_path, sets);
  Pipeline pipeline(model, parse_device(device));
  Server server(pipeline, opt);
  const int port = server.bind();
  std::thread waiter([&] {
    int signal = 0;
    sigwait(&signals, &signal);
    std::cerr << "\n" << strsignal(signal) << ": finishing the requests in flight\n";
    server.stop();
  });
  std::cerr << "serving " << model_path << " on http://" << opt.host << ":" << port << "/ (" << device
            << ", batches of up to " << opt.max_batch << (opt.token.empty() ? "" : ", token required") << ")\n";
  server.run();
  waiter.join();
  std::cerr << "stopped\n";
  return 0;
}

const std::vector<std::string> kFormats{"fld", "deepfashion-c", "coco", "csv", "fashionai", "deepfashion2", "auto"};
const char* const kFormatHelp = "fld | deepfashion-c | coco | csv | fashionai | deepfashion2 | auto (landmarks in the schema "
                                "of data.schema)";

int run_info(const std::string& model_path, const std::string& config, const std::vector<std::string>& sets,
             bool backbones) {
  Config cfg;
  LandmarkSchema schema = LandmarkSchema::deepfashion();
  if (!model_path.empty()) {
    const ModelFile model = load_model_file(model_path);
    cfg = model.config;
    schema = model.schema;
    std::cout << "model file " << model_path << "\n" << model.extra.dump(2) << "\n";
  } else {
    cfg = make_config(config, sets);
    schema = LandmarkSchema::load(cfg.data.schema);
  }
  require_memory(cfg, /*training=*/false, torch::kCPU, "cspn info");
  std::cout << describe_model(cfg, schema);
  if (backbones)
    std::cout << "\n" << describe_backbones(cfg.model.keypoints.input_size[0], cfg.model.keypoints.input_size[1]);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // OpenBLAS reads OPENBLAS_CORETYPE only while loading: where it fell back to a generic kernel for
  // this CPU, start again with the right one (the box heads' linear layers run 2-3x faster).
  if (!std::getenv("OPENBLAS_CORETYPE")) {
    const std::string core = better_blas_core();
    if (!core.empty() && setenv("OPENBLAS_CORETYPE", core.c_str(), 1) == 0) execv("/proc/self/exe", argv);
  }
  CLI::App app{"cspn: clothing landmark detection (Cascaded Stacked Pyramid Network)"};
  app.require_subcommand(1);
  // Logs go to stderr: standard output carries results (predict's JSON) and nothing else.
  spdlog::set_default_logger(spdlog::stderr_color_mt("cspn"));
  spdlog::set_pattern("[%H:%M:%S] %v");

  auto* synth = app.add_subcommand("synth", "write a synthetic garment data set (FLD layout, or COCO scenes)");
  std::string synth_out;
  SynthOptions synth_opt;
  synth->add_option("--out", synth_out, "output folder")->required();
  synth->add_option("--count", synth_opt.count, "number of images")->check(CLI::PositiveNumber);
  synth->add_option("--seed", synth_opt.seed, "random seed (same seed, same data)");
  std::string synth_schema = "deepfashion";
  synth->add_option("--schema", synth_schema, "landmark schema (only deepfashion can be synthesized)");
  synth->add_flag("--scenes", synth_opt.scenes, "1..4 garments per image, COCO keypoint JSON");
  synth->add_option("--width", synth_opt.width, "image width")->check(CLI::Range(64, 4096));
  synth->add_option("--height", synth_opt.height, "image height")->check(CLI::Range(64, 4096));

  auto* train_cmd = app.add_subcommand(
      "train", "train a model (one rank of a data-parallel run where torchrun's RANK, WORLD_SIZE, ... or "
               "Slurm's SLURM_PROCID, SLURM_NTASKS, ... are set)");
  std::string config, data, format = "auto";
  std::vector<std::string> sets;
  TrainOptions train_opt;
  bool quiet = false, skip_bad = false;
  train_cmd->add_option("--config", config, "YAML config (overrides the built-in defaults)")->check(CLI::ExistingFile);
  train_cmd->add_option("--set", sets, "override a config key: section.key=value (repeatable)");
  train_cmd->add_option("--data", data, "dataset path")->required();
  train_cmd->add_option("--format", format, kFormatHelp)->check(CLI::IsMember(kFormats));
  train_cmd->add_option("--out", train_opt.out_dir, "run folder (model.cspn, checkpoint-<phase>.pt, log.jsonl, config.yaml)")->required();
  train_cmd->add_option("--device", train_opt.device, "cpu | cuda | cuda:N");
  train_cmd->add_flag("--resume", train_opt.resume, "continue the run in --out from its last checkpoint");
  train_cmd->add_flag("--skip-bad", skip_bad, "report and skip malformed records instead of failing");
  train_cmd->add_flag("--quiet", quiet, "no progress bar");

  auto* eval = app.add_subcommand("eval", "evaluate landmarks (both NE protocols, PCK@0.2, pixel error)");
  std::string model_path, split = "test", json, baseline, train_data, report;
  EvalOptions eval_opt;
  eval->add_option("--model", model_path, "model file (.cspn)")->check(CLI::ExistingFile);
  eval->add_option("--data", data, "dataset path")->required();
  eval->add_option("--format", format, kFormatHelp)->check(CLI::IsMember(kFormats));
  eval->add_option("--split", split, "train | val | test | all");
  eval->add_option("--json", json, "write the metrics as JSON here");
  eval->add_option("--boxes", eval_opt.boxes,
                   "garment boxes: gt (ground truth), detector (the model's detector: CSPN), image (whole image: NCSPN)")
      ->check(CLI::IsMember({"gt", "detector", "image"}));
  eval->add_option("--device", eval_opt.device, "cpu | cuda | cuda:N");
  eval->add_option("--set", sets, "override a config key, e.g. test.flip=false or data.holdout=0.3");
  eval->add_option("--baseline", baseline, "evaluate a baseline instead of a model: mean-shape");
  eval->add_option("--train-data", train_data, "training data for --baseline mean-shape");
  eval->add_option("--report", report, "also write a report folder (metrics, example images)");
  eval->add_flag("--skip-bad", skip_bad, "report and skip malformed records instead of failing");
  eval->add_flag("--quiet", quiet, "no progress bar");

  auto* predict = app.add_subcommand("predict", "detect garments and their landmarks in photos");
  PredictCommand pc;
  predict->add_option("--model", model_path, "model file with both halves (.cspn)")->required()->check(CLI::ExistingFile);
  predict->add_option("--out", pc.opt.out_dir, "write rendered images (and predictions.json) here");
  auto* predict_json = predict->add_option("--json", pc.json, "write the predictions here (default: OUT/predictions.json, else stdout)");
  predict->add_option("--jsonl", pc.jsonl, "append one JSON line per image here as it goes; a rerun skips images already written")
      ->excludes(predict_json);
  predict->add_option("--list", pc.list, "a text file of image paths, one per line (relative to its folder)")
      ->check(CLI::ExistingFile);
  predict->add_option("--shard", pc.shard, "I/N: only this job's share of the images (stable hash of the path)");
  predict->add_option("--workers", pc.opt.workers, "chunks of images decoded ahead of the model (0: none)")
      ->check(CLI::Range(0, 64));
  predict->add_option("--device", pc.device, "cpu | cuda | cuda:N");
  predict->add_option("--min-score", pc.min_score,
                      "report garments detected with at least this score (default: the model's test.min_score, 0.5)")
      ->check(CLI::Range(0.0, 1.0));
  predict->add_option("--set", pc.sets, "override a setting of the model, e.g. test.precision=bfloat16 or test.flip=false");
  predict->add_flag("--quiet", quiet, "no progress bar");
  predict->add_option("inputs", pc.inputs, "image files or folders (searched recursively)");

  auto* serve = app.add_subcommand("serve", "answer HTTP requests (POST /v1/landmarks) and serve a web page at /");
  ServeOptions serve_opt;
  std::string serve_device = "cpu", token_file;
  double max_body_mb = serve_opt.max_body_bytes / double(1 << 20);
  serve->add_option("--model", model_path, "model file with both halves (.cspn)")->required()->check(CLI::ExistingFile);
  serve->add_option("--host", serve_opt.host, "address to listen on (0.0.0.0: every interface)");
  serve->add_option("--port", serve_opt.port, "port (0: any free one)")->check(CLI::Range(0, 65535));
  serve->add_option("--threads", serve_opt.threads, "connection threads")->check(CLI::Range(1, 1024));
  serve->add_option("--max-batch", serve_opt.max_batch, "images per pipeline call (1: no batching)")->check(CLI::Range(1, 256));
  serve->add_option("--max-wait-ms", serve_opt.max_wait_ms, "how long a batch waits for more images")->check(CLI::Range(0.0, 1000.0));
  serve->add_option("--max-queue", serve_opt.max_queue, "images waiting before 503")->check(CLI::Range(1, 100000));
  serve->add_option("--max-body-mb", max_body_mb, "largest request body (413 beyond)")->check(CLI::Range(0.001, 1024.0));
  serve->add_option("--max-pixels", serve_opt.max_pixels, "largest image, width x height (413 beyond)")
      ->check(CLI::Range(1L, 1'000'000'000L));
  serve->add_option("--timeout", serve_opt.timeout_s, "seconds before a request gets 504")->check(CLI::Range(0.1, 3600.0));
  serve->add_option("--token-file", token_file, "require 'Authorization: Bearer TOKEN', TOKEN the file's first line")
      ->check(CLI::ExistingFile);
  serve->add_option("--device", serve_device, "cpu | cuda | cuda:N");
  serve->add_option("--set", sets, "override a setting of the model, e.g. test.precision=bfloat16");

  auto* info = app.add_subcommand("info", "parameters and GFLOPs per stage of a model or config");
  auto* info_model = info->add_option("--model", model_path, "model file")->check(CLI::ExistingFile);
  info->add_option("--config", config, "YAML config")->check(CLI::ExistingFile)->excludes(info_model);
  info->add_option("--set", sets, "override a config key");
  bool info_backbones = false;
  info->add_flag("--backbones", info_backbones, "also list every backbone a config can name: channels, parameters, GFLOPs");

  auto* bench = app.add_subcommand("bench", "latency of the landmark network per crop");
  BenchOptions bench_opt;
  std::string bench_json;
  bench->add_option("--backbones", bench_opt.backbones, "backbones to time");
  bench->add_option("--stages", bench_opt.stages, "stage counts to time");
  bench->add_option("--batches", bench_opt.batches, "batch sizes");
  bench->add_option("--threads", bench_opt.threads, "intra-op threads (0: LibTorch default)");
  bench->add_option("--device", bench_opt.device, "cpu | cuda");
  bench->add_option("--iters", bench_opt.iters, "timed runs per case (median reported)");
  bench->add_option("--input", bench_opt.input_size, "crop height and width")->expected(2);
  bench->add_option("--json", bench_json, "write the results as JSON here");
  PipelineBenchOptions pipeline_opt;
  std::vector<std::string> bench_parts{"landmarks", "pipeline"};
  std::string bench_io, bench_data_path, bench_format = "auto";
  bench->add_option("--parts", bench_parts,
                    "what to time: landmarks (network per crop), pipeline (per image), data (training crops/s)")
      ->check(CLI::IsMember({"landmarks", "pipeline", "data"}));
  auto* bench_model = bench->add_option("--model", pipeline_opt.model, "pipeline: a trained model file (default: untrained weights)")
                          ->check(CLI::ExistingFile);
  bench->add_option("--config", pipeline_opt.config, "pipeline: time untrained weights of this config")
      ->check(CLI::ExistingFile)->excludes(bench_model);
  bench->add_option("--set", pipeline_opt.sets, "pipeline: override a key of the model's or config's settings, e.g. test.precision=bfloat16");
  bench->add_option("--images", pipeline_opt.images, "pipeline: time these photos (a folder; default: synthetic images)")
      ->check(CLI::ExistingDirectory);
  bench->add_option("--image-sizes", pipeline_opt.sizes, "pipeline: detector input sizes, shorter side (default: the model's)");
  bench->add_option("--image-batches", pipeline_opt.batches, "pipeline: images per call for the throughput column")
      ->check(CLI::Range(1, 256));
  bench->add_option("--garments", pipeline_opt.garments, "pipeline: garments per image")->check(CLI::PositiveNumber);
  bool bench_no_train_step = false;
  bench->add_flag("--no-train-step", bench_no_train_step, "pipeline: leave out the landmark network's training step");
  bench->add_option("--data", bench_data_path, "data: an annotated data set (its photos are decoded, cropped, augmented)");
  bench->add_option("--format", bench_format, "data: fld | coco | csv | auto");
  bench->add_option("--io", bench_io, "pipeline: write a seeded crop batch and the landmark network's heatmaps per "
                                      "stage to this safetensors file (to check another implementation against)");

  auto* demo = app.add_subcommand("demo", "synthesize scenes, train both halves, find garments in photos, write a report");
  DemoOptions demo_opt;
  demo->add_option("--out", demo_opt.out_dir, "work folder");
  demo->add_option("--minutes", demo_opt.minutes, "training time budget")->check(CLI::PositiveNumber);
  demo->add_option("--count", demo_opt.count, "synthetic scenes")->check(CLI::Range(20, 100000));
  demo->add_option("--photos", demo_opt.photos, "also run the pipeline on photos of this folder (when present)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kExitUsage;  // --help is not an error
  }
  sigset_t stop_signals{};
  if (*serve) stop_signals = block_stop_signals();  // before LibTorch starts its threads
  try {
    use_threads(0);
    // Inference: the same sizes again and again (bench's timed training step maps its large blocks).
    keep_freed_memory(/*heap_only=*/*eval || *predict || *serve || *bench);
    if (*synth) return run_synth(synth_out, synth_opt, synth_schema);
    if (*train_cmd) {
      train_opt.progress = !quiet;
      return run_train(config, sets, data, format, skip_bad, train_opt);
    }
    if (*eval) {
      eval_opt.progress = !quiet;
      return run_eval(model_path, data, format, split, json, sets, baseline, train_data, report, eval_opt, skip_bad);
    }
    if (*predict) {
      pc.opt.progress = !quiet;
      return run_predict(model_path, pc);
    }
    if (*serve) {
      serve_opt.max_body_bytes = static_cast<size_t>(max_body_mb * (1 << 20));
      return run_serve(model_path, sets, serve_device, token_file, serve_opt, stop_signals);
    }
    if (*info) {
      if (model_path.empty() && config.empty()) throw std::invalid_argument("cspn info needs --model FILE or --config FILE");
      return run_info(model_path, config, sets, info_backbones);
    }
    if (*bench) {
      nlohmann::json result;
      const auto wants = [&](const char* part) {
        return std::find(bench_parts.begin(), bench_parts.end(), part) != bench_parts.end();
      };
      if (wants("landmarks")) result = run_bench(bench_opt, std::cout);
      pipeline_opt.device = bench_opt.device;
      pipeline_opt.iters = bench_opt.iters;
      pipeline_opt.train_step = !bench_no_train_step;
      pipeline_opt.input_size = bench_opt.input_size;
      if (wants("pipeline") || wants("data")) use_threads(bench_opt.threads);
      if (wants("pipeline")) {
        result["pipeline"] = bench_pipeline(pipeline_opt, std::cout);
        result["landmark_network"] = bench_landmark_gflops(pipeline_opt, std::cout);
        if (!bench_io.empty()) write_landmark_io(pipeline_opt, bench_io);
      }
      if (wants("data")) {
        if (bench_data_path.empty()) throw std::invalid_argument("cspn bench --parts data needs --data PATH");
        result["data"] = bench_data(pipeline_opt, bench_data_path, bench_format, std::cout);
      }
      if (!bench_json.empty()) write_json(bench_json, result);
      return 0;
    }
    if (*demo) {
      const DemoResult demo_result = run_demo(demo_opt);
      std::cout << "\nreport: open " << fs::absolute(demo_result.page).string() << " in a browser\n"
                << "serve the model: build/cspn serve --model " << demo_result.model
                << "   (then open http://127.0.0.1:8080/)\n";
      return 0;
    }
  } catch (const c10::Error& e) {  // LibTorch's own: its message without the C++ backtrace
    return fail(e.what_without_backtrace(), kExitFailure);
  } catch (const std::invalid_argument& e) {
    return fail(e.what(), kExitUsage);
  } catch (const DataError& e) {
    return fail(e.what(), kExitBadInput);
  } catch (const IoError& e) {
    return fail(e.what(), kExitIo);
  } catch (const std::filesystem::filesystem_error& e) {  // a folder that cannot be made or read
    return fail(e.what(), kExitIo);
  } catch (const std::exception& e) {
    return fail(e.what(), kExitFailure);
  }
  return 0;
}
