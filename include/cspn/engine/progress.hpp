#pragma once
// A one-line progress bar on stderr (count, rate, ETA and a caller's suffix such as the loss).
// On a terminal it redraws in place; otherwise it prints a line at most every 10 seconds.
#include <chrono>
#include <string>

namespace cspn {

class Progress {
 public:
  Progress(std::string label, size_t total, std::string unit, bool enabled = true);
  void update(size_t done, const std::string& suffix = "");
  void finish(const std::string& suffix = "");
  double seconds() const;

 private:
  std::string label_, unit_;
  size_t total_;
  bool enabled_, tty_;
  std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace cspn
