#include "cspn/serve/server.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include <httplib.h>
#include <spdlog/spdlog.h>

#include "cspn/api/json.hpp"
#include "cspn/data/image.hpp"
#include "http.hpp"

namespace cspn {
namespace {

using http::HttpError;
using http::send_error;
using Clock = std::chrono::steady_clock;

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// Counters and histograms for /metrics (Prometheus text format 0.0.4).
class Metrics {
 public:
  void request(const std::string& path, int status) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++requests_[{path, status}];
  }
  void error(const std::string& kind) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++errors_[kind];
  }
  void latency(double seconds) {
    std::lock_guard<std::mutex> lock(mutex_);
    latency_.add(seconds);
  }
  void batch(int size) {
    std::lock_guard<std::mutex> lock(mutex_);
    batch_.add(size);
  }

  std::string text(size_t queue_depth) const {
    std::lock_guard<std::mutex> lock(mutex_);
    std::ostringstream out;
    out << "# HELP cspn_requests_total HTTP requests by path and status code.\n"
        << "# TYPE cspn_requests_total counter\n";
    for (const auto& [key, n] : requests_)
      out << "cspn_requests_total{path=\"" << key.first << "\",code=\"" << key.second << "\"} " << n << "\n";
    out << "# HELP cspn_errors_total Requests refused or failed, by kind.\n# TYPE cspn_errors_total counter\n";
    for (const auto& [kind, n] : errors_) out << "cspn_errors_total{kind=\"" << kind << "\"} " << n << "\n";
    latency_.write(out, "cspn_request_duration_seconds", "Time to answer POST /v1/landmarks.");
    batch_.write(out, "cspn_batch_size", "Images per pipeline call.");
    out << "# HELP cspn_queue_depth Images waiting for the pipeline.\n# TYPE cspn_queue_depth gauge\n"
        << "cspn_queue_depth " << queue_depth << "\n";
    return out.str();
  }

 private:
  struct Histogram {
    std::vector<double> bounds;
    std::vector<uint64_t> counts = std::vector<uint64_t>(bounds.size(), 0);
    double sum = 0;
    uint64_t count = 0;
    void add(double v) {
      for (size_t i = 0; i < bounds.size(); ++i) counts[i] += v <= bounds[i];
      sum += v;
      ++count;
    }
    void write(std::ostream& out, const std::string& name, const std::string& help) const {
      out << "# HELP " << name << " " << help << "\n# TYPE " << name << " histogram\n";
      for (size_t i = 0; i < bounds.size(); ++i) out << name << "_bucket{le=\"" << bounds[i] << "\"} " << counts[i] << "\n";
      out << name << "_bucket{le=\"+Inf\"} " << count << "\n" << name << "_sum " << sum << "\n"
          << name << "_count " << count << "\n";
    }
  };
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  std::map<std::string, uint64_t> errors_;
  Histogram latency_{{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}};
  Histogram batch_{{1, 2, 4, 8, 16, 32, 64}};
};

struct Answer {
  std::vector<GarmentPrediction> garments;
  PredictTimings timings;  // of the whole batch
  int batch = 0;
  double queue_ms = 0;
};

struct Job {
  cv::Mat image;
  PredictOptions options;
  Clock::time_point queued = Clock::now();
  std::promise<Answer> answer;
  std::atomic<bool> abandoned{false};  // the request timed out: skip it
};

// Collects images from the connection threads into batches for the one thread that runs the
// pipeline. A batch closes when it is full, when no other request is on its way (being received
// or decoded), or max_wait_ms after its first image was queued: a lone request does not wait.
class Batcher {
 public:
  // A request on its way to the queue, from its arrival until submit() or its refusal.
  class Arrival {
   public:
    explicit Arrival(Batcher& b) : b_(b) {
      std::lock_guard<std::mutex> lock(b_.mutex_);
      ++b_.arriving_;
    }
    ~Arrival() { leave(); }
    void leave() {
      if (left_) return;
      left_ = true;
      {
        std::lock_guard<std::mutex> lock(b_.mutex_);
        --b_.arriving_;
      }
      b_.wake_.notify_all();
    }

   private:
    Batcher& b_;
    bool left_ = false;
  };

