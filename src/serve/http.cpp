#include "http.hpp"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <thread>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <nlohmann/json.hpp>

namespace cspn::http {
namespace {

bool same_token(const std::string& given, const std::string& expected) {
  unsigned char diff = given.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < given.size(); ++i)
    diff |= static_cast<unsigned char>(given[i] ^ expected[expected.empty() ? 0 : i % expected.size()]);
  return diff == 0;
}

// httplib 0.11 listens with a backlog of 5: a burst of clients connecting at once overflows it and
// some of them lose their connection. Calling listen() again on the bound socket raises it.
void widen_backlog(int port) {
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    const std::string name = entry.path().filename().string();  // kept: strtol's end points into it
    char* end = nullptr;
    const long fd = std::strtol(name.c_str(), &end, 10);
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    int listening = 0;
    socklen_t optlen = sizeof listening;
    if (*end || getsockname(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&addr), &len) != 0) continue;
    if (getsockopt(static_cast<int>(fd), SOL_SOCKET, SO_ACCEPTCONN, &listening, &optlen) != 0 || !listening) continue;
    const int bound = addr.ss_family == AF_INET ? ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port)
                    : addr.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port) : -1;
    if (bound == port) ::listen(static_cast<int>(fd), SOMAXCONN);
  }
}

}  // namespace

void send_error(httplib::Response& res, const HttpError& e) {
  res.status = e.status;
  res.set_content(nlohmann::json{{"error", e.message}, {"error_kind", e.kind}, {"status", e.status}}.dump(),
                  "application/json");
}

bool authorised(const httplib::Request& req, const std::string& token) {
  if (token.empty()) return true;
  const std::string header = req.get_header_value("Authorization");
  const std::string prefix = "Bearer ";
  return same_token(header.rfind(prefix, 0) == 0 ? header.substr(prefix.size()) : "", token);
}

void configure(httplib::Server& server, const ServeOptions& opt, const std::string& not_found,
               const std::function<void(const std::string&)>& on_error) {
  const int threads = opt.threads;
  server.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  server.set_payload_max_length(opt.max_body_bytes);
  // Slow senders and readers get as long as a request may take, but at least a second.
  const std::chrono::duration<double> io_timeout(std::max(1.0, opt.timeout_s));
  server.set_read_timeout(io_timeout);
  server.set_write_timeout(io_timeout);
  const size_t max_body = opt.max_body_bytes;
  server.set_error_handler(httplib::Server::HandlerWithResponse(
      [max_body, not_found, on_error](const httplib::Request&, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        HttpError e{res.status, "http_" + std::to_string(res.status), "HTTP " + std::to_string(res.status)};
        if (res.status == 413)
          e = {413, "body_too_large", "body larger than " + std::to_string(max_body) + " bytes (--max-body-mb)"};
        else if (res.status == 404)
          e = {404, "not_found", not_found};
        if (on_error) on_error(e.kind);
        send_error(res, e);
        return httplib::Server::HandlerResponse::Handled;
      }));
}

void page_routes(httplib::Server& server, const std::string& page) {
  server.Get("/", [&page](const httplib::Request&, httplib::Response& res) {
    res.set_content(page, "text/html; charset=utf-8");
  });
  server.Get("/garments.js", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(garments_js(), "text/javascript; charset=utf-8");
  });
  server.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(R"({"status":"ok"})", "application/json");
  });
}

void Lifecycle::run(httplib::Server& server) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return;
    started_ = true;
  }
  server.listen_after_bind();  // returns after stop(), once the connection threads are done
  std::lock_guard<std::mutex> lock(mutex_);
  finished_ = true;
}

void Lifecycle::stop(httplib::Server& server) {
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
      if (!started_ || finished_) return;
    }
    if (server.is_running()) {
      server.stop();
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));  // run() is about to listen
  }
}

int bind(httplib::Server& server, const ServeOptions& opt) {
  const int port = opt.port == 0 ? server.bind_to_any_port(opt.host) : server.bind_to_port(opt.host, opt.port) ? opt.port : -1;
  if (port <= 0)
    throw std::runtime_error("cannot listen on " + opt.host + ":" + std::to_string(opt.port) +
                             " (port in use, or not an address of this machine?)");
  widen_backlog(port);
  return port;
}

}  // namespace cspn::http
