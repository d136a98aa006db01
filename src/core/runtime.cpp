#include "cspn/core/runtime.hpp"

#include <dlfcn.h>
#include <malloc.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <ATen/Context.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include "cspn/core/model/info.hpp"

namespace cspn {

c10::Device parse_device(const std::string& name) {
  const bool cuda = name == "cuda" || name.rfind("cuda:", 0) == 0;
  if (name != "cpu" && !cuda) throw std::invalid_argument("--device " + name + ": expected cpu, cuda or cuda:N");
  std::optional<c10::Device> device;
  try {
    device.emplace(name);
  } catch (const c10::Error&) {
    throw std::invalid_argument("--device " + name + ": expected cpu, cuda or cuda:N");
  }
  if (cuda && !torch::cuda::is_available())
    throw std::invalid_argument("--device " + name + ": this LibTorch build or machine has no CUDA device");
  if (cuda && device->has_index() && device->index() >= static_cast<int>(torch::cuda::device_count()))
    throw std::invalid_argument("--device " + name + ": this machine has " + std::to_string(torch::cuda::device_count()) +
                                " CUDA device(s), numbered from 0");
  if (cuda) at::globalContext().setBenchmarkCuDNN(true);
  return *device;
}

c10::ScalarType precision_dtype(const std::string& precision, const c10::Device& device, const std::string& key) {
  if (precision == "bfloat16") return torch::kBFloat16;
  if (precision != "float16") return torch::kFloat32;
  if (!device.is_cuda()) throw std::invalid_argument(key + " float16 needs a CUDA device (on a CPU use bfloat16)");
  return torch::kFloat16;
}

void synchronize(const c10::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.has_index() ? device.index() : -1);
}

int use_threads(int requested) {
  int n = requested;
  if (n <= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 0;
    if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  }
  torch::set_num_threads(n);
  return n;
}

void keep_freed_memory(bool heap_only) {
  // glibc's largest mmap threshold (32 MiB on 64-bit); larger blocks are mapped whatever is asked,
  // unless no block may be mapped at all.
  mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
  mallopt(M_MMAP_MAX, heap_only ? 0 : 65536);  // glibc's default count of mapped blocks
  mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max());
}

double available_memory() {
  double available = 0;
  std::ifstream meminfo("/proc/meminfo");
  for (std::string key; meminfo >> key;) {
    double kib = 0;
    meminfo >> kib;
    if (key == "MemAvailable:") available = kib * 1024;
    meminfo.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
  }
  if (available <= 0) {
    const long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0) available = static_cast<double>(pages) * page;
  }
  double limit = 0, used = 0;  // cgroup v2; "max" reads as no number
  if (std::ifstream("/sys/fs/cgroup/memory.max") >> limit && std::ifstream("/sys/fs/cgroup/memory.current") >> used)
    available = available > 0 ? std::min(available, std::max(0.0, limit - used)) : std::max(0.0, limit - used);
  return available;
}

void require_memory(const Config& cfg, bool training, torch::Device device, const std::string& what) {
  const double available = available_memory();
  MemoryNeed need = estimate_memory(cfg, training);
  if (!device.is_cpu()) need.activation_bytes = 0;  // the networks are built here, then moved
  if (available <= 0 || need.total() <= available) return;
  const auto gb = [](double bytes) {
    char text[32];
    std::snprintf(text, sizeof text, "%.1f GB", bytes / 1e9);
    return std::string(text);
  };
  const auto& k = cfg.model.keypoints;
  const auto& d = cfg.model.detector;
  std::ostringstream sizes;
  if (k.enabled)
    sizes << "model.keypoints.channels " << k.channels << ", stages " << k.stages << ", input_size " << k.input_size[0]
          << "x" << k.input_size[1] << ", " << (training ? "train.batch_size " : "test.batch_size ")
          << (training ? cfg.train.batch_size : cfg.test.batch_size);
  if (d.enabled)
    sizes << (k.enabled ? "; " : "") << "model.detector.head_dim " << d.head_dim << ", roi_size " << d.roi_size
          << ", max_size " << d.max_size << ", "
          << (training ? "train_detector.batch_size " : "test.detector_batch_size ")
          << (training ? cfg.train_detector.batch_size : cfg.test.detector_batch_size);
  throw std::invalid_argument(what + ": the configuration needs at least " + gb(need.total()) + " (weights " +
                              gb(need.weights_bytes) + ", feature maps " + gb(need.activation_bytes) + "; " +
                              sizes.str() + "), more than the " + gb(available) +
                              " of memory available; lower one of these values");
}

std::string blas_library() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    const auto slash = line.find('/');
    if (slash != std::string::npos && line.find("blas", slash) != std::string::npos) return line.substr(slash);
  }
  return "";
}

std::string blas_core() {
  using CoreName = char* (*)();
  const auto name = reinterpret_cast<CoreName>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  return name ? std::string(name()) : std::string();
}

std::string better_blas_core() {
  std::string core = blas_core();
  if (core.empty()) return "";
  std::transform(core.begin(), core.end(), core.begin(), [](unsigned char c) { return std::tolower(c); });
  const auto one_of = [&](std::initializer_list<const char*> names) {
    return std::any_of(names.begin(), names.end(), [&](const char* n) { return core == n; });
  };
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f"))
    return one_of({"skylakex", "cooperlake", "sapphirerapids"}) ? "" : "SkylakeX";
  if (__builtin_cpu_supports("avx2"))
    return one_of({"prescott", "core2", "penryn", "dunnington", "nehalem", "atom", "sandybridge"}) ? "Haswell" : "";
  return "";
}

}  // namespace cspn
