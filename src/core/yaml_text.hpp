#pragma once
// YAML text parsed with errors as "ORIGIN:LINE: message": the config and the schemas read YAML so.
#include <stdexcept>
#include <string>

#include <yaml-cpp/yaml.h>

namespace cspn {

inline YAML::Node parse_yaml(const std::string& text, const std::string& origin) {
  try {
    return YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw std::invalid_argument(origin + ":" + std::to_string(e.mark.line + 1) + ": " + e.msg);
  }
}

}  // namespace cspn
