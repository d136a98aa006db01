#pragma once
// What `cspn serve` and `cspn label` share over cpp-httplib: JSON errors, the bearer token, the
// limits of ServeOptions (threads, body size, read and write timeouts) and binding.
#include <functional>
#include <mutex>
#include <string>

#include <httplib.h>

#include "cspn/serve/server.hpp"

namespace cspn::http {

// A request's answer or the reason it has none, with a status and the limit or kind it names.
struct HttpError {
  int status;
  std::string kind;     // metrics label and JSON "error_kind": "body_too_large", "bad_image", ...
  std::string message;
};

// {"error", "error_kind", "status"} with the error's status.
void send_error(httplib::Response& res, const HttpError& e);

// True where no token is required or the request carries "Authorization: Bearer TOKEN" (compared in
// time that depends on the lengths only).
bool authorised(const httplib::Request& req, const std::string& token);

// The thread pool, body limit and timeouts of `opt`; statuses that httplib sets itself (413 over the
// body limit, 404, 400) get a JSON body, `not_found` the 404's message. `on_error` sees each kind.
void configure(httplib::Server& server, const ServeOptions& opt, const std::string& not_found,
               const std::function<void(const std::string&)>& on_error = {});

// GET / (`page`), /garments.js (the pages' drawing code) and /healthz.
void page_routes(httplib::Server& server, const std::string& page);

// Runs a server until stop(), whichever threads call them and in whichever order: a stop that comes
// before run() or while it starts is not lost, as it would be with httplib's own stop() (which does
// nothing until the server listens), e.g. a Ctrl+C while `cspn label` predicts its photos.
class Lifecycle {
 public:
  void run(httplib::Server& server);
  void stop(httplib::Server& server);

 private:
  std::mutex mutex_;
  bool stopping_ = false, started_ = false, finished_ = false;
};

// Binds opt.host:opt.port (0: any free port) and returns the port; std::runtime_error naming the
// address where it cannot.
int bind(httplib::Server& server, const ServeOptions& opt);

}  // namespace cspn::http
