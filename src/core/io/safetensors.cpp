// The `.safetensors` format: reading (with the "__metadata__" string map) and atomic writing.
#include "cspn/core/io/safetensors.hpp"

#include <algorithm>
#include <array>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "cspn/core/io/atomic_file.hpp"
#include "tensor_file.hpp"

namespace cspn {

namespace fs = std::filesystem;
using nlohmann::json;
using io_detail::shape_str;

namespace {

// safetensors dtype names

struct DTypeName {
  const char* name;
  torch::ScalarType type;
};
constexpr std::array<DTypeName, 10> kSafetensorsTypes{{{"F64", torch::kFloat64},
                                                       {"F32", torch::kFloat32},
                                                       {"F16", torch::kFloat16},
                                                       {"BF16", torch::kBFloat16},
                                                       {"I64", torch::kInt64},
                                                       {"I32", torch::kInt32},
                                                       {"I16", torch::kInt16},
                                                       {"I8", torch::kInt8},
                                                       {"U8", torch::kUInt8},
                                                       {"BOOL", torch::kBool}}};

const char* safetensors_name(torch::ScalarType type, const std::string& key) {
  for (const auto& d : kSafetensorsTypes)
    if (d.type == type) return d.name;
  throw std::invalid_argument("write_safetensors: tensor '" + key + "' has dtype " +
                              std::string(c10::toString(type)) + ", which safetensors cannot hold here");
}

torch::ScalarType safetensors_type(const std::string& name, const std::string& where) {
  for (const auto& d : kSafetensorsTypes)
    if (name == d.name) return d.type;
  throw std::runtime_error(where + ": unsupported dtype '" + name +
                           "' (F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)");
}

uint64_t read_u64_le(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

StateDict read_safetensors(const std::string& path, std::map<std::string, std::string>* metadata) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open");
  std::error_code ec;
  const uint64_t file_size = fs::file_size(path, ec);
  if (ec) throw std::runtime_error(path + ": cannot stat: " + ec.message());
  if (file_size < 8)
    throw std::runtime_error(path + ": not a safetensors file (" + std::to_string(file_size) +
                             " bytes, shorter than the 8-byte header length)");
  unsigned char len_bytes[8];
  in.read(reinterpret_cast<char*>(len_bytes), 8);
  const uint64_t header_len = read_u64_le(len_bytes);
  if (header_len > file_size - 8)
    throw std::runtime_error(path + ": safetensors header length " + std::to_string(header_len) +
                             " exceeds the file size " + std::to_string(file_size));
  std::string header(header_len, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_len));
  if (!in) throw std::runtime_error(path + ": cannot read the safetensors header");
  json j;
  try {
    j = json::parse(header);
  } catch (const json::exception& e) {
    throw std::runtime_error(path + ": safetensors header is not valid JSON: " + e.what());
  }
  if (!j.is_object()) throw std::runtime_error(path + ": safetensors header is not a JSON object");

  const uint64_t data_start = 8 + header_len, data_size = file_size - data_start;
  struct Entry {
    std::string name;
    torch::ScalarType type;
    std::vector<int64_t> shape;
    uint64_t begin, end;
  };
  std::vector<Entry> entries;
  if (metadata) metadata->clear();
  for (const auto& [name, v] : j.items()) {
    const std::string where = path + ": tensor '" + name + "'";
    if (name == "__metadata__") {
      if (!v.is_object()) throw std::runtime_error(path + ": __metadata__ is not an object");
      for (const auto& [mk, mv] : v.items()) {
        if (!mv.is_string())
          throw std::runtime_error(path + ": __metadata__['" + mk + "'] is not a string");
        if (metadata) (*metadata)[mk] = mv.get<std::string>();
      }
      continue;
    }
    try {
      // Whole numbers only, checked before conversion (a float such as 1e30 has no int64 value).
      const auto whole_numbers = [&](const json& list, const char* what) {
        if (!list.is_array() || !std::all_of(list.begin(), list.end(), [](const json& x) { return x.is_number_unsigned(); }))
          throw std::runtime_error(where + ": " + what + " must be a list of whole numbers >= 0, got " + list.dump());
        return list.get<std::vector<uint64_t>>();
      };
      const auto dims = whole_numbers(v.at("shape"), "shape");
      const auto offsets = whole_numbers(v.at("data_offsets"), "data_offsets");
      if (offsets.size() != 2) throw std::runtime_error(where + ": data_offsets must hold 2 numbers");
      Entry e{name, safetensors_type(v.at("dtype").get<std::string>(), where), {}, offsets[0], offsets[1]};
      // The byte count in 64 bits without wrapping round: a shape too large for it cannot be in a file.
      uint64_t bytes = c10::elementSize(e.type);
      for (uint64_t d : dims) {
        if (d > static_cast<uint64_t>(INT64_MAX) || (d != 0 && bytes > UINT64_MAX / d))
          throw std::runtime_error(where + ": shape " + json(dims).dump() + " is too large for any file");
        bytes *= d;
        e.shape.push_back(static_cast<int64_t>(d));
      }
      if (e.begin > e.end || e.end > data_size || e.end - e.begin != bytes)
        throw std::runtime_error(where + ": data_offsets [" + std::to_string(e.begin) + ", " +
                                 std::to_string(e.end) + "] do not fit " + shape_str(e.shape) +
                                 " of " + std::to_string(bytes) + " bytes in the data area of " +
                                 std::to_string(data_size) + " bytes (truncated file?)");
      entries.push_back(std::move(e));
    } catch (const json::exception& ex) {
      throw std::runtime_error(where + ": bad header entry: " + ex.what());
    }
  }
  // File order = data order; also rejects overlapping tensors.
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return a.begin < b.begin; });
  StateDict out;
  uint64_t previous_end = 0;
  for (const auto& e : entries) {
    if (e.begin < previous_end)
      throw std::runtime_error(path + ": tensor '" + e.name + "' overlaps the previous tensor");
    previous_end = e.end;
    auto t = torch::empty(e.shape, torch::TensorOptions().dtype(e.type));
    if (e.end > e.begin) {
      in.seekg(static_cast<std::streamoff>(data_start + e.begin));
      in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(e.end - e.begin));
      if (!in) throw std::runtime_error(path + ": cannot read tensor '" + e.name + "'");
    }
    out.emplace_back(e.name, std::move(t));
  }
  return out;
}

void write_safetensors(const std::string& path, const StateDict& tensors,
                       const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<torch::Tensor> data;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name == "__metadata__" || header.contains(name))
      throw std::invalid_argument("write_safetensors(" + path + "): duplicate or reserved key '" + name + "'");
    if (!tensor.defined())
      throw std::invalid_argument("write_safetensors(" + path + "): tensor '" + name + "' is undefined");
    auto t = tensor.detach().to(torch::kCPU).contiguous();
    const uint64_t bytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    header[name] = {{"dtype", safetensors_name(t.scalar_type(), name)},
                    {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    data.push_back(std::move(t));
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keeps the data area 8-byte aligned

  write_file_atomically(path, [&](std::ostream& out) {
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(text.size() >> (8 * i));
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto& t : data)
      out.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.numel() * t.element_size()));
  });
}

}  // namespace cspn
