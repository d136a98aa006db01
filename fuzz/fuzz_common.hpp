#pragma once
// Shared by the fuzz targets: the input bytes as a file (the readers take paths), and the rule that
// only the documented errors may escape. Anything else (a crash, a sanitizer report, another
// exception) is a finding.
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "cspn/core/errors.hpp"

namespace cspn::fuzz {

// A scratch folder for this fuzzing process (in /dev/shm when it exists: files are rewritten at
// every execution).
inline const std::filesystem::path& scratch() {
  static const std::filesystem::path dir = [] {
    const std::filesystem::path base = std::filesystem::exists("/dev/shm") ? "/dev/shm" : "/tmp";
    auto d = base / ("cspn-fuzz-" + std::to_string(getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

inline void write(const std::filesystem::path& path, const uint8_t* data, size_t size) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(data),
                                                                 static_cast<std::streamsize>(size));
}

// Runs `parse`, letting the errors a user is meant to see (DataError and std::invalid_argument,
// which name what is wrong) end the execution quietly; anything else propagates and aborts.
template <class F>
int expect_clean(F&& parse) {
  try {
    parse();
  } catch (const DataError&) {
  } catch (const std::invalid_argument&) {
  }
  return 0;
}

}  // namespace cspn::fuzz
