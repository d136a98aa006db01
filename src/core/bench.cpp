#include "cspn/core/bench.hpp"

#include <algorithm>
#include <chrono>
#include <functional>
#include <vector>

#include <torch/torch.h>

#include "cspn/core/model/cspn_net.hpp"
#include "cspn/core/runtime.hpp"
#include "cspn/core/schema.hpp"

namespace cspn {
double median_ms(const std::function<void()>& fn, int iters, const c10::Device& device) {
  return median_ms_alternating({fn}, iters, device)[0];
}

std::vector<double> median_ms_alternating(const std::vector<std::function<void()>>& fns, int iters,
                                          const c10::Device& device) {
  auto sync = [&] { synchronize(device); };
  for (const auto& fn : fns)
    for (int i = 0; i < 2; ++i) fn();
  sync();
  std::vector<std::vector<double>> times(fns.size());
  for (int i = 0; i < std::max(iters, 1); ++i)
    for (size_t f = 0; f < fns.size(); ++f) {
      const auto t0 = std::chrono::steady_clock::now();
      fns[f]();
      sync();
      times[f].push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
  std::vector<double> medians;
  for (auto& t : times) {
    std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
    medians.push_back(t[t.size() / 2]);
  }
  return medians;
}

nlohmann::json run_bench(const BenchOptions& opt, std::ostream& out) {
  const torch::Device device = parse_device(opt.device);
  if (opt.threads > 0) torch::set_num_threads(opt.threads);
  if (opt.input_size.size() != 2) throw std::invalid_argument("--input expects height and width");
  const int h = opt.input_size[0], w = opt.input_size[1];
  c10::InferenceMode inference;
  const int k = LandmarkSchema::deepfashion().num_landmarks();

  nlohmann::json result{{"device", device.str()}, {"threads", torch::get_num_threads()}, {"input", {h, w}},
                        {"cases", nlohmann::json::array()}};
  if (device.is_cpu()) {
    const std::string blas = blas_library();
    result["blas"] = blas;
    result["blas_core"] = blas_core();
    out << "BLAS: " << (blas.empty() ? "(none mapped)" : blas) << (blas_core().empty() ? "" : ", kernel " + blas_core())
        << "\n";
    if (blas.find("openblas") == std::string::npos && blas.find("mkl") == std::string::npos)
      out << "WARNING: not an optimised BLAS; matrix products and transposed convolutions will be slow "
             "(install libopenblas0-openmp)\n";
  }
  char line[256];
  std::snprintf(line, sizeof line, "%-10s %6s %6s %12s %12s %10s %16s\n", "backbone", "stages", "batch", "ms/batch",
                "ms/crop", "crops/s", "backbone ms/crop");
  out << "device " << device.str() << ", " << torch::get_num_threads() << " threads, crops " << h << "x" << w << "\n"
      << line << std::flush;
  for (const auto& backbone : opt.backbones) {
    for (int stages : opt.stages) {
      KeypointModelConfig cfg;
      cfg.backbone = backbone;
      cfg.stages = stages;
      cfg.input_size = {h, w};
      CSPNNet net(cfg, k);
      use_channels_last(*net);  // as inference runs it (LandmarkPredictor)
      net->to(device);
      net->eval();
      for (int batch : opt.batches) {
        const auto x =
            torch::randn({batch, 3, h, w}, torch::TensorOptions().device(device)).contiguous(torch::MemoryFormat::ChannelsLast);
        const double full = median_ms([&] { net->forward(x); }, opt.iters, device);
        const double bare = median_ms([&] { net->backbone->features(x); }, opt.iters, device);
        std::snprintf(line, sizeof line, "%-10s %6d %6d %12.1f %12.2f %10.1f %16.2f\n", backbone.c_str(), stages, batch,
                      full, full / batch, 1000.0 * batch / full, bare / batch);
        out << line << std::flush;
        result["cases"].push_back({{"backbone", backbone}, {"stages", stages}, {"batch", batch}, {"ms_per_batch", full},
                                   {"ms_per_crop", full / batch}, {"backbone_ms_per_crop", bare / batch}});
      }
    }
  }
  return result;
}

}  // namespace cspn