  Batcher(Pipeline& pipeline, const ServeOptions& opt, Metrics& metrics)
      : pipeline_(pipeline), opt_(opt), metrics_(metrics), thread_([this] { loop(); }) {}
  ~Batcher() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }

  // False when the queue is full.
  bool submit(const std::shared_ptr<Job>& job, Arrival& arrival) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (queue_.size() >= static_cast<size_t>(opt_.max_queue)) return false;
      queue_.push_back(job);
    }
    arrival.leave();
    return true;
  }

  size_t depth() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return queue_.size();
  }

 private:
  void loop() {
    const auto max_batch = static_cast<size_t>(std::max(1, opt_.max_batch));
    const auto wait = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double, std::milli>(opt_.max_wait_ms));
    for (;;) {
      std::vector<std::shared_ptr<Job>> batch;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping, nothing left
        const auto deadline = queue_.front()->queued + wait;
        wake_.wait_until(lock, deadline, [&] { return stopping_ || queue_.size() >= max_batch || arriving_ == 0; });
        while (!queue_.empty() && batch.size() < max_batch) {
          if (!queue_.front()->abandoned) batch.push_back(queue_.front());
          queue_.pop_front();
        }
      }
      if (batch.empty()) continue;
      run(batch);
    }
  }

  void run(const std::vector<std::shared_ptr<Job>>& batch) {
    const auto start = Clock::now();
    std::vector<cv::Mat> images;
    std::vector<PredictOptions> options;
    for (const auto& job : batch) {
      images.push_back(job->image);
      options.push_back(job->options);
    }
    metrics_.batch(static_cast<int>(batch.size()));
    try {
      PredictTimings timings;
      auto garments = pipeline_.predict(images, options, &timings);
      for (size_t i = 0; i < batch.size(); ++i)
        batch[i]->answer.set_value({std::move(garments[i]), timings, static_cast<int>(batch.size()),
                                    ms_between(batch[i]->queued, start)});
    } catch (...) {
      for (const auto& job : batch) job->answer.set_exception(std::current_exception());
    }
  }

  Pipeline& pipeline_;
  const ServeOptions& opt_;
  Metrics& metrics_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Job>> queue_;
  int arriving_ = 0;  // guarded by mutex_
  bool stopping_ = false;
  std::thread thread_;
};

PredictOptions parse_options(const httplib::Request& req) {
  PredictOptions o;
  const auto bad = [](const std::string& name, const std::string& value, const std::string& want) {
    return HttpError{400, "bad_parameter", "query parameter " + name + "=" + value + ": " + want};
  };
  if (req.has_param("min_score")) {
    const std::string v = req.get_param_value("min_score");
    char* end = nullptr;
    const float f = std::strtof(v.c_str(), &end);
    if (v.empty() || *end || !(f >= 0.0f && f <= 1.0f)) throw bad("min_score", v, "expected a number from 0 to 1");
    o.min_score = f;
  }
  if (req.has_param("max_garments")) {
    const std::string v = req.get_param_value("max_garments");
    char* end = nullptr;
    const long n = std::strtol(v.c_str(), &end, 10);
    if (v.empty() || *end || n < 0 || n > 1000) throw bad("max_garments", v, "expected an integer from 0 (all) to 1000");
    o.max_garments = static_cast<int>(n);
  }
  if (req.has_param("flip")) {
    const std::string v = req.get_param_value("flip");
    if (v == "on" || v == "true" || v == "1")
      o.flip = true;
    else if (v == "off" || v == "false" || v == "0")
      o.flip = false;
    else
      throw bad("flip", v, "expected on or off");
  }
  return o;
}

// The image bytes of a request: multipart field "image", or the body itself. The format is told by
// its magic bytes, whatever the Content-Type says (curl --data-binary sends a form type).
std::string image_bytes(const httplib::Request& req) {
  if (!req.is_multipart_form_data()) return req.body;
  if (!req.has_file("image")) throw HttpError{400, "missing_image", "multipart upload without a field named 'image'"};
  return req.get_file_value("image").content;
}

nlohmann::json model_json(const Pipeline& pipeline) {
  const Config& cfg = pipeline.config();
  const LandmarkSchema& schema = pipeline.schema();
  const auto& det = cfg.model.detector;
  return {{"schema", schema.name},
          {"categories", categories_json(schema)},
          {"landmarks", schema.landmarks},
          {"detector_input", {{"min_size", det.min_size}, {"max_size", det.max_size}}},
          {"crop_input", {{"height", cfg.model.keypoints.input_size[0]}, {"width", cfg.model.keypoints.input_size[1]}}},
          {"stages", cfg.model.keypoints.stages},
          {"device", pipeline.device().str()},
          {"config", cfg.to_json()}};
}

}  // namespace

struct Server::Impl {
  Impl(Pipeline& p, ServeOptions o) : pipeline(p), opt(std::move(o)), model(model_json(p)) {}

  Pipeline& pipeline;
  ServeOptions opt;
  nlohmann::json model;
  Metrics metrics;
  std::unique_ptr<Batcher> batcher;
  httplib::Server http;
  http::Lifecycle lifecycle;
  int port = -1;

  bool authorised(const httplib::Request& req) const { return http::authorised(req, opt.token); }

