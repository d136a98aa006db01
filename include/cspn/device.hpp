#pragma once
// The device a command runs on, from its --device flag.
#include <string>

#include <c10/core/Device.h>

namespace cspn {

// "cpu", "cuda" or "cuda:N" -> the device, checked against what this build and machine have;
// throws std::invalid_argument "--device NAME: ..." in one line otherwise (LibTorch's own errors
// for a bad name carry pages of dispatcher state).
c10::Device parse_device(const std::string& name);

}  // namespace cspn
