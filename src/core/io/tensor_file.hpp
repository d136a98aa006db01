#pragma once
// Helpers shared by the weight file code (pth.cpp, safetensors.cpp, weights.cpp). Internal.
#include <sstream>
#include <string>

#include <torch/torch.h>

// Both file formats store little-endian data; tensors are copied byte for byte, so this code
// assumes a little-endian host (x86-64, AArch64).

namespace cspn::io_detail {

inline std::string shape_str(torch::IntArrayRef sizes) {
  std::ostringstream os;
  os << sizes;
  return os.str();
}

}  // namespace cspn::io_detail
