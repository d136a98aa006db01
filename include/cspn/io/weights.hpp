#pragma once
// Reading and writing weight files: torchvision/PyTorch `.pth` (zip) state dicts and
// `.safetensors`. Loading into a module reports missing, unexpected and mis-shaped keys.
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

namespace cspn {

using StateDict = std::vector<std::pair<std::string, torch::Tensor>>;  // in file order

// A PyTorch zip checkpoint written by torch.save(state_dict) (torchvision's ImageNet weights).
// Handles OrderedDict, plain dicts and {"state_dict"|"model": ...} wrappers.
StateDict read_pth(const std::string& path);
// A .safetensors file; metadata (the "__metadata__" string map) is returned through `metadata`.
StateDict read_safetensors(const std::string& path,
                           std::map<std::string, std::string>* metadata = nullptr);
// Writes atomically (temporary file + rename). Tensors are written contiguous, from the CPU.
void write_safetensors(const std::string& path, const StateDict& tensors,
                       const std::map<std::string, std::string>& metadata = {});
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
