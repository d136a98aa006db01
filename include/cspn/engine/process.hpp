#pragma once
// Process settings for programs that run the networks: threads and memory.
#include <string>

#include <torch/torch.h>

#include "cspn/config.hpp"

namespace cspn {

// Sets LibTorch's intra-op threads: `requested`, or with 0 every core this process may run on
// (LibTorch's own default is the physical core count, which can be 1). Returns the count set.
int use_threads(int requested);

// LibTorch frees and allocates activation buffers of the same sizes at every step. glibc hands
// large ones back to the kernel on free, and touching fresh pages again costs about a tenth of a
// CPU training step (12.8 -> 14.1 crops/s measured). This keeps freed memory in the process
// (buffers up to 32 MiB, no trimming); call it once, early, in a long-running program.
// `heap_only` keeps the larger ones too (glibc maps every block above 32 MiB afresh otherwise): for
// inference, where the same sizes come back batch after batch. The paper configuration's 50 MB
// maps at batch 16: `cspn eval` 74.2 -> 23.1 s, peak memory 2.26 -> 2.86 GB. Not for training,
// whose many sizes fragment such a heap (its step at batch 16 grew from 12.6 to 24 GB). Calling it
// again switches: `heap_only` false maps the larger blocks again from then on.
void keep_freed_memory(bool heap_only = false);

// Bytes this process may still allocate: the kernel's MemAvailable, or less where a cgroup limit
// (memory.max, a container's) leaves less; 0 where neither can be read.
double available_memory();

// Refuses (std::invalid_argument, naming the config values that size it) a configuration whose
// estimated memory (estimate_memory, a lower bound) exceeds available_memory(), before a network is
// built: the alternative is an allocation the kernel kills the process for. `what` names the use,
// e.g. "cspn train". On a CUDA device only the weights count (the networks are built in host memory
// first); nothing is checked where the available memory cannot be read.
void require_memory(const Config& cfg, bool training, torch::Device device, const std::string& what);

}  // namespace cspn
