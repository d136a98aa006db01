#include "cspn/engine/distributed.hpp"

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>

#include <spdlog/spdlog.h>
#include <torch/version.h>
#if TORCH_VERSION_MAJOR >= 2
#include <torch/csrc/distributed/c10d/Backend.hpp>
#else
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#endif
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#ifdef USE_C10D_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace cspn {
namespace {

// What Gloo's and NCCL's process groups derive from: c10d::ProcessGroup in LibTorch 1.x, c10d::Backend
// (the same collectives) from 2.0 on.
#if TORCH_VERSION_MAJOR >= 2
using Collectives = c10d::Backend;
#else
using Collectives = c10d::ProcessGroup;
#endif

int integer_variable(const Environment& env, const std::string& name, int lo, int hi) {
  const auto text = env(name);
  if (!text) throw std::invalid_argument("environment variable " + name + " is not set");
  size_t used = 0;
  long value = 0;
  try {
    value = std::stol(*text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text->size() || value < lo || value > hi)
    throw std::invalid_argument("environment variable " + name + "=" + *text + ": expected an integer from " +
                                std::to_string(lo) + " to " + std::to_string(hi));
  return static_cast<int>(value);
}

std::string joined(const std::vector<int>& ranks) {
  std::string out;
  for (int r : ranks) out += (out.empty() ? "" : ", ") + std::to_string(r);
  return out;
}

std::string message_of(const std::exception_ptr& cause) {
  try {
    std::rethrow_exception(cause);
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "unknown error";
  }
}

std::string alive_key(int rank) { return "alive/" + std::to_string(rank); }
std::string joined_key(int rank) { return "joined/" + std::to_string(rank); }

constexpr auto kHeartbeat = std::chrono::milliseconds(1000);

}  // namespace

std::string first_host(const std::string& node_list) {
  std::string host;
  for (size_t i = 0; i < node_list.size(); ++i) {
    const char c = node_list[i];
    if (c == ',') break;
    if (c != '[') {
      host += c;
      continue;
    }
    // A bracketed range list: its first number, then past the closing bracket.
    size_t j = i + 1;
    while (j < node_list.size() && node_list[j] != '-' && node_list[j] != ',' && node_list[j] != ']') host += node_list[j++];
    i = node_list.find(']', i);
    if (i == std::string::npos) throw std::invalid_argument("Slurm node list '" + node_list + "': unclosed '['");
  }
  if (host.empty()) throw std::invalid_argument("Slurm node list '" + node_list + "' names no host");
  return host;
}

LaunchInfo launch_info(const Environment& env) {
  LaunchInfo info;
  const auto text_or = [&](const std::string& name, const std::string& fallback) {
    const auto v = env(name);
    return v && !v->empty() ? *v : fallback;
  };
  if (env("RANK") || env("WORLD_SIZE")) {
    info.launcher = "torchrun";
    info.world_size = integer_variable(env, "WORLD_SIZE", 1, 1 << 20);
    info.rank = integer_variable(env, "RANK", 0, info.world_size - 1);
    info.local_rank = env("LOCAL_RANK") ? integer_variable(env, "LOCAL_RANK", 0, info.world_size - 1) : 0;
    if (env("LOCAL_WORLD_SIZE"))
      info.local_world_size = integer_variable(env, "LOCAL_WORLD_SIZE", info.local_rank + 1, info.world_size);
    if (info.world_size > 1 && !env("MASTER_ADDR"))
      throw std::invalid_argument("environment variable MASTER_ADDR is not set (WORLD_SIZE is " +
                                  std::to_string(info.world_size) + ")");
    info.master_addr = text_or("MASTER_ADDR", info.master_addr);
    if (info.world_size > 1 || env("MASTER_PORT")) info.master_port = integer_variable(env, "MASTER_PORT", 1, 65535);
    info.agent_store = text_or("TORCHELASTIC_USE_AGENT_STORE", "") == "True";
    if (env("TORCHELASTIC_RESTART_COUNT"))
      info.restart = integer_variable(env, "TORCHELASTIC_RESTART_COUNT", 0, 1 << 20);
  } else if (env("SLURM_PROCID") && env("SLURM_NTASKS")) {
    info.launcher = "slurm";
    info.world_size = integer_variable(env, "SLURM_NTASKS", 1, 1 << 20);
    info.rank = integer_variable(env, "SLURM_PROCID", 0, info.world_size - 1);
    info.local_rank = env("SLURM_LOCALID") ? integer_variable(env, "SLURM_LOCALID", 0, info.world_size - 1) : 0;
    if (const auto addr = env("MASTER_ADDR")) {
      info.master_addr = *addr;
    } else if (info.world_size > 1) {
      const auto nodes = env("SLURM_JOB_NODELIST") ? env("SLURM_JOB_NODELIST") : env("SLURM_NODELIST");
      if (!nodes)
        throw std::invalid_argument("Slurm launch: neither MASTER_ADDR nor SLURM_JOB_NODELIST is set");
      info.master_addr = first_host(*nodes);
    }
    if (env("MASTER_PORT")) info.master_port = integer_variable(env, "MASTER_PORT", 1, 65535);
  }
  return info;
}

LaunchInfo launch_info_from_environment() {
  return launch_info([](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    return v ? std::optional<std::string>(v) : std::nullopt;
  });
}

struct GradientAverager::Impl {
  struct Bucket {
    std::vector<size_t> members;  // parameter indices
    torch::Tensor buffer;         // their gradients, flattened one after the other
    size_t pending = 0;           // gradients not yet arrived in this backward
    c10::intrusive_ptr<c10d::Work> work;
  };
  Distributed* dist = nullptr;
  c10::intrusive_ptr<Collectives> group;
  std::vector<torch::Tensor> params;
  std::vector<unsigned> hooks;     // each parameter's hook handle
  std::vector<size_t> bucket_of, offset_of;
  std::vector<char> arrived;
  std::vector<Bucket> buckets;
  size_t next = 0;                 // the next bucket to send
  bool armed = false, overlap = true;

