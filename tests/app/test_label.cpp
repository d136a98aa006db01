// Tests src/serve/label_server.cpp and label_store.cpp: `cspn label` over HTTP (a server in this
// process, on a free loopback port), its file as `cspn train --format coco` reads it, stale writes,
// bad bodies, paths, the token, a restart, the model's suggestions and retraining.
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <fstream>
#include <thread>


#include "cspn/cspn.hpp"
#include "cspn/serve/label.hpp"
#include "common.hpp"
#include "running.hpp"

namespace fs = std::filesystem;
using namespace cspn;
using json = nlohmann::json;

namespace {

using RunningLabel = test::Running<LabelServer>;

// Three synthetic scenes and a JPEG whose middle is zeroed, in a fresh folder.
fs::path photo_folder(const std::string& name) {
  const fs::path dir = test::scratch_dir(name) / "photos";
  fs::create_directories(dir);
  for (const char* f : {"000001.jpg", "000002.jpg", "000003.jpg"})
    fs::copy_file(test::tiny_scenes() / "img" / f, dir / f);
  std::string damaged = test::file_bytes(dir / "000001.jpg");
  std::fill(damaged.begin() + damaged.size() / 3, damaged.begin() + 2 * damaged.size() / 3, '\0');
  test::write_bytes(dir / "zeroed.jpg", damaged);
  return dir;
}

LabelOptions options(const fs::path& photos) {
  LabelOptions o;
  o.images = photos.string();
  o.out = (photos.parent_path() / "labels.json").string();
  o.http.port = 0;
  return o;
}

json body_of(const httplib::Result& r) { return json::parse(r->body); }

int id_of(const json& state, const std::string& name) {
  for (const auto& p : state["photos"])
    if (p["name"] == name) return p["id"];
  return -1;
}

// An upper-body garment with every landmark visible except right_hem, which is occluded.
json upper_garment() {
  return {{"category", "upper"},
          {"bbox", {10, 12, 90, 100}},
          {"keypoints",
           {{"left_collar", {40.5, 20.25, 2}}, {"right_collar", {70, 20, 2}}, {"left_sleeve", {15, 60, 2}},
            {"right_sleeve", {95, 60, 2}}, {"left_hem", {30, 105, 2}}, {"right_hem", {80, 106, 1}}}}};
}

httplib::Result put(httplib::Client& c, int id, const json& body) {
  return c.Put(("/v1/label/annotation/" + std::to_string(id)).c_str(), body.dump(), "application/json");
}

bool skip_without_fixture() { return !fs::exists(test::tiny_model()); }

}  // namespace

