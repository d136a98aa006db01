#include "cspn/core/io/atomic_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <streambuf>
#include <vector>

#include <c10/util/Exception.h>

namespace cspn {
namespace {

// An output stream buffer over a file descriptor that remembers the first write error (errno).
class FdBuffer : public std::streambuf {
 public:
  explicit FdBuffer(int fd) : fd_(fd), buffer_(1 << 16) { setp(buffer_.data(), buffer_.data() + buffer_.size()); }
  int error() const { return error_; }
  int sync() override { return drain() ? 0 : -1; }

 protected:
  int_type overflow(int_type c) override {
    if (!drain()) return traits_type::eof();
    if (!traits_type::eq_int_type(c, traits_type::eof())) {
      *pptr() = traits_type::to_char_type(c);
      pbump(1);
    }
    return traits_type::not_eof(c);
  }

 private:
  bool drain() {
    const char* p = pbase();
    while (p < pptr() && error_ == 0) {
      const ssize_t n = ::write(fd_, p, static_cast<size_t>(pptr() - p));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) error_ = n < 0 ? errno : EIO;
      else p += n;
    }
    setp(buffer_.data(), buffer_.data() + buffer_.size());
    return error_ == 0;
  }

  int fd_;
  std::vector<char> buffer_;
  int error_ = 0;
};

[[noreturn]] void fail(const std::string& path, const std::string& tmp, const std::string& why) {
  if (!tmp.empty()) ::unlink(tmp.c_str());
  throw IoError("cannot write " + path + ": " + why + " (nothing was changed)");
}

}  // namespace

void write_file_atomically(const std::string& path, const std::function<void(std::ostream&)>& write) {
  std::string tmp = path + ".tmp-XXXXXX";
  const int fd = ::mkstemp(tmp.data());
  if (fd < 0) fail(path, "", std::strerror(errno));
  ::fchmod(fd, 0644);
  FdBuffer buffer(fd);
  std::ostream out(&buffer);
  std::string why;
  try {
    write(out);
    out.flush();
  } catch (const c10::Error& e) {
    why = e.what_without_backtrace();
  } catch (const std::exception& e) {
    why = e.what();
  }
  if (why.empty() && buffer.error() != 0) why = std::strerror(buffer.error());
  if (why.empty() && !out) why = "stream error";
  if (why.empty() && ::fsync(fd) != 0) why = std::strerror(errno);
  if (::close(fd) != 0 && why.empty()) why = std::strerror(errno);
  if (!why.empty()) fail(path, tmp, why);
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail(path, tmp, std::string("rename: ") + std::strerror(errno));
}

void check_writable(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
    throw IoError("cannot write " + path + ": it is a folder; name a file");
  std::string probe = path + ".probe-XXXXXX";
  const int fd = ::mkstemp(probe.data());
  if (fd < 0) throw IoError("cannot write " + path + ": " + std::strerror(errno));
  ::close(fd);
  ::unlink(probe.c_str());
}

void write_file_atomically(const std::string& path, std::string_view bytes) {
  write_file_atomically(path, [&](std::ostream& out) { out.write(bytes.data(), static_cast<std::streamsize>(bytes.size())); });
}

}  // namespace cspn
