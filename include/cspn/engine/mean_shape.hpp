#pragma once
// The mean-shape baseline that every model must beat: each category's average landmark layout,
// placed in a garment's box.
#include <vector>

#include <torch/torch.h>

#include "cspn/core/sample.hpp"
#include "cspn/engine/crop.hpp"

namespace cspn {

// Average box-normalised landmark layout per category, learned from training garments.
class MeanShape {
 public:
  explicit MeanShape(const Dataset& train);
  // [J,K,2] image pixels: each job's category layout placed in its box.
  torch::Tensor predict(const std::vector<CropJob>& jobs) const;

 private:
  torch::Tensor layout_;  // [C,K,2] in box units (0..1)
};

}  // namespace cspn
