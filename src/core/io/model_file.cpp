#include "cspn/io/model_file.hpp"

#include <map>
#include <stdexcept>
#include <string>

namespace cspn {

namespace {

const char* const kFormatKey = "cspn.format";
const char* const kConfigKey = "cspn.config";
const char* const kSchemaKey = "cspn.schema";
const char* const kExtraKey = "cspn.extra";

nlohmann::json parse_metadata(const std::map<std::string, std::string>& meta, const char* key,
                              const std::string& path) {
  auto it = meta.find(key);
  if (it == meta.end()) throw std::runtime_error(path + ": model file lacks the '" + key + "' metadata");
  try {
    return nlohmann::json::parse(it->second);
  } catch (const nlohmann::json::parse_error& e) {
    throw std::runtime_error(path + ": metadata '" + key + "' is not valid JSON: " + e.what());
  }
}

}  // namespace

void save_model_file(const std::string& path, const ModelFile& model) {
  const std::map<std::string, std::string> meta{
      {kFormatKey, std::to_string(kModelFileFormat)},
      {kConfigKey, model.config.to_json().dump()},
      {kSchemaKey, model.schema.to_json().dump()},
      {kExtraKey, model.extra.is_null() ? "{}" : model.extra.dump()}};
  write_safetensors(path, model.tensors, meta);
}

ModelFile load_model_file(const std::string& path) {
  std::map<std::string, std::string> meta;
  ModelFile model;
  model.tensors = read_safetensors(path, &meta);
  auto format = meta.find(kFormatKey);
  if (format == meta.end())
    throw std::runtime_error(path + ": not a CSPN model file (no '" + kFormatKey +
                             "' metadata; a plain weight file?)");
  int version = 0;
  try {
    size_t used = 0;
    version = std::stoi(format->second, &used);
    if (used != format->second.size()) throw std::invalid_argument("trailing characters");
  } catch (const std::exception&) {
    throw std::runtime_error(path + ": metadata '" + kFormatKey + "' = '" + format->second +
                             "' is not a version number");
  }
  if (version < 1 || version > kModelFileFormat)
    throw std::runtime_error(path + ": model file format " + std::to_string(version) +
                             " is not supported (this build reads 1.." +
                             std::to_string(kModelFileFormat) + "; a newer cspn wrote it?)");
  const auto config = parse_metadata(meta, kConfigKey, path);
  const auto schema = parse_metadata(meta, kSchemaKey, path);
  try {
    model.config = Config::from_json(config);
  } catch (const std::exception& e) {
    throw std::runtime_error(path + ": bad '" + kConfigKey + "' metadata: " + e.what());
  }
  try {
    model.schema = LandmarkSchema::from_json(schema);
  } catch (const std::exception& e) {
    throw std::runtime_error(path + ": bad '" + kSchemaKey + "' metadata: " + e.what());
  }
  if (meta.count(kExtraKey)) model.extra = parse_metadata(meta, kExtraKey, path);
  if (version < 2 && model.config.model.keypoints.enabled)
    throw std::runtime_error(path + ": model file format " + std::to_string(version) +
                             " holds a landmark network of the old cascade layout (before format 2, where "
                             "stages 2..4 were redesigned to refine the previous stage's answer); retrain it "
                             "(its backbone can start the new run: --set model.keypoints.pretrained=" + path + ")");
  return model;
}

}  // namespace cspn
