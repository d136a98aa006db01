#pragma once
// Parameter and FLOP counts (cspn info, paper Table 3).
#include <functional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "cspn/core/config.hpp"
#include "cspn/core/model/cspn_net.hpp"
#include "cspn/core/schema.hpp"

namespace cspn {

// FLOPs (2 x multiply-adds) of the convolutions, linear layers and matrix products that `fn` runs
// on this thread, counted from the operators' input shapes with ATen's RecordFunction observers.
// Counted operators: aten::convolution (every conv and transposed conv passes it once),
// aten::addmm / mm / bmm / baddbmm (what linear and matmul decompose into). Elementwise ops,
// normalisation, pooling and resizing are not counted, as in the usual FLOP tables.
double count_flops(const std::function<void()>& fn);

struct PartCost {
  std::string name;  // "backbone", "stage1", ...
  int64_t params = 0;   // used at inference (training-only heads not counted)
  double gflops = 0;
};

// Backbone and each stage of `net` for one crop of input_h x input_w (multiples of 32), run
// without gradients in eval mode (the net's mode is restored) on the device of its parameters:
// what inference computes, so the training-only heads count neither parameters nor FLOPs.
std::vector<PartCost> cspn_costs(CSPNNet& net, int input_h, int input_w);

// A lower bound on the memory a configuration asks for, from the config alone, before anything is
// allocated: what grows with its values. The landmark pyramid's weights (28 C^2 per stage for
// `channels` C; stage 1's laterals, the heads and the backbone are left out) and two stages' encoder
// and decoder maps per crop (every stage's, three times over, in training); the detector's fc6/fc7
// (the narrowest stride-16 trunk, 256 channels, assumed) and its stride-16 map per image. Training
// adds gradients and Adam's two moments (3x the weights). Batches: train.batch_size and
// train_detector.batch_size in training, test.batch_size and test.detector_batch_size otherwise.
struct MemoryNeed {
  double weights_bytes = 0;
  double activation_bytes = 0;
  double total() const { return weights_bytes + activation_bytes; }
};
MemoryNeed estimate_memory(const Config& cfg, bool training);

// What `cspn info` prints for a configuration: the landmark network's parameters and GFLOPs per
// part and cumulative per stage (Table 3 layout), and the detector's size when it is enabled.
std::string describe_model(const Config& cfg, const LandmarkSchema& schema);

// What `cspn info --backbones` prints: every registered backbone with its channels per level,
// parameters and GFLOPs for one input_h x input_w image (multiples of 32).
std::string describe_backbones(int input_h, int input_w);

}  // namespace cspn
