#pragma once
// Small helpers the library shares.
#include <cstdint>
#include <sstream>
#include <string>

#include <torch/types.h>

namespace cspn {

// A tensor's sizes as text ("[2, 3, 4]"), for error messages.
inline std::string shape_of(const torch::Tensor& t) {
  std::ostringstream out;
  out << t.sizes();
  return out.str();
}

// SplitMix64's finaliser (Steele, Lea and Flood 2014): a well-mixed 64-bit function of x, for seeds
// and hash splits that must not depend on the platform's std::hash.
inline std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace cspn
