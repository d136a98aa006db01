#pragma once
// A server of the library (cspn::Server, cspn::LabelServer) on a loopback port, serving from a
// thread until the object goes; its options should name port 0 (any free one).
#include <chrono>
#include <thread>
#include <utility>

#include <httplib.h>

namespace cspn::test {

// Asks GET /healthz every 100 ms for up to 30 s; true once the server at `port` answers 200.
inline bool comes_up(int port) {
  httplib::Client client("127.0.0.1", port);
  for (int i = 0; i < 300; ++i) {
    auto r = client.Get("/healthz");
    if (r && r->status == 200) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

template <class S>
class Running {
 public:
  template <class... Args>
  explicit Running(Args&&... args) : server_(std::forward<Args>(args)...) {
    port_ = server_.bind();
    thread_ = std::thread([this] { server_.run(); });
  }
  ~Running() {
    server_.stop();
    thread_.join();
  }
  Running(const Running&) = delete;
  Running& operator=(const Running&) = delete;

  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(60, 0);
    return c;
  }
  int port() const { return port_; }

 private:
  S server_;
  int port_ = 0;
  std::thread thread_;
};

}  // namespace cspn::test