TEST(Label, SavesCocoThatTrainReadsAndRefusesStaleWrites) {
  if (skip_without_fixture()) GTEST_SKIP() << "no " << test::tiny_scenes() << ": run through ctest (fixture tiny_model)";
  const fs::path photos = photo_folder("label-save");
  const LabelOptions opt = options(photos);
  RunningLabel server(opt);
  auto c = server.client();
  const json state = body_of(c.Get("/v1/label/state"));
  ASSERT_EQ(state["photos"].size(), 4u);
  EXPECT_EQ(state["counts"]["left"], 3);
  EXPECT_EQ(state["counts"]["unreadable"], 1);
  EXPECT_TRUE(state["photos"].back().contains("error")) << "the zeroed JPEG comes last, with its error";
  EXPECT_EQ(state["photos"].back()["name"], "zeroed.jpg");
  const int id = id_of(state, "000002.jpg");
  EXPECT_EQ(body_of(c.Get(("/v1/label/annotation/" + std::to_string(id)).c_str()))["source"], "none");

  auto saved = put(c, id, {{"version", 0}, {"status", "labelled"}, {"garments", {upper_garment()}}});
  ASSERT_EQ(saved->status, 200) << saved->body;
  EXPECT_EQ(body_of(saved)["version"], 1);
  const std::string file = test::file_bytes(opt.out);

  // What `cspn train --format coco` reads: the garment as sent, the occluded landmark with v=1.
  const Dataset read = read_dataset(opt.out, "coco");
  ASSERT_EQ(read.samples.size(), 1u);
  EXPECT_EQ(fs::path(read.samples[0].image).filename(), "000002.jpg");
  ASSERT_EQ(read.samples[0].garments.size(), 1u);
  const Garment& g = read.samples[0].garments[0];
  const LandmarkSchema& schema = LandmarkSchema::deepfashion();
  EXPECT_EQ(schema.categories[g.category].name, "upper");
  EXPECT_NEAR(g.box.x2, 100, 1e-3);
  EXPECT_NEAR(g.keypoints[schema.landmark_index("left_collar")].x, 40.5, 1e-3);
  EXPECT_EQ(g.keypoints[schema.landmark_index("right_hem")].v, Visibility::Occluded);
  EXPECT_EQ(g.keypoints[schema.landmark_index("left_waistline")].v, Visibility::Absent);

  // A second tab that still holds version 0 is refused, and told the current garments.
  auto stale = put(c, id, {{"version", 0}, {"status", "labelled"}, {"garments", json::array()}});
  ASSERT_EQ(stale->status, 409) << stale->body;
  EXPECT_EQ(body_of(stale)["current"]["version"], 1);
  EXPECT_EQ(body_of(stale)["current"]["garments"].size(), 1u);

  // Bodies that are not the expected JSON: 400 naming the field, and the file as it was.
  json unknown_landmark = upper_garment();
  unknown_landmark["keypoints"]["left_waistline"] = {1, 2, 2};
  json bad_v = upper_garment();
  bad_v["keypoints"]["left_hem"] = {1, 2, 3};
  json far = upper_garment();
  far["keypoints"]["left_hem"] = {1e39, 2, 1};
  json outside = upper_garment();
  outside["bbox"] = {200, 10, 20, 20};  // the photo is 128 pixels wide
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"not json", "body"},
      {json{{"status", "labelled"}, {"garments", json::array()}}.dump(), "version"},
      {json{{"version", 1}, {"status", "done"}}.dump(), "status"},
      {json{{"version", 1}, {"status", "labelled"}, {"garments", {{{"category", "hat"}}}}}.dump(), "garments[0].category"},
      {json{{"version", 1}, {"status", "labelled"}, {"garments", {unknown_landmark}}}.dump(), "keypoints.left_waistline"},
      {json{{"version", 1}, {"status", "labelled"}, {"garments", {bad_v}}}.dump(), "keypoints.left_hem[2]"},
      {json{{"version", 1}, {"status", 2}}.dump(), "status"},
      {json{{"version", 1}, {"status", "labelled"}, {"garments", {far}}}.dump(), "out of range"},
      {json{{"version", 1}, {"status", "labelled"}, {"garments", {outside}}}.dump(), "outside the 128x128 photo"}};
  for (const auto& [body, field] : bad) {
    auto r = c.Put(("/v1/label/annotation/" + std::to_string(id)).c_str(), body, "application/json");
    ASSERT_EQ(r->status, 400) << body;
    EXPECT_TRUE(test::contains(body_of(r)["error"], field)) << r->body;
  }
  auto unreadable = put(c, id_of(state, "zeroed.jpg"), {{"version", 0}, {"status", "labelled"}, {"garments", json::array()}});
  EXPECT_EQ(unreadable->status, 400) << "a photo that cannot be decoded gets no garments in the file";
  EXPECT_EQ(test::file_bytes(opt.out), file);
}

