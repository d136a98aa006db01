#pragma once
// Every file the project writes (models, checkpoints, configs, results, rendered images) is written
// all or nothing: a reader, a crash or a full disk never leaves a half-written file under the name.
#include <functional>
#include <ostream>
#include <string>
#include <string_view>

#include "cspn/core/errors.hpp"

namespace cspn {

// Writes `path` through `write`: the bytes go to a new temporary file next to it (unique name), are
// flushed to disk (fsync) and checked, and only then renamed over `path`. On any failure (an
// exception from `write`, a full disk, a missing folder) the temporary file is removed, `path` keeps
// its old content, and IoError says which file and why.
void write_file_atomically(const std::string& path, const std::function<void(std::ostream&)>& write);
void write_file_atomically(const std::string& path, std::string_view bytes);

// Throws IoError now, before long work, when `path` could not be written later: it is a folder, its
// folder is missing, or no file can be created there.
void check_writable(const std::string& path);

}  // namespace cspn
