#pragma once
// Small helpers the library shares.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <string>

#include <torch/types.h>

namespace cspn {

// The shortest decimal that reads back as `value`, as a double (0.3f gives 0.3, where the float's
// own double is 0.30000001192092896): JSON written from it shows the digits the float has.
inline double decimal(float value) {
  char text[32];
  for (int digits = 1; digits <= 9; ++digits) {
    std::snprintf(text, sizeof text, "%.*g", digits, static_cast<double>(value));
    if (std::strtof(text, nullptr) == value) return std::strtod(text, nullptr);
  }
  return value;  // NaN and infinities
}

// A tensor's sizes as text ("[2, 3, 4]"), for error messages.
inline std::string shape_of(const torch::Tensor& t) {
  std::ostringstream out;
  out << t.sizes();
  return out.str();
}

// Throws std::invalid_argument "WHERE: NAME should be [N,4] (x1, y1, x2, y2), got [..]" unless
// `boxes` is a defined two-dimensional tensor of 4 columns (and floating point, when asked).
inline void check_boxes(const std::string& where, const std::string& name, const torch::Tensor& boxes,
                        bool floating = false) {
  if (!boxes.defined() || boxes.dim() != 2 || boxes.size(1) != 4 || (floating && !boxes.is_floating_point()))
    throw std::invalid_argument(where + ": " + name + " should be " + (floating ? "floating point " : "") +
                                "[N,4] (x1, y1, x2, y2), got " +
                                (boxes.defined() ? std::string(c10::toString(boxes.scalar_type())) + " " + shape_of(boxes)
                                                 : std::string("an undefined tensor")));
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
