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

#include "cspn/cspn.hpp"
#include "cspn/serve/label.hpp"
#include "cspn/serve/server.hpp"

namespace fs = std::filesystem;
using namespace cspn;

namespace {

// Exit codes (docs/failures.md).
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

// Runs `server` (cspn serve or cspn label) until SIGINT or SIGTERM, then lets it finish what is in
// flight. Says "<what> on http://host:port/ <details>" once it listens.
template <class S>
int serve_until_signal(S& server, sigset_t signals, const std::string& what, const std::string& host,
                       const std::string& details) {
  const int port = server.bind();
  std::thread waiter([&] {
    int signal = 0;
    sigwait(&signals, &signal);
    std::cerr << "\n" << strsignal(signal) << ": finishing the requests in flight\n";
    server.stop();
  });
  std::cerr << what << " on http://" << host << ":" << port << "/ " << details << "\n";
  server.run();
  waiter.join();
  std::cerr << "stopped\n";
  return 0;
}

int run_serve(const std::string& model_path, const std::vector<std::string>& sets, const std::string& device,
              const std::string& token_file, ServeOptions opt, sigset_t signals) {
  if (!token_file.empty()) opt.token = read_token_file(token_file);
  const ModelFile model = load_model_with(model_path, sets);
  Pipeline pipeline(model, parse_device(device));
  Server server(pipeline, opt);
  return serve_until_signal(server, signals, "serving " + model_path, opt.host,
                            "(" + device + ", batches of up to " + std::to_string(opt.max_batch) +
                                (opt.token.empty() ? "" : ", token required") + ")");
}

int run_label(LabelOptions opt, const std::string& token_file, sigset_t signals) {
  if (!token_file.empty()) opt.http.token = read_token_file(token_file);
  LabelServer server(opt);
  return serve_until_signal(server, signals, "labelling " + opt.images, opt.http.host,
                            "(saving to " + opt.out + (opt.http.token.empty() ? "" : ", token required") + ")");
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

  const std::string format_help =
      data_format_help() + "; landmarks in the schema of data.schema (unset: the format's own, else deepfashion)";
  auto* synth = app.add_subcommand("synth", "write a synthetic garment data set (FLD layout, or COCO scenes)");
  std::string synth_out;
  SynthOptions synth_opt;
  synth->add_option("--out", synth_out, "output folder")->required();
  synth->add_option("--count", synth_opt.count, "number of images")->check(CLI::PositiveNumber);
  synth->add_option("--seed", synth_opt.seed, "random seed (same seed, same data)");
  std::string synth_schema = "deepfashion";
  synth->add_option("--schema", synth_schema, "landmark schema (only deepfashion can be synthesized)");
  synth->add_flag("--scenes", synth_opt.scenes, "1..4 garments per image, COCO keypoint JSON");
  synth->add_option("--hanging", synth_opt.hanging,
                    "share of garments hanging as from grippers or a hanger, sleeves down (default 0)")
      ->check(CLI::Range(0.0, 1.0));
  synth->add_option("--width", synth_opt.width, "image width")->check(CLI::Range(64, 4096));
  synth->add_option("--height", synth_opt.height, "image height")->check(CLI::Range(64, 4096));

  auto* train_cmd = app.add_subcommand(
      "train", "train a model (one rank of a data-parallel run where torchrun's RANK, WORLD_SIZE, ... or "
               "Slurm's SLURM_PROCID, SLURM_NTASKS, ... are set)");
  TrainCommand tc;
  bool quiet = false;
  train_cmd->add_option("--config", tc.config, "YAML config (overrides the built-in defaults)")->check(CLI::ExistingFile);
  train_cmd->add_option("--set", tc.sets, "override a config key: section.key=value (repeatable)");
  train_cmd->add_option("--data", tc.data, "dataset path")->required();
  train_cmd->add_option("--format", tc.format, format_help)->check(CLI::IsMember(data_format_names()));
  train_cmd->add_option("--out", tc.options.out_dir, "run folder (model.cspn, checkpoint-<phase>.pt, log.jsonl, config.yaml)")->required();
  train_cmd->add_option("--device", tc.options.device, "cpu | cuda | cuda:N");
  train_cmd->add_flag("--resume", tc.options.resume, "continue the run in --out from its last checkpoint");
  train_cmd->add_option("--unlabelled", tc.unlabelled,
                        "a folder of photos without labels (searched recursively): after the labelled data, both "
                        "halves train on it too, with the model's confident predictions as labels (data.unlabelled, "
                        "section semi)");
  train_cmd->add_flag("--skip-bad", tc.skip_bad, "report and skip malformed records instead of failing");
  train_cmd->add_flag("--quiet", quiet, "no progress bar");

  auto* eval = app.add_subcommand("eval", "evaluate landmarks (both NE protocols, PCK@0.2, pixel error)");
  EvalCommand ec;
  eval->add_option("--model", ec.model, "model file (.cspn)")->check(CLI::ExistingFile);
  eval->add_option("--data", ec.data, "dataset path")->required();
  eval->add_option("--format", ec.format, format_help)->check(CLI::IsMember(data_format_names()));
  eval->add_option("--split", ec.split, "train | val | test | all");
  eval->add_option("--json", ec.json, "write the metrics as JSON here");
  eval->add_option("--boxes", ec.options.boxes,
                   "garment boxes: gt (ground truth), detector (the model's detector: CSPN), image (whole image: NCSPN)")
      ->check(CLI::IsMember({"gt", "detector", "image"}));
  eval->add_option("--device", ec.options.device, "cpu | cuda | cuda:N");
  eval->add_option("--set", ec.sets, "override a config key, e.g. test.flip=false or data.holdout=0.3");
  eval->add_option("--baseline", ec.baseline, "evaluate a baseline instead of a model: mean-shape");
  eval->add_option("--train-data", ec.train_data, "training data for --baseline mean-shape");
  eval->add_option("--report", ec.report, "also write a report folder (metrics, example images)");
  eval->add_flag("--skip-bad", ec.skip_bad, "report and skip malformed records instead of failing");
  eval->add_flag("--quiet", quiet, "no progress bar");

  auto* predict = app.add_subcommand("predict", "detect garments and their landmarks in photos");
  PredictCommand pc;
  predict->add_option("--model", pc.model, "model file with both halves (.cspn)")->required()->check(CLI::ExistingFile);
  predict->add_option("--out", pc.options.out_dir, "write rendered images (and predictions.json) here");
  auto* predict_json = predict->add_option("--json", pc.json, "write the predictions here (default: OUT/predictions.json, else stdout)");
  predict->add_option("--jsonl", pc.jsonl, "append one JSON line per image here as it goes; a rerun skips images already written")
      ->excludes(predict_json);
  predict->add_option("--list", pc.list, "a text file of image paths, one per line (relative to its folder)")
      ->check(CLI::ExistingFile);
  predict->add_option("--shard", pc.shard, "I/N: only this job's share of the images (stable hash of the path)");
  predict->add_option("--workers", pc.options.workers, "chunks of images decoded ahead of the model (0: none)")
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
  std::string serve_model, serve_device = "cpu", token_file;
  std::vector<std::string> serve_sets;
  double max_body_mb = serve_opt.max_body_bytes / double(1 << 20);
  serve->add_option("--model", serve_model, "model file with both halves (.cspn)")->required()->check(CLI::ExistingFile);
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
  serve->add_option("--set", serve_sets, "override a setting of the model, e.g. test.precision=bfloat16");

  auto* label = app.add_subcommand("label", "label photos in the browser (COCO keypoints JSON), with a model's suggestions");
  LabelOptions label_opt;
  std::string label_token_file;
  label->add_option("--images", label_opt.images, "folder of photos (searched recursively)")->required()->check(CLI::ExistingDirectory);
  label->add_option("--out", label_opt.out, "COCO keypoints JSON, written on every change (continued where it exists)")->required();
  label->add_option("--model", label_opt.model, "model file: its predictions to start from, most uncertain photos first")
      ->check(CLI::ExistingFile);
  label->add_option("--schema", label_opt.schema, "landmark schema without a model: deepfashion, deepfashion2, fashionai or a YAML file");
  label->add_option("--config", label_opt.config, "settings for the retrain button (default: the model's)")->check(CLI::ExistingFile);
  label->add_option("--set", label_opt.sets, "override a setting of the model or of retraining, e.g. train.iters=500");
  label->add_option("--host", label_opt.http.host, "address to listen on (0.0.0.0: every interface)");
  label->add_option("--port", label_opt.http.port, "port (0: any free one)")->check(CLI::Range(0, 65535));
  label->add_option("--token-file", label_token_file, "require 'Authorization: Bearer TOKEN', TOKEN the file's first line")
      ->check(CLI::ExistingFile);
  label->add_option("--device", label_opt.device, "cpu | cuda | cuda:N");

  auto* info = app.add_subcommand("info", "parameters and GFLOPs per stage of a model or config");
  std::string info_model_path, info_config;
  std::vector<std::string> info_sets;
  auto* info_model = info->add_option("--model", info_model_path, "model file")->check(CLI::ExistingFile);
  info->add_option("--config", info_config, "YAML config")->check(CLI::ExistingFile)->excludes(info_model);
  info->add_option("--set", info_sets, "override a config key");
  bool info_backbones = false;
  info->add_flag("--backbones", info_backbones, "also list every backbone a config can name: channels, parameters, GFLOPs");

  auto* bench = app.add_subcommand("bench", "latency of the landmark network per crop");
  BenchCommand bc;
  BenchOptions& bench_opt = bc.landmarks;
  PipelineBenchOptions& pipeline_opt = bc.pipeline;
  bench->add_option("--backbones", bench_opt.backbones, "backbones to time");
  bench->add_option("--stages", bench_opt.stages, "stage counts to time");
  bench->add_option("--batches", bench_opt.batches, "batch sizes");
  bench->add_option("--threads", bench_opt.threads, "intra-op threads (0: LibTorch default)");
  bench->add_option("--device", bench_opt.device, "cpu | cuda");
  bench->add_option("--iters", bench_opt.iters, "timed runs per case (median reported)");
  bench->add_option("--input", bench_opt.input_size, "crop height and width")->expected(2);
  bench->add_option("--json", bc.json, "write the results as JSON here");
  bench->add_option("--parts", bc.parts,
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
  bench->add_option("--data", bc.data, "data: an annotated data set (its photos are decoded, cropped, augmented)");
  bench->add_option("--format", bc.format, "data: " + format_help)->check(CLI::IsMember(data_format_names()));
  bench->add_option("--io", bc.io, "pipeline: write a seeded crop batch and the landmark network's heatmaps per "
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
  // CSPN_PARSE_ONLY=1: the command line is checked (flags, values, files that must exist) and
  // nothing runs; the test of the README's commands uses it.
  if (const char* parse_only = std::getenv("CSPN_PARSE_ONLY"); parse_only && std::string(parse_only) == "1") return 0;
  sigset_t stop_signals{};
  if (*serve || *label) stop_signals = block_stop_signals();  // before LibTorch starts its threads
  try {
    use_threads(0);
    // Inference: the same sizes again and again (bench's timed training step maps its large blocks).
    keep_freed_memory(/*heap_only=*/*eval || *predict || *serve || *bench);
    if (*synth) {
      std::cout << synth_command(synth_out, synth_opt, synth_schema) << "\n";
      return 0;
    }
    if (*train_cmd) {
      tc.options.progress = !quiet;
      if (const int rank = launch_rank(); rank >= 0) {
        spdlog::set_pattern(fmt::format("[%H:%M:%S rank {}] %v", rank));
        if (rank != 0) spdlog::set_level(spdlog::level::warn);  // rank 0 reports for all
        error_prefix() = "rank " + std::to_string(rank) + ": ";
      }
      const TrainSummary summary = train_command(tc);
      std::cout << "trained " << summary.epochs << " epochs in " << summary.seconds / 60 << " min: " << summary.model_path
                << "\n";
      return 0;
    }
    if (*eval) {
      ec.options.progress = !quiet;
      evaluate_command(ec, std::cout);
      return 0;
    }
    if (*predict) {
      pc.options.progress = !quiet;
      predict_command(pc, std::cout, std::cerr);
      return 0;
    }
    if (*serve) {
      serve_opt.max_body_bytes = static_cast<size_t>(max_body_mb * (1 << 20));
      return run_serve(serve_model, serve_sets, serve_device, token_file, serve_opt, stop_signals);
    }
    if (*label) return run_label(label_opt, label_token_file, stop_signals);
    if (*info) {
      info_command(info_model_path, info_config, info_sets, info_backbones, std::cout);
      return 0;
    }
    if (*bench) {
      bc.train_step = !bench_no_train_step;
      bench_command(bc, std::cout);
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
