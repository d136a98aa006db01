#pragma once
// Weight files and modules: `.pth` and `.safetensors` reading and writing (pth.hpp,
// safetensors.hpp, included here), the reader picked by file content, and loading into a module,
// which reports missing, unexpected and mis-shaped keys.
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "cspn/core/io/pth.hpp"
#include "cspn/core/io/safetensors.hpp"
#include "cspn/core/io/state_dict.hpp"

namespace cspn {

// Picks the reader by content (zip magic or safetensors header).
StateDict read_weights(const std::string& path);

struct LoadReport {
  std::vector<std::string> missing;      // module keys the file lacks
  std::vector<std::string> unexpected;   // file keys the module lacks
  std::vector<std::string> mismatched;   // same key, other shape ("key: file [..] vs module [..]")
  size_t loaded = 0;
  bool ok() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
  std::string summary() const;           // one line per problem, counts first
};

// Copies matching tensors (parameters and buffers, incl. BatchNorm running stats) into `module`,
// each moved to the parameter's device and dtype. `prefix` is stripped from file keys first
// (e.g. "backbone." or ""); file keys without it belong to other parts and are ignored.
// `skip_prefixes` names keys (after stripping) that one side may lack without a report: module
// keys not expected in the file, and file keys the module does not have (e.g. "fc." when loading
// torchvision weights into a backbone without the classifier). Present on both sides, they load.
LoadReport load_state_dict(torch::nn::Module& module, const StateDict& tensors,
                           const std::string& prefix = "",
                           const std::vector<std::string>& skip_prefixes = {});

// The module's parameters and buffers by name, in PyTorch's state_dict order (the tensors
// themselves, no copies).
StateDict state_dict(const torch::nn::Module& module);

}  // namespace cspn
