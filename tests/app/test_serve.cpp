// Tests src/serve/server.cpp: the HTTP service against a running server (in this process, on a free
// loopback port), and the `cspn serve` command's clean shutdown on SIGTERM.
#include <csignal>
#include <fstream>
#include <future>
#include <thread>

#include <httplib.h>
#include <opencv2/imgcodecs.hpp>

#include "cspn/cspn.hpp"
#include "cspn/serve/server.hpp"
#include "common.hpp"
#include "running.hpp"

namespace fs = std::filesystem;
using namespace cspn;

namespace {

// A PNG whose header declares width x height pixels, with no image data: a decompression bomb's
// first bytes. Small on the wire, huge once decoded.
std::string png_declaring(uint32_t width, uint32_t height) {
  std::string png("\x89PNG\r\n\x1a\n", 8);
  const auto be32 = [&](uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) png.push_back(static_cast<char>((v >> s) & 0xFF));
  };
  be32(13);
  png += "IHDR";
  be32(width);
  be32(height);
  png += std::string("\x08\x02\x00\x00\x00", 5);
  be32(0);  // CRC (not checked before the size)
  be32(0);
  png += "IEND";
  be32(0xAE426082);
  return png;
}

ServeOptions on_any_port(ServeOptions opt) {
  opt.port = 0;
  return opt;
}

// `cspn serve` on a free port, serving from a thread until the test ends.
class Running : public test::Running<Server> {
 public:
  Running(Pipeline& pipeline, const ServeOptions& opt) : test::Running<Server>(pipeline, on_any_port(opt)) {}
  bool healthy() const {
    auto r = client().Get("/healthz");
    return r && r->status == 200;
  }
  // `n` clients posting `body` at once, each on its own connection.
  std::vector<httplib::Result> concurrent_posts(int n, const std::string& body) const {
    std::vector<std::future<httplib::Result>> pending;
    for (int i = 0; i < n; ++i)
      pending.push_back(std::async(std::launch::async, [&] { return client().Post("/v1/landmarks", body, "image/jpeg"); }));
    std::vector<httplib::Result> results;
    for (auto& p : pending) results.push_back(p.get());
    return results;
  }
};

nlohmann::json body_of(const httplib::Result& r) { return nlohmann::json::parse(r->body); }

class Serve : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!fs::exists(test::tiny_model())) return;
    model_ = new ModelFile(load_model_file(test::tiny_model().string()));
    pipeline_ = new Pipeline(*model_, torch::kCPU);
  }
  static void TearDownTestSuite() {
    delete pipeline_;
    delete model_;
  }
  void SetUp() override {
    if (!pipeline_) GTEST_SKIP() << "no " << test::tiny_model() << ": run through ctest (fixture tiny_model)";
  }
  static fs::path photo() { return test::tiny_scenes() / "img" / "000001.jpg"; }

  static ModelFile* model_;
  static Pipeline* pipeline_;
};
ModelFile* Serve::model_ = nullptr;
Pipeline* Serve::pipeline_ = nullptr;

}  // namespace

TEST_F(Serve, AnswersJpegPngAndMultipartWithGarmentsAndTimings) {
  Running server(*pipeline_, {});
  auto client = server.client();
  const std::string jpeg = test::file_bytes(photo());
  const cv::Mat decoded = cv::imread(photo().string());
  std::vector<uchar> png;
  ASSERT_TRUE(cv::imencode(".png", decoded, png));

  std::vector<httplib::Result> results;
  results.push_back(client.Post("/v1/landmarks?min_score=0", jpeg, "image/jpeg"));
  results.push_back(client.Post("/v1/landmarks?min_score=0", std::string(png.begin(), png.end()), "image/png"));
  results.push_back(client.Post("/v1/landmarks?min_score=0", httplib::MultipartFormDataItems{{"image", jpeg, "photo.jpg", "image/jpeg"}}));
  for (const auto& r : results) {
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    const auto j = body_of(r);
    EXPECT_EQ(j["width"], decoded.cols);
    EXPECT_EQ(j["height"], decoded.rows);
    // The fixture's detector keeps its 4 best boxes; min_score=0 reports them all.
    ASSERT_EQ(j["garments"].size(), 4u) << r->body;
    for (const auto& g : j["garments"]) {
      const std::string category = g["category"];
      const auto& cat = pipeline_->schema().categories[pipeline_->schema().category_index(category)];
      EXPECT_EQ(g["landmarks"].size(), cat.landmarks.size()) << "named landmarks of its category";
      for (const auto& [name, p] : g["landmarks"].items()) EXPECT_TRUE(p.contains("x") && p.contains("visible")) << name;
    }
    for (const char* step : {"decode", "queue", "detector", "landmarks", "total"})
      EXPECT_GE(j["timings_ms"][step].get<double>(), 0.0) << step;
  }
  // The same photo answers the same, whatever the encoding (PNG is lossless from the decoded JPEG).
  EXPECT_EQ(body_of(results[0])["garments"], body_of(results[2])["garments"]);
}

