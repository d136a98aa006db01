// Weight files and modules: picking the reader by file content, loading a state dict into a module
// (with its report) and a module's state dict.
#include "cspn/core/io/weights.hpp"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "tensor_file.hpp"

namespace cspn {

using io_detail::shape_str;

namespace {

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

// Collects parameters and buffers in PyTorch's state_dict order: a module's own parameters, its
// buffers, then its children, depth first.
void collect(const torch::nn::Module& m, const std::string& prefix, StateDict& out) {
  for (const auto& p : m.named_parameters(/*recurse=*/false))
    if (p.value().defined()) out.emplace_back(prefix + p.key(), p.value());
  for (const auto& b : m.named_buffers(/*recurse=*/false))
    if (b.value().defined()) out.emplace_back(prefix + b.key(), b.value());
  for (const auto& c : m.named_children()) collect(*c.value(), prefix + c.key() + ".", out);
}

}  // namespace

StateDict read_weights(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open");
  unsigned char head[9] = {};
  in.read(reinterpret_cast<char*>(head), sizeof head);
  const auto got = in.gcount();
  if (got >= 4 && std::memcmp(head, "PK\x03\x04", 4) == 0) return read_pth(path);
  if (got == 9 && head[8] == '{') return read_safetensors(path);
  if (got >= 1 && head[0] == 0x80)
    throw std::runtime_error(path + ": a legacy (pre-1.6) torch.save file; re-save it with "
                             "torch.save(state_dict, path) from PyTorch >= 1.6");
  throw std::runtime_error(path + ": neither a PyTorch zip checkpoint (.pth) nor a .safetensors file");
}

std::string LoadReport::summary() const {
  std::ostringstream os;
  os << "loaded " << loaded << ", missing " << missing.size() << ", unexpected "
     << unexpected.size() << ", mismatched " << mismatched.size();
  for (const auto& k : missing) os << "\nmissing: " << k;
  for (const auto& k : unexpected) os << "\nunexpected: " << k;
  for (const auto& k : mismatched) os << "\nmismatched: " << k;
  return os.str();
}

LoadReport load_state_dict(torch::nn::Module& module, const StateDict& tensors,
                           const std::string& prefix,
                           const std::vector<std::string>& skip_prefixes) {
  auto skipped = [&](const std::string& key) {
    return std::any_of(skip_prefixes.begin(), skip_prefixes.end(),
                       [&](const std::string& p) { return starts_with(key, p); });
  };
  std::unordered_map<std::string, torch::Tensor> file;
  std::vector<std::string> file_order;
  for (const auto& [key, t] : tensors) {
    if (!starts_with(key, prefix)) continue;  // another part's tensors
    auto [it, fresh] = file.insert_or_assign(key.substr(prefix.size()), t);
    if (fresh) file_order.push_back(it->first);
  }

  LoadReport report;
  std::set<std::string> seen;
  torch::NoGradGuard no_grad;
  for (auto& [key, target] : state_dict(module)) {
    seen.insert(key);
    auto it = file.find(key);
    if (it == file.end()) {
      if (!skipped(key)) report.missing.push_back(key);
      continue;
    }
    if (!it->second.sizes().equals(target.sizes())) {
      report.mismatched.push_back(key + ": file " + shape_str(it->second.sizes()) + " vs module " +
                                  shape_str(target.sizes()));
      continue;
    }
    target.copy_(it->second);  // converts device and dtype
    ++report.loaded;
  }
  for (const auto& key : file_order)
    if (!seen.count(key) && !skipped(key)) report.unexpected.push_back(prefix + key);
  return report;
}

StateDict state_dict(const torch::nn::Module& module) {
  StateDict out;
  collect(module, "", out);
  return out;
}

}  // namespace cspn
