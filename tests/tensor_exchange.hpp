#pragma once
// Exchanging tensors with reference scripts run by /usr/bin/python3 (PyTorch, torchvision):
// a folder holds <name>.bin files (raw little-endian, C order) and a JSON manifest
// {"tensors": {name: {"dtype": "float32"|"float64"|"int64", "shape": [...]}}, ...}.
// A plain format that both sides read in a few lines, whatever the PyTorch and LibTorch versions.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "common.hpp"

namespace cspn::test {

inline const char* kReferencePython = "/usr/bin/python3";

// Whether /usr/bin/python3 can import torch and torchvision (checked once).
inline bool torchvision_available() {
  static const bool available = [] {
    const std::string cmd = std::string(kReferencePython) +
                            " -c 'import torch, torchvision' > /dev/null 2>&1";
    return std::filesystem::exists(kReferencePython) && std::system(cmd.c_str()) == 0;
  }();
  return available;
}

// Runs scripts/<script> with the given arguments; throws with the script's output on failure.
inline void run_reference_script(const std::string& script, const std::string& args,
                                 const std::filesystem::path& log_dir) {
  const auto log = log_dir / "reference.log";
  const auto path = std::filesystem::path(kSourceDir) / "scripts" / script;
  const std::string cmd = std::string(kReferencePython) + " '" + path.string() + "' " + args +
                          " > '" + log.string() + "' 2>&1";
  if (std::system(cmd.c_str()) != 0) {
    std::ifstream in(log);
    const std::string output((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    throw std::runtime_error("reference script failed: " + cmd + "\n" + output);
  }
}

inline const char* dtype_name(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat: return "float32";
    case torch::kDouble: return "float64";
    case torch::kLong: return "int64";
    default: throw std::invalid_argument("tensor_exchange: unsupported dtype " +
                                         std::string(c10::toString(t)));
  }
}

inline torch::ScalarType dtype_from(const std::string& name) {
  if (name == "float32") return torch::kFloat;
  if (name == "float64") return torch::kDouble;
  if (name == "int64") return torch::kLong;
  throw std::invalid_argument("tensor_exchange: unsupported dtype '" + name + "'");
}

// Writes the tensors as <dir>/<name>.bin and <dir>/<manifest> = {"tensors": {...}} + `extra`.
inline void write_tensors(const std::filesystem::path& dir, const std::string& manifest,
                          const std::map<std::string, torch::Tensor>& tensors,
                          nlohmann::json extra = nlohmann::json::object()) {
  nlohmann::json entries = nlohmann::json::object();
  for (const auto& [name, tensor] : tensors) {
    const auto t = tensor.detach().to(torch::kCPU).contiguous();
    std::ofstream out(dir / (name + ".bin"), std::ios::binary);
    out.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
    if (!out) throw std::runtime_error("tensor_exchange: cannot write " + (dir / name).string());
    entries[name] = {{"dtype", dtype_name(t.scalar_type())}, {"shape", t.sizes().vec()}};
  }
  extra["tensors"] = std::move(entries);
  std::ofstream(dir / manifest) << extra.dump(1);
}

// Reads every tensor listed in <dir>/<manifest>.
inline std::map<std::string, torch::Tensor> read_tensors(const std::filesystem::path& dir,
                                                         const std::string& manifest) {
  std::ifstream in(dir / manifest);
  if (!in) throw std::runtime_error("tensor_exchange: cannot read " + (dir / manifest).string());
  const auto json = nlohmann::json::parse(in);
  std::map<std::string, torch::Tensor> out;
  for (const auto& [name, entry] : json.at("tensors").items()) {
    auto t = torch::empty(entry.at("shape").get<std::vector<int64_t>>(),
                          dtype_from(entry.at("dtype").get<std::string>()));
    std::ifstream data(dir / (name + ".bin"), std::ios::binary);
    data.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
    if (!data || data.gcount() != static_cast<std::streamsize>(t.nbytes()))
      throw std::runtime_error("tensor_exchange: short or missing " + (dir / name).string() +
                               ".bin for shape " + entry.at("shape").dump());
    out.emplace(name, std::move(t));
  }
  return out;
}

}  // namespace cspn::test

// Skips the current test, saying why, when the PyTorch reference cannot run.
#define CSPN_REQUIRE_TORCHVISION()                                                        \
  do {                                                                                    \
    if (!::cspn::test::torchvision_available())                                           \
      GTEST_SKIP() << ::cspn::test::kReferencePython                                      \
                   << " cannot import torch and torchvision: reference comparison skipped"; \
  } while (0)