TEST_F(Serve, QueryOptionsChooseScoreCountAndFlip) {
  Running server(*pipeline_, {});
  auto client = server.client();
  const std::string jpeg = test::file_bytes(photo());
  auto one = client.Post("/v1/landmarks?min_score=0&max_garments=1", jpeg, "image/jpeg");
  ASSERT_TRUE(one && one->status == 200);
  EXPECT_EQ(body_of(one)["garments"].size(), 1u);
  auto none = client.Post("/v1/landmarks?min_score=1", jpeg, "image/jpeg");
  ASSERT_TRUE(none && none->status == 200);
  EXPECT_EQ(body_of(none)["garments"].size(), 0u) << "this barely trained detector scores below 1";

  // flip=off answers as the pipeline does without the flip test.
  auto plain = client.Post("/v1/landmarks?min_score=0&flip=off", jpeg, "image/jpeg");
  ASSERT_TRUE(plain && plain->status == 200);
  PredictOptions off;
  off.min_score = 0;
  off.flip = false;
  const auto direct = pipeline_->predict({read_image(photo().string())}, {off}).front();
  const auto served = body_of(plain)["garments"];
  ASSERT_EQ(served.size(), direct.size());
  for (size_t i = 0; i < direct.size(); ++i) EXPECT_EQ(served[i], garment_json(direct[i], pipeline_->schema()));

  for (const char* bad : {"min_score=2", "min_score=abc", "max_garments=-1", "flip=maybe"}) {
    auto r = client.Post(std::string("/v1/landmarks?") + bad, jpeg, "image/jpeg");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400) << bad;
    EXPECT_EQ(body_of(r)["error_kind"], "bad_parameter") << bad;
  }
  EXPECT_TRUE(server.healthy());
}

TEST_F(Serve, BadUploadsGetTheirStatusAndAJsonError) {
  ServeOptions opt;
  opt.max_body_bytes = 256 * 1024;
  opt.max_pixels = 4'000'000;
  Running server(*pipeline_, opt);
  auto client = server.client();
  const std::string jpeg = test::file_bytes(photo());
  struct Case {
    std::string name, body;
    int status;
    std::string kind;
  };
  const std::vector<Case> cases = {
      {"empty body", "", 400, "empty_body"},
      {"truncated JPEG", jpeg.substr(0, jpeg.size() / 2), 400, "bad_image"},
      {"text file", "name,score\nshirt,1\n", 415, "unsupported_image"},
      {"PNG bomb", png_declaring(30000, 30000), 413, "too_many_pixels"},
      {"body over the limit", std::string(300 * 1024, 'x'), 413, "body_too_large"},
  };
  for (const auto& c : cases) {
    auto r = client.Post("/v1/landmarks", c.body, "application/octet-stream");
    ASSERT_TRUE(r) << c.name;
    EXPECT_EQ(r->status, c.status) << c.name << ": " << r->body;
    const auto j = nlohmann::json::parse(r->body, nullptr, false);
    ASSERT_TRUE(j.is_object()) << c.name << ": " << r->body;
    EXPECT_EQ(j["error_kind"], c.kind) << c.name;
    EXPECT_FALSE(j["error"].get<std::string>().empty()) << c.name;
    EXPECT_TRUE(server.healthy()) << "after " << c.name;
  }
  auto missing = client.Post("/v1/landmarks", httplib::MultipartFormDataItems{{"photo", jpeg, "a.jpg", "image/jpeg"}});
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 400);
  EXPECT_EQ(body_of(missing)["error_kind"], "missing_image");

  auto metrics = client.Get("/metrics");
  ASSERT_TRUE(metrics && metrics->status == 200);
  for (const char* line : {"cspn_errors_total{kind=\"too_many_pixels\"} 1", "cspn_errors_total{kind=\"body_too_large\"} 1",
                           "cspn_requests_total{path=\"/v1/landmarks\",code=\"415\"} 1", "cspn_queue_depth 0"})
    EXPECT_NE(metrics->body.find(line), std::string::npos) << line << "\n" << metrics->body;
}