TEST(Label, NothingOutsideTheFolderIsServedAndTheTokenIsEnforced) {
  if (skip_without_fixture()) GTEST_SKIP() << "no " << test::tiny_scenes() << ": run through ctest (fixture tiny_model)";
  const fs::path photos = photo_folder("label-paths");
  test::write_bytes(photos.parent_path() / "secret.txt", "not a photo");
  LabelOptions opt = options(photos);
  opt.http.token = "s3cret";
  RunningLabel server(opt);
  auto c = server.client();
  const httplib::Headers auth = {{"Authorization", "Bearer s3cret"}};
  for (const char* path : {"/v1/label/image/..%2Fsecret.txt", "/v1/label/image/../secret.txt", "/v1/label/image/4",
                           "/v1/label/image/99999999999999999999", "/v1/label/image/-1", "/secret.txt", "/../secret.txt"}) {
    auto r = c.Get(path, auth);
    ASSERT_TRUE(r) << path;
    EXPECT_TRUE(r->status == 404 || r->status == 403 || r->status == 400) << path << ": " << r->status;
    EXPECT_FALSE(test::contains(r->body, "not a photo")) << path;
  }
  auto image = c.Get("/v1/label/image/0", auth);
  ASSERT_EQ(image->status, 200);
  EXPECT_EQ(image->body, test::file_bytes(photos / "000001.jpg"));
  EXPECT_EQ(image->get_header_value("Content-Type"), "image/jpeg");

  EXPECT_EQ(c.Get("/v1/label/state")->status, 401);
  EXPECT_EQ(c.Get("/v1/label/image/0")->status, 401);
  EXPECT_EQ(c.Get("/v1/label/state", {{"Authorization", "Bearer wrong"}})->status, 401);
  EXPECT_EQ(put(c, 0, {{"version", 0}, {"status", "skipped"}})->status, 401);
  EXPECT_FALSE(fs::exists(opt.out)) << "refused before anything is written";
  EXPECT_EQ(c.Get("/")->status, 200) << "the page itself asks for the token";
  EXPECT_EQ(c.Get("/v1/label/state", auth)->status, 200);
}

TEST(Label, ListsWhatABrowserShowsAndNotTheRunsOfItsOwnButton) {
  if (skip_without_fixture()) GTEST_SKIP() << "no " << test::tiny_scenes() << ": run through ctest (fixture tiny_model)";
  const fs::path photos = photo_folder("label-listing");
  LabelOptions opt = options(photos);
  opt.out = (photos / "labels.json").string();  // the file and its runs inside the folder
  fs::create_directories(photos / "labels-runs" / "run-1-unlabelled");
  fs::copy_file(photos / "000001.jpg", photos / "labels-runs" / "run-1-unlabelled" / "0-000001.jpg");
  fs::copy_file(photos / "000001.jpg", photos / "scan.tif");
  RunningLabel server(opt);
  const json state = body_of(server.client().Get("/v1/label/state"));
  std::vector<std::string> names;
  for (const auto& p : state["photos"]) names.push_back(p["name"]);
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"000001.jpg", "000002.jpg", "000003.jpg", "zeroed.jpg"}));
}

TEST(Label, ARestartContinuesWhereTheUserStopped) {
  if (skip_without_fixture()) GTEST_SKIP() << "no " << test::tiny_scenes() << ": run through ctest (fixture tiny_model)";
  const fs::path photos = photo_folder("label-restart");
  const LabelOptions opt = options(photos);
  json before;
  {
    RunningLabel server(opt);
    auto c = server.client();
    const json state = body_of(c.Get("/v1/label/state"));
    ASSERT_EQ(put(c, id_of(state, "000001.jpg"), {{"version", 0}, {"status", "labelled"}, {"garments", {upper_garment()}}})->status, 200);
    ASSERT_EQ(put(c, id_of(state, "000003.jpg"), {{"version", 0}, {"status", "skipped"}})->status, 200);
    before = body_of(c.Get("/v1/label/annotation/" + std::to_string(id_of(state, "000001.jpg"))));
  }
  RunningLabel again(opt);
  auto c = again.client();
  const json state = body_of(c.Get("/v1/label/state"));
  EXPECT_EQ(state["counts"]["labelled"], 1);
  EXPECT_EQ(state["counts"]["skipped"], 1);
  EXPECT_EQ(state["counts"]["left"], 1);
  const json after = body_of(c.Get("/v1/label/annotation/" + std::to_string(id_of(state, "000001.jpg"))));
  EXPECT_EQ(after["version"], 1);
  EXPECT_EQ(after["source"], "saved");
  EXPECT_EQ(after["garments"], before["garments"]);
  // The layout a new upper garment starts from is now the saved garment's, in box units.
  const json layout = state["mean_layout"]["upper"];
  EXPECT_NEAR(layout["left_collar"][0].get<double>(), (40.5 - 10) / 90, 1e-4);
  EXPECT_NEAR(layout["left_collar"][1].get<double>(), (20.25 - 12) / 100, 1e-4);
  EXPECT_LT(state["mean_layout"]["lower"]["left_waistline"][0].get<double>(), 0.5) << "no lower garment yet: the ellipse";
  EXPECT_EQ(put(c, id_of(state, "000003.jpg"), {{"version", 0}, {"status", "labelled"}, {"garments", json::array()}})->status, 409)
      << "versions survive the restart";
}

