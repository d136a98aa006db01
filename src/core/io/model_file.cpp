#include "cspn/core/io/model_file.hpp"

#include <cstdint>
#include <cstdio>
#include <map>
#include <stdexcept>
#include <string>

#include "cspn/core/errors.hpp"

namespace cspn {

namespace {

const char* const kFormatKey = "cspn.format";
const char* const kConfigKey = "cspn.config";
const char* const kSchemaKey = "cspn.schema";
const char* const kExtraKey = "cspn.extra";
const char* const kChecksumKey = "cspn.checksum";

// FNV-1a (64 bit) over every tensor's name and bytes in key order, as 16 hex digits: a flipped byte
// anywhere in the weights changes it.
std::string checksum(const StateDict& tensors) {
  std::uint64_t h = 1469598103934665603ULL;
  const auto mix = [&](const unsigned char* p, size_t n) {
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ULL;
  };
  for (const auto& [name, t] : tensors) {
    mix(reinterpret_cast<const unsigned char*>(name.data()), name.size());
    const torch::Tensor c = t.contiguous().cpu();
    mix(static_cast<const unsigned char*>(c.data_ptr()), static_cast<size_t>(c.numel() * c.element_size()));
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return hex;
}

nlohmann::json parse_metadata(const std::map<std::string, std::string>& meta, const char* key,
                              const std::string& path) {
  auto it = meta.find(key);
  if (it == meta.end()) throw DataError(path + ": model file lacks the '" + key + "' metadata");
  try {
    return nlohmann::json::parse(it->second);
  } catch (const nlohmann::json::exception& e) {
    throw DataError(path + ": metadata '" + key + "' is not valid JSON: " + e.what());
  }
}

}  // namespace

void save_model_file(const std::string& path, const ModelFile& model) {
  const std::map<std::string, std::string> meta{
      {kFormatKey, std::to_string(kModelFileFormat)},
      {kConfigKey, model.config.to_json().dump()},
      {kSchemaKey, model.schema.to_json().dump()},
      {kExtraKey, model.extra.is_null() ? "{}" : model.extra.dump()},
      {kChecksumKey, checksum(model.tensors)}};
  write_safetensors(path, model.tensors, meta);
}

ModelFile load_model_file(const std::string& path) {
  std::map<std::string, std::string> meta;
  ModelFile model;
  try {
    model.tensors = read_safetensors(path, &meta);
  } catch (const DataError&) {
    throw;
  } catch (const std::exception& e) {  // unreadable, truncated or not a safetensors file
    throw DataError(e.what());
  }
  auto format = meta.find(kFormatKey);
  if (format == meta.end())
    throw DataError(path + ": not a CSPN model file (no '" + kFormatKey +
                             "' metadata; a plain weight file?)");
  int version = 0;
  try {
    size_t used = 0;
    version = std::stoi(format->second, &used);
    if (used != format->second.size()) throw std::invalid_argument("trailing characters");
  } catch (const std::exception&) {
    throw DataError(path + ": metadata '" + kFormatKey + "' = '" + format->second +
                             "' is not a version number");
  }
  if (version < 1 || version > kModelFileFormat)
    throw DataError(path + ": model file format " + std::to_string(version) +
                             " is not supported (this build reads 1.." +
                             std::to_string(kModelFileFormat) + "; a newer cspn wrote it?)");
  // Files written before the checksum existed have none; every later one is verified.
  const auto stored = meta.find(kChecksumKey);
  if (stored != meta.end() && stored->second != checksum(model.tensors))
    throw DataError(path + ": checksum mismatch (stored " + stored->second + ", computed " +
                             checksum(model.tensors) + "): the file is damaged; copy it again or retrain");
  for (const auto& [name, t] : model.tensors)
    if (t.is_floating_point() && !torch::isfinite(t).all().item<bool>())
      throw DataError(path + ": tensor '" + name + "' holds NaN or infinite values: refusing a broken model");
  auto config = parse_metadata(meta, kConfigKey, path);
  // Format 2 predates model.keypoints.refine_stride: its later stages answered at stage 1's stride.
  const nlohmann::json::json_pointer keypoints("/model/keypoints"), refine_stride("/model/keypoints/refine_stride");
  if (version < 3 && config.contains(keypoints) && config.at(keypoints).is_object() && !config.contains(refine_stride))
    config[refine_stride] = 4;
  const auto schema = parse_metadata(meta, kSchemaKey, path);
  try {
    model.config = Config::from_json(config);
  } catch (const std::exception& e) {
    throw DataError(path + ": bad '" + kConfigKey + "' metadata: " + e.what());
  }
  try {
    model.schema = LandmarkSchema::from_json(schema);
  } catch (const std::exception& e) {
    throw DataError(path + ": bad '" + kSchemaKey + "' metadata: " + e.what());
  }
  if (meta.count(kExtraKey)) model.extra = parse_metadata(meta, kExtraKey, path);
  if (version < 2 && model.config.model.keypoints.enabled)
    throw DataError(path + ": model file format " + std::to_string(version) +
                             " holds a landmark network of the old cascade layout (before format 2, where "
                             "stages 2..4 were redesigned to refine the previous stage's answer); retrain it "
                             "(its backbone can start the new run: --set model.keypoints.pretrained=" + path + ")");
  return model;
}

}  // namespace cspn