  void send(size_t b) {
    std::vector<torch::Tensor> buffer{buckets[b].buffer};
    buckets[b].work = group->allreduce(buffer);
  }
  void arrive(size_t i, const torch::Tensor& grad) {
    if (!armed || arrived[i]) return;
    arrived[i] = 1;
    Bucket& bucket = buckets[bucket_of[i]];
    bucket.buffer.narrow(0, static_cast<int64_t>(offset_of[i]), grad.numel()).copy_(grad.reshape(-1));
    --bucket.pending;
    while (overlap && next < buckets.size() && buckets[next].pending == 0) send(next++);
  }
};

GradientAverager::~GradientAverager() {
  for (size_t i = 0; i < impl_->params.size(); ++i) impl_->params[i].remove_hook(impl_->hooks[i]);
}

void GradientAverager::before_backward() {
  Impl& d = *impl_;
  std::fill(d.arrived.begin(), d.arrived.end(), 0);
  for (auto& bucket : d.buckets) {
    bucket.pending = bucket.members.size();
    bucket.work.reset();
  }
  d.next = 0;
  d.armed = true;
}

void GradientAverager::after_backward() {
  Impl& d = *impl_;
  d.armed = false;
  try {
    for (; d.next < d.buckets.size(); ++d.next) {
      for (size_t i : d.buckets[d.next].members)
        if (!d.arrived[i]) d.buckets[d.next].buffer.narrow(0, static_cast<int64_t>(d.offset_of[i]), d.params[i].numel()).zero_();
      d.send(d.next);
    }
    for (auto& bucket : d.buckets) bucket.work->wait();
  } catch (...) {
    d.dist->lost(std::current_exception());
  }
  torch::NoGradGuard no_grad;
  const double world = d.dist->world_size();
  for (size_t i = 0; i < d.params.size(); ++i) {
    const auto average = d.buckets[d.bucket_of[i]].buffer.narrow(0, static_cast<int64_t>(d.offset_of[i]), d.params[i].numel())
                             .view(d.params[i].sizes()) / world;
    auto& grad = d.params[i].mutable_grad();
    if (grad.defined()) grad.copy_(average);
    else grad = average.clone();
  }
}

struct Distributed::Impl {
  c10::intrusive_ptr<c10d::Store> store;      // rendezvous keys and heartbeats are read here
  c10::intrusive_ptr<Collectives> group;
  torch::Device device{torch::kCPU};           // where the group's collectives take their tensors
  std::thread heartbeat;
  std::mutex mutex;
  std::condition_variable stop_cv;
  bool stop = false;