TEST(Label, AModelSuggestsOrdersByUncertaintyAndRetrains) {
  if (skip_without_fixture()) GTEST_SKIP() << "no " << test::tiny_model() << ": run through ctest (fixture tiny_model)";
  const fs::path photos = photo_folder("label-model");
  LabelOptions opt = options(photos);
  opt.model = test::tiny_model().string();
  opt.sets = {"test.min_score=0", "train.iters=2", "train_detector.iters=2", "semi.keypoint_iters=1", "semi.detector_iters=1", "train.epochs=1",
              "train_detector.epochs=1"};
  RunningLabel server(opt);
  auto c = server.client();
  const json state = body_of(c.Get("/v1/label/state"));
  std::vector<double> order;
  for (const auto& p : state["photos"])
    if (p.contains("uncertainty")) order.push_back(p["uncertainty"]);
  ASSERT_EQ(order.size(), 3u) << state.dump();
  EXPECT_TRUE(std::is_sorted(order.rbegin(), order.rend())) << "most uncertain first";
  const json suggestion = body_of(c.Get("/v1/label/annotation/" + std::to_string(state["photos"][0]["id"].get<int>())));
  EXPECT_EQ(suggestion["source"], "model");
  ASSERT_FALSE(suggestion["garments"].empty());

  EXPECT_EQ(c.Post("/v1/label/train")->status, 400) << "nothing labelled yet";
  json garment = suggestion["garments"][0];
  garment.erase("score");
  ASSERT_EQ(put(c, suggestion["id"], {{"version", 0}, {"status", "labelled"}, {"garments", {garment}}})->status, 200);
  ASSERT_EQ(c.Post("/v1/label/train")->status, 202);
  json training;
  for (int i = 0; i < 600; ++i) {
    training = body_of(c.Get("/v1/label/state"))["training"];
    if (training["state"] != "running") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ASSERT_EQ(training["state"], "done") << training.dump();
  EXPECT_TRUE(fs::exists(training["model"].get<std::string>()));
  EXPECT_EQ(training["unlabelled"], 2) << "the two photos left, as --unlabelled";
  EXPECT_EQ(body_of(c.Get("/v1/label/state"))["model"], training["model"]);
}

TEST(Label, TheCommandRefusesBadFlagsAndStopsOnSigterm) {
  if (skip_without_fixture()) GTEST_SKIP() << "no " << test::tiny_model() << ": run through ctest (fixture tiny_model)";
  const fs::path photos = photo_folder("label-command");
  const std::string cspn = std::string(test::kBinaryDir) + "/cspn", err = (photos.parent_path() / "err.txt").string();
  const auto run = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {cspn, "label"});
    return test::run_process(args, "", err);
  };
  EXPECT_EQ(run({"--images", (photos / "000001.jpg").string(), "--out", "x.json"}), 2) << "not a folder";
  EXPECT_EQ(run({"--images", photos.string(), "--out", (photos / "000002.jpg" / "labels.json").string()}), 4)
      << test::file_bytes(err);
  EXPECT_EQ(run({"--images", photos.string(), "--out", "x.json", "--model", test::tiny_model().string(), "--schema",
                 "fashionai"}),
            2);
  EXPECT_TRUE(test::contains(test::file_bytes(err), "schema deepfashion")) << test::file_bytes(err);

  const std::string out = (photos.parent_path() / "labels.json").string();
  const int port = 20000 + (getpid() + 7) % 20000;
  const pid_t pid = test::spawn_process({cspn, "label", "--images", photos.string(), "--out", out, "--port",
                                         std::to_string(port)});
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(test::comes_up(port)) << "cspn label did not come up on port " << port;
  httplib::Client client("127.0.0.1", port);
  EXPECT_EQ(put(client, 1, {{"version", 0}, {"status", "skipped"}})->status, 200);
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status)) << "killed by a signal instead of stopping";
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(json::parse(test::file_bytes(out))["cspn_label"]["skipped"], json::array({"000002.jpg"}));
}
