#pragma once
// What the training and evaluation tests share (test_train.cpp, test_evaluate.cpp, and the synthetic
// set of test_distributed.cpp): small synthetic data sets and a small landmark configuration.
#include <cstdint>
#include <string>

#include <unistd.h>

#include "cspn/core/config.hpp"
#include "cspn/data/synth.hpp"
#include "common.hpp"

namespace cspn::test {

// `count` synthetic 128x128 images of seed `seed`, in a scratch folder named `name` and this
// process's id (ctest runs the tests in parallel processes).
inline std::string make_synthetic_set(const std::string& name, int count, std::uint64_t seed) {
  const auto d = scratch_dir(name + "-" + std::to_string(getpid()));
  SynthOptions opt;
  opt.count = count;
  opt.seed = seed;
  opt.width = opt.height = 128;
  synthesize(d.string(), opt);
  return d.string();
}

// 160 synthetic 128x128 images, made once per process (each test process has its own copy).
inline const std::string& synthetic_set() {
  static const std::string dir = make_synthetic_set("train-synth", 160, 7);
  return dir;
}

// A small landmark network (one stage, 64 channels, 64x64 crops) trained briefly.
inline Config small_config() {
  Config cfg;
  cfg.load_yaml_string(R"(
model: {keypoints: {backbone: resnet18, stages: 1, channels: 64, input_size: [64, 64], sigma: 1.5}}
data: {workers: 0, rotate_aug: 10, occlusion_aug: 0.0}
train: {lr: 0.001, epochs: 10, batch_size: 8, warmup_iters: 20, val_every: 0, seed: 3, log_every: 1}
test: {flip: true, batch_size: 64}
)", "test config");
  return cfg;
}

}  // namespace cspn::test
