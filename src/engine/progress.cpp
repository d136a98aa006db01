#include "cspn/engine/progress.hpp"

#include <unistd.h>

#include <cmath>
#include <cstdio>

namespace cspn {
namespace {

std::string clock_text(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--:--";
  const long s = std::lround(seconds);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%02ld:%02ld", s / 60, s % 60);
  return buf;
}

}  // namespace

Progress::Progress(std::string label, size_t total, std::string unit, bool enabled)
    : label_(std::move(label)),
      unit_(std::move(unit)),
      total_(total),
      enabled_(enabled),
      tty_(isatty(fileno(stderr)) != 0),
      start_(std::chrono::steady_clock::now()),
      last_(start_) {}

double Progress::seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::update(size_t done, const std::string& suffix) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  const bool forced = last_ == std::chrono::steady_clock::time_point{};
  if (!forced && now - last_ < (tty_ ? std::chrono::milliseconds(200) : std::chrono::milliseconds(10000))) return;
  last_ = now;
  const double elapsed = seconds();
  const double rate = elapsed > 0 ? done / elapsed : 0;
  const double eta = rate > 0 ? (total_ - done) / rate : NAN;
  const int width = 24;
  const int filled = total_ ? static_cast<int>(width * std::min<double>(1.0, double(done) / total_)) : width;
  std::string bar(filled, '#');
  bar.resize(width, '.');
  std::fprintf(stderr, "%s%s [%s] %zu/%zu %.1f %s/s %s<%s %s%s", tty_ ? "\r\033[K" : "", label_.c_str(),
               bar.c_str(), done, total_, rate, unit_.c_str(), clock_text(elapsed).c_str(),
               clock_text(eta).c_str(), suffix.c_str(), tty_ ? "" : "\n");
  std::fflush(stderr);
}

void Progress::finish(const std::string& suffix) {
  if (!enabled_) return;
  last_ = std::chrono::steady_clock::time_point{};
  update(total_, suffix);
  if (tty_) std::fputc('\n', stderr);
}

}  // namespace cspn
