#include "cspn/engine/process.hpp"

#include <malloc.h>
#include <sched.h>

#include <algorithm>
#include <limits>
#include <thread>

#include <torch/torch.h>

namespace cspn {

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

void keep_freed_memory() {
  // glibc's largest mmap threshold (32 MiB on 64-bit); larger blocks are mapped whatever is asked.
  mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
  mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max());
}

}  // namespace cspn
