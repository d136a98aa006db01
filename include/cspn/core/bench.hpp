#pragma once
// Latency of the landmark network per crop (cspn bench), next to the bare backbone's time.
// Tensors only, so it also builds where OpenCV is missing (a CUDA machine).
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include <c10/core/Device.h>
#include <nlohmann/json.hpp>

namespace cspn {

struct BenchOptions {
  std::vector<std::string> backbones{"resnet50", "resnet101"};
  std::vector<int> stages{1, 4};
  std::vector<int> batches{1, 16};
  std::vector<int> input_size{256, 192};
  int threads = 2;           // intra-op threads on CPU (0: leave the current setting)
  std::string device = "cpu";
  int iters = 5;             // timed runs per case; the median is reported
};

// Median wall time in milliseconds of `iters` runs of fn after two warm-up runs; on a GPU each run
// waits for `device`.
double median_ms(const std::function<void()>& fn, int iters, const c10::Device& device);

// The same for several functions timed in turn, one run of each per round, so that a machine
// whose speed drifts during the measurement slows them alike: one median per function.
std::vector<double> median_ms_alternating(const std::vector<std::function<void()>>& fns, int iters,
                                          const c10::Device& device);

// Prints a table to `out` as it goes and returns every measurement as JSON.
nlohmann::json run_bench(const BenchOptions& opt, std::ostream& out);

}  // namespace cspn
