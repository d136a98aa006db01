#pragma once
// The errors the library throws for things a user gave it, by kind: the cspn command maps them to
// its exit codes, the server to HTTP statuses. Every message names the file (and line, JSON path or
// tensor) it is about.
#include <stdexcept>
#include <string>

namespace cspn {

// Malformed or unusable input: annotations, images, model files.
struct DataError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// An image that cannot be used, and why.
struct ImageError : DataError {
  enum class Kind { Unreadable, Unsupported, Corrupt, TooLarge };
  ImageError(Kind k, const std::string& what) : DataError(what), kind(k) {}
  Kind kind;
};

// A file that could not be written (full disk, no permission, missing folder).
struct IoError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Work stopped on request (TrainOptions::stop_requested), its state kept where it can resume.
struct Interrupted : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace cspn
