#pragma once
// What a program that runs the networks sets up for its process: the device (--device), LibTorch's
// threads, how freed memory is kept, the memory a configuration needs, and the BLAS library that
// LibTorch's matrix products run on.
#include <string>

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "cspn/core/config.hpp"

namespace cspn {

// "cpu", "cuda" or "cuda:N" -> the device, checked against what this build and machine have;
// throws std::invalid_argument "--device NAME: ..." in one line otherwise (LibTorch's own errors
// for a bad name carry pages of dispatcher state).
// On CUDA it also turns on cuDNN's benchmark mode (crops have a fixed size: each convolution's
// fastest algorithm is searched once).
c10::Device parse_device(const std::string& name);

// The dtype of `precision` (float32, bfloat16, float16) for networks on `device`; float16 needs a
// CUDA device: std::invalid_argument naming `key` (train.precision, test.precision) otherwise.
c10::ScalarType precision_dtype(const std::string& precision, const c10::Device& device, const std::string& key);

// Waits for the work queued on `device` (a no-op on a CPU); the device's own index, not the
// thread's current GPU, so timings on cuda:1 are cuda:1's.
void synchronize(const c10::Device& device);

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
void require_memory(const Config& cfg, bool training, c10::Device device, const std::string& what);

// Path of the BLAS library mapped into this process (LibTorch's matrix products), "" if none.
std::string blas_library();

// OpenBLAS's kernel for this CPU ("SkylakeX", "Haswell", ...), "" when the BLAS is not OpenBLAS.
std::string blas_core();

// The OPENBLAS_CORETYPE that suits this CPU when OpenBLAS chose a slower generic kernel, else "".
// OpenBLAS does not know every CPU model: on the virtual Xeons (AVX-512) this project runs on,
// Debian's 0.3.21 falls back to Prescott (SSE3), and a 25088x4096 linear layer (VGG16's fc6 in the
// box head) runs at a third of its speed. The variable only acts when set before OpenBLAS loads.
std::string better_blas_core();

}  // namespace cspn
