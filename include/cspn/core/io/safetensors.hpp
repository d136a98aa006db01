#pragma once
// Reading and writing `.safetensors` files, with their "__metadata__" string map.
#include <map>
#include <string>

#include "cspn/core/io/state_dict.hpp"

namespace cspn {

// A .safetensors file; metadata (the "__metadata__" string map) is returned through `metadata`.
StateDict read_safetensors(const std::string& path,
                           std::map<std::string, std::string>* metadata = nullptr);
// Writes atomically (temporary file + rename). Tensors are written contiguous, from the CPU.
void write_safetensors(const std::string& path, const StateDict& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace cspn
