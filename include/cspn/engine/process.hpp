#pragma once
// Process settings for programs that run the networks: threads and memory.

namespace cspn {

// Sets LibTorch's intra-op threads: `requested`, or with 0 every core this process may run on
// (LibTorch's own default is the physical core count, which can be 1). Returns the count set.
int use_threads(int requested);

// LibTorch frees and allocates activation buffers of the same sizes at every step. glibc hands
// large ones back to the kernel on free, and touching fresh pages again costs about a tenth of a
// CPU training step (12.8 -> 14.1 crops/s measured). This keeps freed memory in the process
// (buffers up to 32 MiB, no trimming); call it once, early, in a long-running program.
void keep_freed_memory();

}  // namespace cspn
