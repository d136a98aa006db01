// Stand-alone landmark-network benchmark (the same as `cspn bench`), for builds without OpenCV,
// such as a CUDA machine: cspn_bench [--device cuda] [--threads N] [--iters N] [--json FILE].
#include <cstring>
#include <fstream>
#include <iostream>

#include "cspn/core/bench.hpp"

int main(int argc, char** argv) {
  cspn::BenchOptions opt;
  std::string json;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--device" && has_value) opt.device = argv[++i];
    else if (arg == "--threads" && has_value) opt.threads = std::stoi(argv[++i]);
    else if (arg == "--iters" && has_value) opt.iters = std::stoi(argv[++i]);
    else if (arg == "--json" && has_value) json = argv[++i];
    else {
      std::cerr << "usage: cspn_bench [--device cpu|cuda] [--threads N] [--iters N] [--json FILE]\n";
      return 2;
    }
  }
  try {
    const auto result = cspn::run_bench(opt, std::cout);
    if (!json.empty()) std::ofstream(json) << result.dump(2) << "\n";
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
