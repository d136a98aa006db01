#include "cspn/commands/commands.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <ostream>

#include <spdlog/spdlog.h>

#include "cspn/api/pipeline.hpp"
#include "cspn/commands/report.hpp"
#include "cspn/core/io/atomic_file.hpp"
#include "cspn/core/model/info.hpp"
#include "cspn/engine/distributed.hpp"
#include "cspn/engine/progress.hpp"

namespace fs = std::filesystem;

namespace cspn {
namespace {

void write_json(const std::string& path, const nlohmann::json& j) { write_file_atomically(path, j.dump(2) + "\n"); }

// Says how many malformed records --skip-bad dropped, and which: {"count", "records"} for the JSON.
nlohmann::json report_skipped(const Dataset& data) {
  if (!data.skipped.empty()) spdlog::warn("skipped {} malformed record(s):", data.skipped.size());
  for (const auto& msg : data.skipped) spdlog::warn("  {}", msg);
  return {{"count", data.skipped.size()}, {"records", data.skipped}};
}

// Data-parallel training joins a process group where a launcher started several ranks; under
// torchrun a single rank gets its process group too, as PyTorch's scripts do.
bool launched_in_group(const LaunchInfo& launch) { return launch.world_size > 1 || launch.launcher == "torchrun"; }

}  // namespace

ModelFile load_model_with(const std::string& path, const std::vector<std::string>& sets) {
  ModelFile model = load_model_file(path);
  model.config = Config::resolve("", sets, model.config);
  return model;
}

std::string synth_command(const std::string& out, const SynthOptions& opt, const std::string& schema, bool progress) {
  require_synthesizable(LandmarkSchema::load(schema), "--schema " + schema,
                        "that schema is served by real data (--format deepfashion2 or fashionai)");
  Progress bar("synth", opt.count, "img", progress);
  synthesize(out, opt, [&](int done, int) { bar.update(done); });
  bar.finish();
  return "wrote " + std::to_string(opt.count) + (opt.scenes ? " scenes" : " images") + " to " + out;
}

int launch_rank() {
  const LaunchInfo launch = launch_info_from_environment();
  return launched_in_group(launch) ? launch.rank : -1;
}

TrainSummary train_command(TrainCommand cmd) {
  Config cfg = Config::resolve(cmd.config, cmd.sets, cmd.base);
  if (!cmd.unlabelled.empty()) {
    cfg.data.unlabelled = fs::absolute(cmd.unlabelled).string();
    cfg.validate();
  }
  const bool skip_bad = cmd.skip_bad || cfg.data.skip_bad;
  const Splits splits = read_splits(cmd.data, cmd.format, cfg, skip_bad);
  const Dataset& train_set = splits.get("train");
  if (splits.val.samples.empty()) spdlog::info("{} has no 'val' split: training without validation", cmd.data);
  const nlohmann::json skipped = report_skipped(splits.all);
  TrainOptions& opt = cmd.options;
  opt.data_info = {{"path", fs::absolute(cmd.data).string()}, {"format", cmd.format},
                   {"train_images", train_set.samples.size()}, {"val_images", splits.val.samples.size()},
                   {"holdout", cfg.data.holdout}, {"skipped", skipped["count"]}};
  const LaunchInfo launch = launch_info_from_environment();
  if (launched_in_group(launch)) {
    if (opt.device == "cuda") opt.device = "cuda:" + std::to_string(launch.local_rank);  // one GPU per rank
    opt.distributed = std::make_shared<Distributed>(launch, cfg.train.dist_timeout_s, parse_device(opt.device));
  }
  return train(cfg, train_set, splits.val, opt);
}

EvalResult evaluate_command(const EvalCommand& cmd, std::ostream& out) {
  if (!cmd.json.empty()) check_writable(cmd.json);  // before the evaluation, not after it
  if (!cmd.report.empty()) {
    std::error_code ec;
    fs::create_directories(cmd.report, ec);
    if (ec || !fs::is_directory(cmd.report))
      throw IoError("cannot write the report folder " + cmd.report + ": " + (ec ? ec.message() : "a file is in the way"));
    check_writable((fs::path(cmd.report) / "metrics.json").string());
  }
  EvalResult result;
  if (!cmd.baseline.empty()) {
    if (cmd.baseline != "mean-shape") throw std::invalid_argument("--baseline " + cmd.baseline + ": known: mean-shape");
    if (cmd.train_data.empty()) throw std::invalid_argument("--baseline mean-shape needs --train-data PATH");
    const Config cfg = Config::resolve("", cmd.sets);
    const Dataset test = read_split(cmd.data, cmd.format, cmd.split, cfg, cmd.skip_bad);
    const Dataset train_set = read_split(cmd.train_data, cmd.format, "train", cfg, cmd.skip_bad);
    result = evaluate_mean_shape(train_set, test);
    result.metrics["model"] = "mean-shape";
  } else {
    if (cmd.model.empty()) throw std::invalid_argument("cspn eval needs --model FILE (or --baseline mean-shape)");
    const ModelFile model = load_model_with(cmd.model, cmd.sets);
    const Dataset test = read_split(cmd.data, cmd.format, cmd.split, model.config, cmd.skip_bad, &model.schema);
    const nlohmann::json skipped = report_skipped(test);
    result = evaluate_model(model, test, cmd.options);
    result.metrics["model"] = cmd.model;
    result.metrics["skipped"] = skipped;
    // The training log next to the model file (a run folder) gives the report its loss curve.
    const auto run_log = fs::path(cmd.model).parent_path() / "log.jsonl";
    if (!cmd.report.empty())
      write_report(cmd.report, model, test, result, fs::exists(run_log) ? run_log.string() : "", 6, cmd.options.device);
  }
  result.metrics["split"] = cmd.split;
  out << result.table << std::flush;
  if (!cmd.json.empty()) write_json(cmd.json, result.metrics);
  return result;
}

void predict_command(const PredictCommand& cmd, std::ostream& out, std::ostream& log) {
  if (std::isnan(cmd.min_score)) throw std::invalid_argument("--min-score nan: expected a number from 0 to 1");
  for (const std::string& path : {cmd.json, cmd.jsonl})
    if (!path.empty()) check_writable(path);
  std::vector<std::string> files = image_files(cmd.inputs);
  if (!cmd.list.empty()) {
    const auto listed = read_list_file(cmd.list);
    files.insert(files.end(), listed.begin(), listed.end());
  }
  if (files.empty()) throw std::invalid_argument("no image files found in the given inputs");
  const size_t duplicates = drop_duplicates(files);
  const std::string duplicates_note =
      duplicates ? ", " + std::to_string(duplicates) + " repeated paths skipped (each image is predicted once)" : "";
  if (!cmd.shard.empty()) {
    int index = -1, count = 0;
    char slash = 0, rest = 0;
    if (std::sscanf(cmd.shard.c_str(), "%d%c%d%c", &index, &slash, &count, &rest) != 3 || slash != '/')
      throw std::invalid_argument("--shard " + cmd.shard + ": expected I/N, e.g. 0/4");
    const size_t all = files.size();
    files = shard_files(files, index, count);
    if (files.empty()) {  // normal in a large job array: this job has nothing to do
      log << "shard " << cmd.shard << " of " << all << " images is empty: nothing to predict, nothing written\n";
      return;
    }
  }
  const ModelFile model = load_model_with(cmd.model, cmd.sets);
  Pipeline pipeline(model, parse_device(cmd.device));
  if (cmd.min_score >= 0) pipeline.set_min_score(cmd.min_score);
  if (!cmd.jsonl.empty()) {
    const JsonlSummary s = predict_jsonl(pipeline, files, cmd.jsonl, cmd.options);
    log << s.written << " images written (" << s.errors << " unreadable), " << s.done_before << " already in "
        << cmd.jsonl << duplicates_note << "\n";
    if (s.written > 0 && s.errors == s.written)
      throw DataError("none of the " + std::to_string(s.written) + " images could be read");
    return;
  }
  auto result = predict_files(pipeline, files, cmd.options);
  result["model"] = cmd.model;
  result["min_score"] = pipeline.min_score();
  result["duplicates_skipped"] = duplicates;
  for (const auto& e : result["errors"]) spdlog::warn("{}", e["error"].get<std::string>());
  if (result["images"].empty()) throw DataError("none of the " + std::to_string(files.size()) + " images could be read");
  std::string target = cmd.json;
  if (target.empty() && !cmd.options.out_dir.empty())
    target = (fs::path(cmd.options.out_dir) / "predictions.json").string();
  if (target.empty()) {
    out << result.dump(2) << "\n";
  } else {
    write_json(target, result);
    log << result["images"].size() << " images, " << result["annotations"].size() << " garments, "
        << result["errors"].size() << " unreadable files" << duplicates_note << ": " << target << "\n";
  }
}

void info_command(const std::string& model_path, const std::string& config, const std::vector<std::string>& sets,
                  bool backbones, std::ostream& out) {
  if (model_path.empty() && config.empty()) throw std::invalid_argument("cspn info needs --model FILE or --config FILE");
  Config cfg;
  LandmarkSchema schema = LandmarkSchema::deepfashion();
  if (!model_path.empty()) {
    const ModelFile model = load_model_file(model_path);
    cfg = model.config;
    schema = model.schema;
    out << "model file " << model_path << "\n" << model.extra.dump(2) << "\n";
  } else {
    cfg = Config::resolve(config, sets);
    schema = LandmarkSchema::load(cfg.data.schema_or_default());
  }
  require_memory(cfg, /*training=*/false, torch::kCPU, "cspn info");
  out << describe_model(cfg, schema);
  if (backbones) out << "\n" << describe_backbones(cfg.model.keypoints.input_size[0], cfg.model.keypoints.input_size[1]);
}

nlohmann::json landmark_costs(const Config& cfg, const LandmarkSchema& schema) {
  require_memory(cfg, /*training=*/false, torch::kCPU, "the landmark network's costs");
  CSPNNet net(cfg.model.keypoints, schema.num_landmarks());
  nlohmann::json parts = nlohmann::json::array();
  for (const PartCost& part : cspn_costs(net, cfg.model.keypoints.input_size[0], cfg.model.keypoints.input_size[1]))
    parts.push_back({{"name", part.name}, {"params", part.params}, {"gflops", part.gflops}});
  return parts;
}

nlohmann::json bench_command(BenchCommand cmd, std::ostream& out) {
  nlohmann::json result;
  const auto wants = [&](const char* part) { return std::find(cmd.parts.begin(), cmd.parts.end(), part) != cmd.parts.end(); };
  if (wants("landmarks")) result = run_bench(cmd.landmarks, out);
  PipelineBenchOptions& p = cmd.pipeline;
  p.device = cmd.landmarks.device;
  p.iters = cmd.landmarks.iters;
  p.train_step = cmd.train_step;
  p.input_size = cmd.landmarks.input_size;
  if (wants("pipeline") || wants("data")) use_threads(cmd.landmarks.threads);
  if (wants("pipeline")) {
    result["pipeline"] = bench_pipeline(p, out);
    result["landmark_network"] = bench_landmark_gflops(p, out);
    if (!cmd.io.empty()) write_landmark_io(p, cmd.io);
  }
  if (wants("data")) {
    if (cmd.data.empty()) throw std::invalid_argument("cspn bench --parts data needs --data PATH");
    result["data"] = bench_data(p, cmd.data, cmd.format, out);
  }
  if (!cmd.json.empty()) write_json(cmd.json, result);
  return result;
}

}  // namespace cspn
