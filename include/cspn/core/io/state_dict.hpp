#pragma once
// StateDict: named tensors in file order, what the weight file readers return and the writer takes.
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

namespace cspn {

using StateDict = std::vector<std::pair<std::string, torch::Tensor>>;  // in file order

}  // namespace cspn