TEST_F(Serve, TokenIsRequiredWhereSet) {
  ServeOptions opt;
  opt.token = "s3cret-token";
  Running server(*pipeline_, opt);
  auto client = server.client();
  const std::string jpeg = test::file_bytes(photo());
  for (const std::string header : {"", "Bearer wrong-token!", "Bearer s3cret-toke", "s3cret-token"}) {
    httplib::Headers h;
    if (!header.empty()) h.emplace("Authorization", header);
    auto r = client.Post("/v1/landmarks", h, jpeg, "image/jpeg");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 401) << "'" << header << "'";
    EXPECT_EQ(body_of(r)["error_kind"], "unauthorized");
  }
  auto model = client.Get("/v1/model");
  ASSERT_TRUE(model);
  EXPECT_EQ(model->status, 401);
  auto ok = client.Post("/v1/landmarks", {{"Authorization", "Bearer s3cret-token"}}, jpeg, "image/jpeg");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
  EXPECT_TRUE(server.healthy()) << "/healthz stays open";
}

// The body is told by its bytes, not by the Content-Type a client sends: curl --data-binary's
// default form type carries a 72 KB photo as well as image/jpeg does; a form that is not an image
// gets 415 naming the accepted types; with a token required, a body without it gets 401 before any
// check of the body, however large.
TEST_F(Serve, TheBodyIsToldByItsBytesAndTheTokenComesFirst) {
  const std::string jpeg = test::file_bytes(photo());
  cv::Mat noise(320, 320, CV_8UC3);  // a photo past the library's 8 KB form limit
  cv::randu(noise, 0, 256);
  std::vector<uchar> encoded;
  ASSERT_TRUE(cv::imencode(".jpg", noise, encoded, {cv::IMWRITE_JPEG_QUALITY, 95}));
  const std::string large(encoded.begin(), encoded.end());
  ASSERT_GT(large.size(), 72u * 1024);
  {
    Running server(*pipeline_, ServeOptions{});
    auto client = server.client();
    for (const std::string& body : {jpeg, large}) {
      auto r = client.Post("/v1/landmarks?max_garments=3", body, "application/x-www-form-urlencoded");
      ASSERT_TRUE(r);
      EXPECT_EQ(r->status, 200) << r->body;
    }
    auto none = client.Post("/v1/landmarks", jpeg, "");
    ASSERT_TRUE(none);
    EXPECT_EQ(none->status, 200) << none->body;
    auto form = client.Post("/v1/landmarks", "name=shirt&size=42", "application/x-www-form-urlencoded");
    ASSERT_TRUE(form);
    EXPECT_EQ(form->status, 415);
    const std::string message = body_of(form)["error"].get<std::string>();
    EXPECT_NE(message.find("JPEG, PNG, WebP or BMP"), std::string::npos) << message;
    EXPECT_NE(message.find("multipart"), std::string::npos) << message;
  }
  ServeOptions with_token;
  with_token.token = "s3cret-token";
  with_token.max_body_bytes = 1024;
  Running server(*pipeline_, with_token);
  auto client = server.client();
  for (const char* type : {"application/x-www-form-urlencoded", "image/jpeg"}) {
    auto r = client.Post("/v1/landmarks", large, type);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 401) << type << ": " << r->body;
  }
  auto too_large = client.Post("/v1/landmarks", {{"Authorization", "Bearer s3cret-token"}}, large, "image/jpeg");
  ASSERT_TRUE(too_large);
  EXPECT_EQ(too_large->status, 413) << "with the token, the body's own checks";
}

