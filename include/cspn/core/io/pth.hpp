#pragma once
// Reading torchvision/PyTorch `.pth` state dicts: the zip checkpoints torch.save writes.
#include <string>

#include "cspn/core/io/state_dict.hpp"

namespace cspn {

// A PyTorch zip checkpoint written by torch.save(state_dict) (torchvision's ImageNet weights).
// Handles OrderedDict, plain dicts and {"state_dict"|"model": ...} wrappers.
StateDict read_pth(const std::string& path);

}  // namespace cspn
