#pragma once
// `cspn serve`: the pipeline behind HTTP (cpp-httplib). Concurrent requests are batched: images
// arriving together go through the detector as one batch and their garment crops through the
// landmark network as one batch. Every limit is answered with its status and a JSON error naming it.
//
//   POST /v1/landmarks   an image as the body (JPEG, PNG, WebP, BMP) or multipart field "image";
//                        query: min_score, max_garments, flip=on|off
//   GET  /v1/model       categories, landmark names, input sizes, the resolved config
//   GET  /healthz        {"status": "ok"}
//   GET  /metrics        Prometheus text: requests by code, errors by kind, latency, batch sizes,
//                        queue depth
//   GET  /               a web page: drop a photo, see its garments and landmarks drawn
//                        (its drawing code at /garments.js)
#include <memory>
#include <string>

#include "cspn/api/pipeline.hpp"

namespace cspn {

struct ServeOptions {
  std::string host = "127.0.0.1";        // loopback unless told otherwise
  int port = 8080;                       // 0: any free port (see Server::port)
  int threads = 32;                      // connection threads (decode images, wait for answers)
  int max_batch = 8;                     // images per pipeline call (1: no batching)
  double max_wait_ms = 5;                // how long a batch waits for more images once one is queued
  int max_queue = 64;                    // images waiting for the pipeline; beyond: 503 + Retry-After
  size_t max_body_bytes = 20u << 20;     // larger bodies: 413
  long max_pixels = 40'000'000;          // larger decoded images (read from the header): 413
  double timeout_s = 30;                 // answer not ready by then: 504
  std::string token;                     // set: /v1/* and /metrics need "Authorization: Bearer TOKEN"
};

class Server {
 public:
  // `pipeline` must outlive the server; only the server's batching thread calls it.
  Server(Pipeline& pipeline, ServeOptions opt);
  ~Server();

  // Binds the socket (throws naming host:port when it cannot) and returns the port.
  int bind();
  int port() const;
  // Serves until stop(); then finishes the requests in flight and returns.
  void run();
  // Stops accepting; safe from any thread.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The bearer token in the first line of `path` (trailing spaces dropped); std::invalid_argument
// naming --token-file when the file cannot be read or its first line is empty.
std::string read_token_file(const std::string& path);

// The page served at "/" (web/index.html, compiled in), and the drawing code it shares with the
// labelling page (web/garments.js).
const std::string& web_page();
const std::string& garments_js();

}  // namespace cspn