TEST_F(Serve, ModelPageAndHealth) {
  Running server(*pipeline_, {});
  auto client = server.client();
  auto model = client.Get("/v1/model");
  ASSERT_TRUE(model && model->status == 200);
  const auto j = body_of(model);
  EXPECT_EQ(j["landmarks"].size(), static_cast<size_t>(pipeline_->schema().num_landmarks()));
  EXPECT_EQ(j["categories"].size(), static_cast<size_t>(pipeline_->schema().num_categories()));
  EXPECT_EQ(j["crop_input"]["height"], pipeline_->config().model.keypoints.input_size[0]);
  EXPECT_EQ(j["config"]["model"]["keypoints"]["stages"], pipeline_->config().model.keypoints.stages);
  auto page = client.Get("/");
  ASSERT_TRUE(page && page->status == 200);
  EXPECT_NE(page->get_header_value("Content-Type").find("text/html"), std::string::npos);
  EXPECT_NE(page->body.find("v1/landmarks"), std::string::npos) << "the page calls the API";
  auto missing = client.Get("/v2/nothing");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  EXPECT_EQ(body_of(missing)["error_kind"], "not_found");
}

TEST_F(Serve, ConcurrentClientsAreBatched) {
  ServeOptions opt;
  opt.threads = 32;
  opt.max_batch = 8;
  opt.max_wait_ms = 20;
  Running server(*pipeline_, opt);
  int largest = 0;
  for (const auto& r : server.concurrent_posts(32, test::file_bytes(photo()))) {
    ASSERT_TRUE(r) << httplib::to_string(r.error());
    ASSERT_EQ(r->status, 200) << r->body;
    largest = std::max(largest, body_of(r)["batch_size"].get<int>());
  }
  EXPECT_GT(largest, 1) << "32 clients at once share pipeline calls";
  EXPECT_LE(largest, 8) << "max_batch bounds them";
  EXPECT_TRUE(server.healthy());
}

TEST_F(Serve, FullQueueAndTimeoutAreRefusedNotCrashed) {
  ServeOptions opt;
  opt.threads = 16;
  opt.max_batch = 1;
  opt.max_queue = 1;
  Running server(*pipeline_, opt);
  const std::string jpeg = test::file_bytes(photo());
  int ok = 0, full = 0;
  for (const auto& r : server.concurrent_posts(12, jpeg)) {
    ASSERT_TRUE(r);
    if (r->status == 200) ++ok;
    if (r->status == 503) {
      ++full;
      EXPECT_EQ(r->get_header_value("Retry-After"), "1");
      EXPECT_EQ(body_of(r)["error_kind"], "queue_full");
    }
  }
  EXPECT_GE(ok, 1);
  EXPECT_GE(full, 1) << "12 requests at once against a queue of 1";
  EXPECT_EQ(ok + full, 12);

  ServeOptions hurried;
  hurried.timeout_s = 1e-4;
  Running slow(*pipeline_, hurried);
  auto late = slow.client().Post("/v1/landmarks", jpeg, "image/jpeg");
  ASSERT_TRUE(late);
  EXPECT_EQ(late->status, 504);
  EXPECT_EQ(body_of(late)["error_kind"], "timeout");
  EXPECT_TRUE(slow.healthy());
}

TEST_F(Serve, AStopBeforeRunIsNotLost) {
  // A Ctrl+C while a server is still starting: run() must return, not serve for good.
  ServeOptions opt;
  opt.port = 0;
  Server server(*pipeline_, opt);
  server.bind();
  server.stop();
  auto running = std::async(std::launch::async, [&] { server.run(); });
  EXPECT_EQ(running.wait_for(std::chrono::seconds(10)), std::future_status::ready);
}

TEST_F(Serve, CommandFinishesRequestsInFlightOnSigterm) {
  const int port = 20000 + getpid() % 20000;
  const pid_t pid = test::spawn_process({std::string(test::kBinaryDir) + "/cspn", "serve", "--model",
                                         test::tiny_model().string(), "--port", std::to_string(port)});
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(test::comes_up(port)) << "cspn serve did not come up on port " << port;
  const std::string jpeg = test::file_bytes(photo());
  std::vector<std::future<int>> in_flight;
  for (int i = 0; i < 4; ++i)
    in_flight.push_back(std::async(std::launch::async, [&] {
      httplib::Client c("127.0.0.1", port);
      c.set_read_timeout(60, 0);
      auto r = c.Post("/v1/landmarks", jpeg, "image/jpeg");
      return r ? r->status : -1;
    }));
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status)) << "killed by a signal instead of stopping";
  EXPECT_EQ(WEXITSTATUS(status), 0);
  for (auto& f : in_flight) {
    const int code = f.get();
    // Sent before the signal: answered. Sent after it: the connection is refused (-1), never a 5xx.
    EXPECT_TRUE(code == 200 || code == -1) << code;
  }
}
