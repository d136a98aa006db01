// A phase's checkpoints (network, optimizer, position), the run's JSON-lines log, and the checks
// on the run folder before a run starts or resumes.
#include <exception>
#include <iterator>
#include <sstream>
#include <stdexcept>

#include "cspn/core/errors.hpp"
#include "cspn/core/io/atomic_file.hpp"
#include "cspn/engine/distributed.hpp"
#include "train_internal.hpp"

namespace fs = std::filesystem;

namespace cspn::train_detail {
namespace {

// Checks the run folder (no model yet; empty, or --resume with the same config) and writes its
// config.yaml.
void check_run_folder(const fs::path& out, const std::string& yaml, bool resume) {
  if (fs::exists(out / "model.cspn"))
    throw std::invalid_argument(out.string() + " already holds a trained model; choose another --out");
  if (!resume && fs::exists(out) && !fs::is_empty(out))
    throw std::invalid_argument(out.string() + " already holds a run; pass --resume to continue it or choose another --out");
  if (resume) {
    // A run resumes with the config it started with, which stays as it was.
    std::ifstream in(out / "config.yaml");
    if (!in)
      throw std::invalid_argument("--resume: " + out.string() + " holds no run to resume (no config.yaml); drop --resume "
                                  "to start one");
    const std::string stored((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (stored != yaml)
      throw std::invalid_argument("--resume: the config differs from the one " + out.string() +
                                  "/config.yaml was started with; resume with the same --config and --set");
  } else {
    fs::create_directories(out);
    write_file_atomically((out / "config.yaml").string(), yaml);
  }
}

}  // namespace

void save_checkpoint(const fs::path& path, torch::nn::Module& net, torch::optim::Optimizer& opt, const Position& pos) {
  torch::serialize::OutputArchive archive;
  torch::serialize::OutputArchive model_archive, optim_archive;
  net.save(model_archive);
  opt.save(optim_archive);
  archive.write("model", model_archive);
  archive.write("optimizer", optim_archive);
  archive.write("position", torch::tensor({static_cast<int64_t>(pos.epoch), static_cast<int64_t>(pos.batch),
                                           pos.total_iters, pos.global_iter}));
  // LibTorch's writer aborts the process when its stream fails (a full disk): it writes to memory,
  // and the bytes go to the file from there.
  std::ostringstream bytes;
  archive.save_to(bytes);
  write_file_atomically(path.string(), bytes.str());
}

Position load_checkpoint(const fs::path& path, torch::nn::Module& net, torch::optim::Optimizer& opt,
                         torch::Device device) {
  torch::serialize::InputArchive archive, model_archive, optim_archive;
  try {
    archive.load_from(path.string(), device);
    archive.read("model", model_archive);
    archive.read("optimizer", optim_archive);
    net.load(model_archive);
    opt.load(optim_archive);
  } catch (const c10::Error& e) {
    throw std::runtime_error(path.string() + ": cannot resume from this checkpoint (" + e.what_without_backtrace() +
                             "); was it written with the same config?");
  }
  torch::Tensor p;
  archive.read("position", p);
  p = p.cpu();  // loaded onto the training device with the rest
  auto a = p.accessor<int64_t, 1>();
  return {static_cast<int>(a[0]), static_cast<int>(a[1]), a[2], a[3]};
}

JsonLog::JsonLog(const fs::path& path, bool open, std::function<void(const nlohmann::json&)> observer)
    : path_(path.string()), observer_(std::move(observer)) {
  if (!open) return;
  out_.open(path, std::ios::app);
  if (!out_) throw IoError("cannot write the training log " + path_);
}

void JsonLog::write(const nlohmann::json& record) {
  if (!out_.is_open()) return;
  out_ << record.dump() << '\n' << std::flush;
  if (!out_) throw IoError("cannot write the training log " + path_ + " (disk full?); --resume continues the run");
  if (observer_) observer_(record);
}

void prepare_run_folder(const fs::path& out, const Config& cfg, bool resume, Distributed* dist) {
  const bool main = !dist || dist->is_main();
  // Rank 0 prepares the run folder; the others learn whether it could.
  std::exception_ptr refused;
  if (main) {
    try {
      check_run_folder(out, cfg.to_yaml() + "\n", resume);
    } catch (...) {
      refused = std::current_exception();
    }
  }
  if (dist && dist->sum(torch::tensor({refused ? 1.0 : 0.0})).item<double>() > 0 && !refused)
    throw std::invalid_argument("rank 0 could not prepare the run folder " + out.string() + " (its output says why)");
  if (refused) std::rethrow_exception(refused);
}

}  // namespace cspn::train_detail