  void landmarks(const httplib::Request& req, httplib::Response& res) {
    const auto start = Clock::now();
    Batcher::Arrival arrival(*batcher);
    try {
      const PredictOptions options = parse_options(req);
      const std::string bytes = image_bytes(req);
      if (bytes.empty()) throw HttpError{400, "empty_body", "empty body: send an image"};
      auto job = std::make_shared<Job>();
      try {
        job->image = decode_image(bytes, "upload", opt.max_pixels);
      } catch (const ImageError& e) {
        using Kind = ImageError::Kind;
        if (e.kind == Kind::TooLarge) throw HttpError{413, "too_many_pixels", std::string(e.what()) + " (--max-pixels)"};
        if (e.kind == Kind::Unsupported)
          throw HttpError{415, "unsupported_image",
                          std::string(e.what()) +
                              ": send the bytes of a JPEG, PNG, WebP or BMP image as the body (any Content-Type), or "
                              "multipart/form-data with the image in a field named 'image'"};
        throw HttpError{400, "bad_image", e.what()};
      }
      const double decode_ms = ms_between(start, Clock::now());
      job->options = options;
      job->queued = Clock::now();
      std::future<Answer> pending = job->answer.get_future();
      if (!batcher->submit(job, arrival)) {
        res.set_header("Retry-After", "1");
        throw HttpError{503, "queue_full",
                        "queue full: " + std::to_string(opt.max_queue) + " images waiting (--max-queue); retry later"};
      }
      if (pending.wait_for(std::chrono::duration<double>(opt.timeout_s)) != std::future_status::ready) {
        job->abandoned = true;
        char text[96];
        std::snprintf(text, sizeof text, "no answer within %g s (--timeout)", opt.timeout_s);
        throw HttpError{504, "timeout", text};
      }
      const Answer answer = pending.get();
      nlohmann::json garments = nlohmann::json::array();
      for (const auto& g : answer.garments) garments.push_back(garment_json(g, pipeline.schema()));
      const nlohmann::json out = {
          {"width", job->image.cols},
          {"height", job->image.rows},
          {"garments", garments},
          {"batch_size", answer.batch},
          {"timings_ms",
           {{"decode", decode_ms},
            {"queue", answer.queue_ms},
            {"detector", answer.timings.detector_ms},
            {"landmarks", answer.timings.landmarks_ms},
            {"total", ms_between(start, Clock::now())}}}};
      res.set_content(out.dump(), "application/json");
      metrics.latency(ms_between(start, Clock::now()) / 1000);
    } catch (const HttpError& e) {
      metrics.error(e.kind);
      send_error(res, e);
    } catch (const std::exception& e) {
      spdlog::error("POST /v1/landmarks: {}", e.what());
      metrics.error("internal");
      send_error(res, {500, "internal", e.what()});
    }
  }

  void routes() {
    http::page_routes(http, web_page());
    http.Get("/v1/model", [this](const httplib::Request& req, httplib::Response& res) {
      if (!authorised(req)) return send_error(res, {401, "unauthorized", "missing or wrong token"});
      res.set_content(model.dump(), "application/json");
    });
    http.Get("/metrics", [this](const httplib::Request& req, httplib::Response& res) {
      if (!authorised(req)) return send_error(res, {401, "unauthorized", "missing or wrong token"});
      res.set_content(metrics.text(batcher->depth()), "text/plain; version=0.0.4");
    });
    http.Post("/v1/landmarks", [this](const httplib::Request& req, httplib::Response& res) { landmarks(req, res); });
    // Before the body is read: the token, then curl's default form type is dropped (the library would
    // refuse a form above 8 KB); the body is told by its bytes, and a non-image form gets 415.
    http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (req.path != "/v1/landmarks" || req.method != "POST") return httplib::Server::HandlerResponse::Unhandled;
      if (!authorised(req)) {
        metrics.error("unauthorized");
        send_error(res, {401, "unauthorized", "missing or wrong token (Authorization: Bearer TOKEN)"});
        return httplib::Server::HandlerResponse::Handled;
      }
      auto& headers = const_cast<httplib::Request&>(req).headers;
      const auto type = headers.find("Content-Type");
      if (type != headers.end() && type->second.rfind("application/x-www-form-urlencoded", 0) == 0)
        type->second = "application/octet-stream";
      return httplib::Server::HandlerResponse::Unhandled;
    });
    http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
      metrics.request(req.path, res.status);
    });
  }
};

Server::Server(Pipeline& pipeline, ServeOptions opt) : impl_(std::make_unique<Impl>(pipeline, std::move(opt))) {
  const ServeOptions& o = impl_->opt;
  if (o.threads < 1 || o.max_batch < 1 || o.max_queue < 1 || o.max_wait_ms < 0 || o.timeout_s <= 0 || o.max_body_bytes == 0)
    throw std::invalid_argument("serve: threads, max_batch, max_queue, max_body_bytes and timeout_s must be positive");
  impl_->batcher = std::make_unique<Batcher>(pipeline, impl_->opt, impl_->metrics);
  http::configure(impl_->http, o, "no such endpoint: see GET / and POST /v1/landmarks",
                  [this](const std::string& kind) { impl_->metrics.error(kind); });
  impl_->routes();
}

Server::~Server() {
  stop();
}

int Server::bind() {
  return impl_->port = http::bind(impl_->http, impl_->opt);
}

int Server::port() const { return impl_->port; }

void Server::run() {
  if (impl_->port < 0) bind();
  impl_->lifecycle.run(impl_->http);
}

void Server::stop() {
  impl_->lifecycle.stop(impl_->http);
}

std::string read_token_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::invalid_argument("--token-file " + path + ": cannot read");
  std::string token;
  std::getline(in, token);
  while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) token.pop_back();
  if (token.empty()) throw std::invalid_argument("--token-file " + path + ": the first line is empty");
  return token;
}

}  // namespace cspn