  ~Impl() {
    {
      std::lock_guard<std::mutex> lock(mutex);
      stop = true;
    }
    stop_cv.notify_all();
    if (heartbeat.joinable()) heartbeat.join();
  }
};

Distributed::Distributed(const LaunchInfo& launch, double timeout_s, torch::Device device)
    : launch_(launch), impl_(std::make_unique<Impl>()) {
  impl_->device = device;
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  const std::string where = launch.master_addr + ":" + std::to_string(launch.master_port);
  const bool server = launch.rank == 0 && !launch.agent_store;
  const auto connect = [&](bool host) {
    c10d::TCPStoreOptions options;
    options.port = static_cast<std::uint16_t>(launch.master_port);
    options.isServer = host;
    options.numWorkers = launch.world_size;
    options.waitWorkers = false;
    options.timeout = timeout;
    return c10::make_intrusive<c10d::PrefixStore>(
        "cspn/" + std::to_string(launch.restart), c10::make_intrusive<c10d::TCPStore>(launch.master_addr, options));
  };
  try {
    impl_->store = connect(server);
  } catch (const std::exception& e) {
    throw DistributedError("rank " + std::to_string(launch.rank) + " could not " +
                           (server ? "open the rendezvous store on port " + std::to_string(launch.master_port)
                                   : "reach the rendezvous store at " + where + " (is rank 0 running there?)") +
                           " within " + fmt::format("{:g}", timeout_s) + " s: " + message_of(std::current_exception()));
  }
  // Every rank announces itself, then waits for all the others.
  std::vector<std::string> keys;
  for (int r = 0; r < launch.world_size; ++r) keys.push_back(joined_key(r));
  try {
    impl_->store->set(joined_key(launch.rank), std::vector<uint8_t>{1});
    impl_->store->wait(keys, timeout);
  } catch (const std::exception&) {
    std::vector<int> missing;
    try {
      for (int r = 0; r < launch.world_size; ++r)
        if (!impl_->store->check({joined_key(r)})) missing.push_back(r);
    } catch (const std::exception&) {
      throw DistributedError("rendezvous at " + where + " failed: rank " + std::to_string(launch.rank) +
                             " lost the store held by rank 0 (did rank 0 stop? its output says why): " +
                             message_of(std::current_exception()));
    }
    throw DistributedError("rendezvous at " + where + " failed: rank" + (missing.size() > 1 ? "s " : " ") +
                           joined(missing) + " of " + std::to_string(launch.world_size) + " did not join within " +
                           fmt::format("{:g}", timeout_s) + " s (train.dist_timeout_s); were all " +
                           std::to_string(launch.world_size) + " processes started, with the same MASTER_ADDR and "
                           "MASTER_PORT?");
  }
  // A heartbeat on a connection of its own, so that a failed collective can tell a dead or
  // stopped rank from a slow one.
  auto beat_store = connect(false);
  impl_->heartbeat = std::thread([impl = impl_.get(), beat_store, rank = launch.rank] {
    for (int64_t count = 0;; ++count) {
      try {
        const auto text = std::to_string(count);
        beat_store->set(alive_key(rank), std::vector<uint8_t>(text.begin(), text.end()));
      } catch (const std::exception&) {
        return;  // the store is gone; whoever needs it will say so
      }
      std::unique_lock<std::mutex> lock(impl->mutex);
      if (impl->stop_cv.wait_for(lock, kHeartbeat, [impl] { return impl->stop; })) return;
    }
  });

  auto group_store = c10::make_intrusive<c10d::PrefixStore>("group", impl_->store);
  if (device.is_cuda()) {
#ifdef USE_C10D_NCCL
    setenv("NCCL_ASYNC_ERROR_HANDLING", "1", 0);  // a timed-out collective raises instead of blocking
    auto options = c10d::ProcessGroupNCCL::Options::create();
    options->timeout = timeout;
    impl_->group = c10::make_intrusive<c10d::ProcessGroupNCCL>(group_store, launch.rank, launch.world_size, options);
#else
    throw std::invalid_argument("data-parallel training on CUDA needs NCCL: this LibTorch was built without it");
#endif
  } else {
#ifdef USE_C10D_GLOO
    auto options = c10d::ProcessGroupGloo::Options::create(timeout);
    const char* interface = std::getenv("GLOO_SOCKET_IFNAME");
    options->devices.push_back(interface ? c10d::ProcessGroupGloo::createDeviceForInterface(interface)
                                         : c10d::ProcessGroupGloo::createDefaultDevice());
    options->threads = 2;
    impl_->group = c10::make_intrusive<c10d::ProcessGroupGloo>(group_store, launch.rank, launch.world_size, options);
#else
    throw std::invalid_argument("data-parallel training on CPUs needs Gloo: this build found no Gloo (libgloo-dev)");
#endif
  }
  spdlog::info("rank {} of {} joined at {} ({})", launch.rank, launch.world_size, where,
               device.is_cuda() ? "NCCL" : "Gloo");
}

Distributed::~Distributed() = default;

torch::Tensor Distributed::sum(const torch::Tensor& t) {
  // On the group's device (NCCL reduces CUDA tensors only), back on t's.
  std::vector<torch::Tensor> buffer{t.detach().to(impl_->device, t.scalar_type(), false, /*copy=*/true).contiguous()};
  try {
    impl_->group->allreduce(buffer)->wait();
  } catch (...) {
    lost(std::current_exception());
  }
  return buffer[0].to(t.device());
}

torch::Tensor Distributed::sum_differentiable(const torch::Tensor& t) {
  const auto total = sum(t);
  if (!t.requires_grad()) return total;
  // The total's value, with the identity as its gradient path back to t; the hook sums the
  // gradient over the processes on its way through (each process's loss depends on every t).
  auto local = t.clone();
  local.register_hook([this](torch::Tensor grad) { return sum(grad); });
  return local + (total - local.detach());
}

void Distributed::broadcast(const std::vector<torch::Tensor>& tensors) {
  if (tensors.empty()) return;
  std::vector<torch::Tensor> flat;
  for (const auto& t : tensors) flat.push_back(t.detach().reshape(-1).to(torch::kFloat64));
  std::vector<torch::Tensor> buffer{torch::cat(flat)};
  try {
    impl_->group->broadcast(buffer)->wait();
  } catch (...) {
    lost(std::current_exception());
  }
  torch::NoGradGuard no_grad;
  int64_t offset = 0;
  for (const auto& t : tensors) {
    t.copy_(buffer[0].narrow(0, offset, t.numel()).view(t.sizes()));
    offset += t.numel();
  }
}

void Distributed::barrier() {
  try {
    impl_->group->barrier()->wait();
  } catch (...) {
    lost(std::current_exception());
  }
}

std::unique_ptr<GradientAverager> Distributed::average_gradients(const std::vector<torch::Tensor>& params,
                                                                 bool overlap) {
  constexpr int64_t kFirstBucket = 1 << 20, kBucket = 25 << 20;  // bytes, PyTorch's defaults
  auto averager = std::unique_ptr<GradientAverager>(new GradientAverager);
  averager->impl_ = std::make_unique<GradientAverager::Impl>();
  auto& d = *averager->impl_;
  d.dist = this;
  d.group = impl_->group;
  d.params = params;
  d.overlap = overlap;
  d.bucket_of.resize(params.size());
  d.offset_of.resize(params.size());
  d.arrived.resize(params.size());
  // Backward produces the gradients of the last layers first: buckets fill from the end.
  std::vector<std::vector<size_t>> members(1);
  int64_t bytes = 0;
  for (size_t k = params.size(); k-- > 0;) {
    TORCH_CHECK(params[k].scalar_type() == params.back().scalar_type() && params[k].device() == params.back().device(),
                "average_gradients: parameters of one dtype and device expected");
    const int64_t size = params[k].numel() * params[k].element_size();
    if (!members.back().empty() && bytes + size > (members.size() == 1 ? kFirstBucket : kBucket)) {
      members.emplace_back();
      bytes = 0;
    }
    members.back().push_back(k);
    bytes += size;
  }
  for (auto& m : members) {
    if (m.empty()) continue;
    GradientAverager::Impl::Bucket bucket;
    int64_t numel = 0;
    for (size_t k : m) {
      d.bucket_of[k] = d.buckets.size();
      d.offset_of[k] = static_cast<size_t>(numel);
      numel += params[k].numel();
    }
    bucket.members = std::move(m);
    bucket.buffer = torch::zeros({numel}, params.front().options().requires_grad(false));
    d.buckets.push_back(std::move(bucket));
  }
  for (size_t k = 0; k < params.size(); ++k) {
    auto* impl = averager->impl_.get();
    d.hooks.push_back(params[k].register_hook([impl, k](const torch::Tensor& grad) { impl->arrive(k, grad); }));
  }
  return averager;
}

void Distributed::lost(std::exception_ptr cause) {
  const std::string what = message_of(cause);
  // Two looks at every heartbeat, three beats apart: a rank whose count did not move is gone.
  std::vector<int> silent;
  std::string why = "died, was stopped, or cannot be reached";
  try {
    const auto counts = [&] {
      std::vector<std::string> out;
      for (int r = 0; r < world_size(); ++r) {
        const auto key = alive_key(r);
        out.push_back(impl_->store->check({key}) ? [&] {
          const auto bytes = impl_->store->get(key);
          return std::string(bytes.begin(), bytes.end());
        }() : std::string());
      }
      return out;
    };
    const auto before = counts();
    std::this_thread::sleep_for(3 * kHeartbeat);
    const auto after = counts();
    for (int r = 0; r < world_size(); ++r)
      if (r != rank() && before[r] == after[r]) silent.push_back(r);
  } catch (const std::exception&) {
    if (launch_.agent_store || rank() == 0) std::rethrow_exception(cause);
    silent = {0};  // the store lived in rank 0's process
    why = "died or cannot be reached (it held the rendezvous store)";
  }
  if (silent.empty()) std::rethrow_exception(cause);
  throw DistributedError("lost rank" + std::string(silent.size() > 1 ? "s " : " ") + joined(silent) + " of " +
                         std::to_string(world_size()) + ": it " + why + "; rank " + std::to_string(rank()) +
                         " stops too. The last checkpoint is intact: start every rank again with --resume. (" +
                         what + ")");
}

}  // namespace cspn
