#include "cspn/device.hpp"

#include <optional>
#include <stdexcept>

#include <ATen/Context.h>
#include <torch/cuda.h>

namespace cspn {

c10::Device parse_device(const std::string& name) {
  const bool cuda = name == "cuda" || name.rfind("cuda:", 0) == 0;
  if (name != "cpu" && !cuda) throw std::invalid_argument("--device " + name + ": expected cpu, cuda or cuda:N");
  std::optional<c10::Device> device;
  try {
    device.emplace(name);
  } catch (const c10::Error&) {
    throw std::invalid_argument("--device " + name + ": expected cpu, cuda or cuda:N");
  }
  if (cuda && !torch::cuda::is_available())
    throw std::invalid_argument("--device " + name + ": this LibTorch build or machine has no CUDA device");
  if (cuda && device->has_index() && device->index() >= static_cast<int>(torch::cuda::device_count()))
    throw std::invalid_argument("--device " + name + ": this machine has " + std::to_string(torch::cuda::device_count()) +
                                " CUDA device(s), numbered from 0");
  if (cuda) at::globalContext().setBenchmarkCuDNN(true);
  return *device;
}

void synchronize(const c10::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.has_index() ? device.index() : -1);
}

}  // namespace cspn
