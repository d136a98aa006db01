#pragma once
// The device a command runs on, from its --device flag.
#include <string>

#include <c10/core/Device.h>

namespace cspn {

// "cpu", "cuda" or "cuda:N" -> the device, checked against what this build and machine have;
// throws std::invalid_argument "--device NAME: ..." in one line otherwise (LibTorch's own errors
// for a bad name carry pages of dispatcher state).
// On CUDA it also turns on cuDNN's benchmark mode (crops have a fixed size: each convolution's
// fastest algorithm is searched once).
c10::Device parse_device(const std::string& name);

// Waits for the work queued on `device` (a no-op on a CPU); the device's own index, not the
// thread's current GPU, so timings on cuda:1 are cuda:1's.
void synchronize(const c10::Device& device);

}  // namespace cspn
