#include "cspn/serve/label.hpp"

#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <spdlog/spdlog.h>

#include "cspn/api/json.hpp"
#include "cspn/commands/commands.hpp"
#include "cspn/core/io/atomic_file.hpp"
#include "cspn/engine/progress.hpp"
#include "http.hpp"
#include "label_store.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace cspn {
namespace {

using http::HttpError;
using http::send_error;

json box_json(const Box& b) { return {b.x1, b.y1, b.width(), b.height()}; }

json saved_json(const Garment& g, const LandmarkSchema& schema) {
  json keypoints = json::object();
  for (int k : schema.categories[g.category].landmarks) {
    const Keypoint& p = g.keypoints[k];
    const int v = p.v == Visibility::Visible ? 2 : p.v == Visibility::Occluded ? 1 : 0;
    keypoints[schema.landmarks[k]] = {p.x, p.y, v};
  }
  return {{"category", schema.categories[g.category].name}, {"bbox", box_json(g.box)}, {"keypoints", keypoints}};
}

// The model's garment as a starting point, inside the photo: landmarks below test.visible_score
// start occluded.
json suggested_json(const GarmentPrediction& g, const LandmarkSchema& schema, int width, int height) {
  const auto inside = [](float v, int hi) { return std::min(std::max(v, 0.0f), static_cast<float>(hi)); };
  json keypoints = json::object();
  for (int k : schema.categories[g.category].landmarks) {
    const LandmarkPoint& p = g.landmarks[k];
    keypoints[schema.landmarks[k]] = {inside(p.x, width), inside(p.y, height), p.visible ? 2 : 1};
  }
  return {{"category", schema.categories[g.category].name}, {"bbox", box_json(g.box)}, {"keypoints", keypoints},
          {"score", g.score}};
}

// A coordinate: finite, and within a million pixels (beyond, a float loses the pixel).
float number(const json& v, const std::string& where) {
  if (!v.is_number() || !std::isfinite(v.get<double>())) throw HttpError{400, "bad_json", where + ": expected a number"};
  if (std::fabs(v.get<double>()) > 1e6) throw HttpError{400, "bad_json", where + ": " + v.dump() + " is out of range"};
  return v.get<float>();
}

// One garment of a PUT body; 400 naming the field that is wrong.
Garment garment_from_page(const json& j, const LandmarkSchema& schema, const std::string& where) {
  const auto bad = [&](const std::string& what) { return HttpError{400, "bad_json", where + what}; };
  if (!j.is_object()) throw bad(": expected an object");
  Garment g;
  const auto cat = j.find("category");
  if (cat == j.end() || !cat->is_string()) throw bad(".category: expected a category name");
  for (int c = 0; c < schema.num_categories(); ++c)
    if (schema.categories[c].name == cat->get<std::string>()) g.category = c;
  if (g.category < 0) throw bad(".category: no category '" + cat->get<std::string>() + "' in schema " + schema.name);
  const auto bbox = j.find("bbox");
  if (bbox == j.end() || !bbox->is_array() || bbox->size() != 4) throw bad(".bbox: expected [x, y, w, h]");
  const float x = number((*bbox)[0], where + ".bbox[0]"), y = number((*bbox)[1], where + ".bbox[1]");
  const float w = number((*bbox)[2], where + ".bbox[2]"), h = number((*bbox)[3], where + ".bbox[3]");
  if (!(w > 0 && h > 0)) throw bad(".bbox: width and height must be positive");
  g.box = {x, y, x + w, y + h};
  g.keypoints.resize(schema.num_landmarks());
  const auto kps = j.find("keypoints");
  if (kps == j.end() || !kps->is_object()) throw bad(".keypoints: expected {name: [x, y, v]}");
  const auto& ours = schema.categories[g.category].landmarks;
  for (const auto& [name, p] : kps->items()) {
    const std::string at = where + ".keypoints." + name;
    const auto slot = std::find(schema.landmarks.begin(), schema.landmarks.end(), name);
    const int k = static_cast<int>(slot - schema.landmarks.begin());
    if (slot == schema.landmarks.end() || std::find(ours.begin(), ours.end(), k) == ours.end())
      throw HttpError{400, "bad_json", at + ": category " + cat->get<std::string>() + " has no such landmark"};
    if (!p.is_array() || p.size() != 3) throw HttpError{400, "bad_json", at + ": expected [x, y, v]"};
    const float v = number(p[2], at + "[2]");
    if (v != 0 && v != 1 && v != 2) throw HttpError{400, "bad_json", at + "[2]: v is 0, 1 or 2"};
    g.keypoints[k] = {number(p[0], at + "[0]"), number(p[1], at + "[1]"),
                      v == 2 ? Visibility::Visible : v == 1 ? Visibility::Occluded : Visibility::Absent};
  }
  return g;
}

std::string content_type(const std::string& path) {
  std::string ext = fs::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  if (ext == ".jpg" || ext == ".jpeg") return "image/jpeg";
  if (ext == ".png") return "image/png";
  if (ext == ".webp") return "image/webp";
  if (ext == ".bmp") return "image/bmp";
  return "application/octet-stream";
}

// The first of base-1, base-2, ... that does not exist yet.
fs::path fresh_path(const fs::path& base) {
  for (int n = 1;; ++n) {
    fs::path p = base.string() + "-" + std::to_string(n);
    if (!fs::exists(p)) return p;
  }
}

}  // namespace

struct LabelServer::Impl {
  LabelOptions opt;
  std::unique_ptr<LabelStore> store;
  std::mutex model_mutex;             // pipeline, model_path, settings
  std::unique_ptr<Pipeline> pipeline;
  std::string model_path;
  std::optional<Config> settings;     // retraining: --config, else the model's
  std::string schema_spec;            // retraining's data.schema: --schema, else the model's where built in
  httplib::Server server;
  http::Lifecycle lifecycle;
  int port = -1;

  std::mutex train_mutex;
  json training = {{"state", "idle"}};
  std::thread trainer;
  std::atomic<bool> stopping{false};

  explicit Impl(LabelOptions o) : opt(std::move(o)) {
    LandmarkSchema schema = LandmarkSchema::load(opt.schema.empty() ? "deepfashion" : opt.schema);
    std::optional<ModelFile> model;
    if (!opt.model.empty()) {
      model = load_model_with(opt.model, opt.sets);
      if (!opt.schema.empty() && schema.name != model->schema.name)
        throw std::invalid_argument("--schema " + opt.schema + ": the model's landmarks are schema " + model->schema.name);
      schema = model->schema;
    }
    const auto builtin = LandmarkSchema::builtin_names();
    schema_spec = !opt.schema.empty() ? opt.schema
                : std::find(builtin.begin(), builtin.end(), schema.name) != builtin.end() ? schema.name : "";
    check_writable(opt.out);
    store = std::make_unique<LabelStore>(opt.images, opt.out, schema);
    if (!opt.config.empty())
      settings = Config::resolve(opt.config, opt.sets);
    else if (model)
      settings = model->config;
    if (model) {
      pipeline = std::make_unique<Pipeline>(*model, parse_device(opt.device));
      model_path = opt.model;
    }
    suggest(pipeline.get(), [](size_t, size_t) {});
  }

  ~Impl() {
    stopping = true;
    if (trainer.joinable()) trainer.join();
  }

  // Decodes every photo (their sizes and errors) and, with a pipeline, predicts the ones left.
  void suggest(Pipeline* p, const std::function<void(size_t, size_t)>& progress) {
    Progress bar(p ? "suggestions" : "photos", store->size(), "img");
    for (size_t i = 0; i < store->size(); ++i) {
      const cv::Mat image = store->load(i);
      if (p && !image.empty() && store->entry(i).status == LabelStatus::Left) {
        PredictOptions o;
        o.flip = true;  // for the uncertainty
        auto garments = std::move(p->predict({image}, {o})[0]);
        std::optional<float> worst;
        for (const auto& g : garments)
          if (g.uncertainty) worst = std::max(worst.value_or(0.0f), *g.uncertainty);
        store->suggest(i, std::move(garments), worst);
      }
      bar.update(i + 1);
      progress(i + 1, store->size());
    }
    bar.finish();
  }

  size_t photo(const httplib::Request& req) const {
    const unsigned long i = std::strtoul(req.matches[1].str().c_str(), nullptr, 10);
    if (req.matches[1].length() > 9 || i >= store->size())
      throw HttpError{404, "not_found", "no photo " + req.matches[1].str() + " (there are " + std::to_string(store->size()) + ")"};
    return i;
  }

  json annotation(size_t i) const {
    const LabelEntry e = store->entry(i);
    const LandmarkSchema& schema = store->schema();
    json garments = json::array();
    std::string source = "saved";
    if (e.status != LabelStatus::Left) {
      for (const auto& g : e.garments) garments.push_back(saved_json(g, schema));
    } else if (!e.suggestion.empty()) {
      source = "model";
      for (const auto& g : e.suggestion) garments.push_back(suggested_json(g, schema, e.width, e.height));
    } else {
      source = "none";
    }
    return {{"id", i}, {"name", e.name}, {"version", e.version}, {"status", status_name(e.status)}, {"source", source},
            {"width", e.width}, {"height", e.height}, {"garments", garments}};
  }

  json state() {
    const LandmarkSchema& schema = store->schema();
    json photos = json::array();
    int labelled = 0, skipped = 0, left = 0, unreadable = 0;
    bool with_model;
    {
      std::lock_guard<std::mutex> lock(model_mutex);
      with_model = pipeline != nullptr;
    }
    for (size_t i : store->order(with_model)) {
      const LabelEntry e = store->entry(i);
      if (!e.error.empty()) ++unreadable;
      else if (e.status == LabelStatus::Labelled) ++labelled;
      else if (e.status == LabelStatus::Skipped) ++skipped;
      else ++left;
      json p = {{"id", i}, {"name", e.name}, {"status", status_name(e.status)}, {"version", e.version}};
      if (!e.error.empty()) p["error"] = e.error;
      if (e.uncertainty) p["uncertainty"] = *e.uncertainty;
      photos.push_back(p);
    }
    json categories = categories_json(schema);
    json out = {{"schema", schema.name},
                {"landmarks", schema.landmarks},
                {"categories", categories},
                {"mean_layout", store->mean_layout()},
                {"photos", photos},
                {"counts", {{"labelled", labelled}, {"skipped", skipped}, {"left", left}, {"unreadable", unreadable}}},
                {"file", store->out()}};
    {
      std::lock_guard<std::mutex> lock(model_mutex);
      out["model"] = model_path.empty() ? json() : json(model_path);
      out["can_train"] = settings.has_value();
    }
    std::lock_guard<std::mutex> lock(train_mutex);
    out["training"] = training;
    return out;
  }

  json save(size_t i, const std::string& body) {
    json j;
    try {
      j = json::parse(body);
    } catch (const json::exception& e) {
      throw HttpError{400, "bad_json", std::string("body: not JSON (") + e.what() + ")"};
    }
    if (!j.is_object()) throw HttpError{400, "bad_json", "body: expected {\"version\", \"status\", \"garments\"}"};
    const auto version = j.find("version");
    if (version == j.end() || !version->is_number_integer()) throw HttpError{400, "bad_json", "version: expected an integer"};
    const auto status_field = j.find("status");
    const std::string status = status_field != j.end() && status_field->is_string() ? status_field->get<std::string>() : "";
    if (status != "labelled" && status != "skipped")
      throw HttpError{400, "bad_json", "status: expected \"labelled\" or \"skipped\""};
    std::vector<Garment> garments;
    if (status == "labelled") {
      const auto list = j.find("garments");
      if (list == j.end() || !list->is_array()) throw HttpError{400, "bad_json", "garments: expected an array"};
      for (size_t g = 0; g < list->size(); ++g)
        garments.push_back(garment_from_page((*list)[g], store->schema(), "garments[" + std::to_string(g) + "]"));
    }
    const LabelStatus as = status == "labelled" ? LabelStatus::Labelled : LabelStatus::Skipped;
    std::optional<int> saved;
    try {
      saved = store->save(i, version->get<int>(), as, std::move(garments));
    } catch (const std::invalid_argument& e) {
      throw HttpError{400, "refused", e.what()};
    } catch (const IoError& e) {
      throw HttpError{500, "write_failed", e.what()};
    }
    if (!saved) throw HttpError{409, "stale", "photo " + std::to_string(i) + " was saved elsewhere since version " +
                                                  std::to_string(version->get<int>()) + ": reload it"};
    return {{"version", *saved}, {"status", status}};
  }

  void set_training(json update) {
    std::lock_guard<std::mutex> lock(train_mutex);
    for (auto& [k, v] : update.items()) training[k] = v;
  }

  // Retrains on the file, the photos left as --unlabelled, and loads the new model's suggestions.
  void train_in_background() {
    std::lock_guard<std::mutex> lock(train_mutex);
    if (training["state"] == "running") throw HttpError{409, "busy", "a retraining is running"};
    if (trainer.joinable()) trainer.join();
    TrainCommand cmd;
    {
      std::lock_guard<std::mutex> model_lock(model_mutex);
      if (!settings) throw HttpError{400, "no_settings", "retraining needs cspn label --model or --config"};
      cmd.base = *settings;
    }
    // The file's schema, whatever the model's config says (it may leave data.schema to its format);
    // the unlabelled photos are the ones left here, never the model's own data.unlabelled.
    if (!schema_spec.empty()) cmd.base.data.schema = schema_spec;
    cmd.base.data.unlabelled.clear();
    if (state_counts_labelled() == 0) throw HttpError{400, "nothing_labelled", "label a photo first"};
    const fs::path runs = store->runs_folder();
    fs::create_directories(runs);
    const fs::path run = fresh_path(runs / "run");
    cmd.data = store->out();
    cmd.format = "coco";
    cmd.options.out_dir = run.string();
    cmd.options.device = opt.device;
    const std::vector<std::string> left = store->left_photos();
    if (!left.empty() && cmd.base.model.detector.enabled) {
      const fs::path folder = run.string() + "-unlabelled";
      fs::create_directories(folder);
      for (size_t i = 0; i < left.size(); ++i)
        fs::create_symlink(left[i], folder / (std::to_string(i) + "-" + fs::path(left[i]).filename().string()));
      cmd.unlabelled = folder.string();
    }
    cmd.options.on_record = [this](const json& r) {
      const std::string type = r.value("type", "");
      if (type == "start") set_training({{"phase", r["phase"]}, {"iter", 0}, {"iters", r["iters"]}});
      if (type == "train") set_training({{"iter", r["iter"]}});
    };
    cmd.options.stop_requested = [this] { return stopping.load(); };
    training = {{"state", "running"}, {"run", run.string()}, {"unlabelled", cmd.unlabelled.empty() ? 0 : left.size()}};
    trainer = std::thread([this, cmd] {
      try {
        const TrainSummary summary = train_command(cmd);
        set_training({{"phase", "suggestions"}, {"iter", 0}, {"iters", store->size()}});
        const ModelFile model = load_model_file(summary.model_path);
        auto fresh = std::make_unique<Pipeline>(model, parse_device(opt.device));
        suggest(fresh.get(), [this](size_t done, size_t) { set_training({{"iter", done}}); });
        {
          std::lock_guard<std::mutex> lock(model_mutex);
          pipeline = std::move(fresh);
          model_path = summary.model_path;
          if (opt.config.empty()) settings = model.config;
        }
        set_training({{"state", "done"}, {"model", summary.model_path}});
        spdlog::info("retrained: {}", summary.model_path);
      } catch (const std::exception& e) {
        spdlog::error("retraining: {}", e.what());
        set_training({{"state", stopping ? "stopped" : "failed"}, {"message", e.what()}});
      }
    });
  }

  int state_counts_labelled() const {
    int n = 0;
    for (size_t i = 0; i < store->size(); ++i) n += store->entry(i).status == LabelStatus::Labelled;
    return n;
  }

  template <class F>
  auto guarded(F f) {
    return [this, f](const httplib::Request& req, httplib::Response& res) {
      try {
        f(req, res);
      } catch (const HttpError& e) {
        send_error(res, e);
      } catch (const std::exception& e) {
        spdlog::error("{} {}: {}", req.method, req.path, e.what());
        send_error(res, {500, "internal", e.what()});
      }
    };
  }

  void routes() {
    http::page_routes(server, label_page());
    server.Get("/v1/label/state", guarded([this](const httplib::Request&, httplib::Response& res) {
      res.set_content(state().dump(), "application/json");
    }));
    server.Get(R"(/v1/label/image/(\d+))", guarded([this](const httplib::Request& req, httplib::Response& res) {
      const LabelEntry e = store->entry(photo(req));
      std::ifstream in(e.path, std::ios::binary);
      if (!in) throw HttpError{404, "not_found", e.name + ": cannot be read"};
      std::ostringstream bytes;
      bytes << in.rdbuf();
      res.set_content(bytes.str(), content_type(e.path));
    }));
    server.Get(R"(/v1/label/annotation/(\d+))", guarded([this](const httplib::Request& req, httplib::Response& res) {
      res.set_content(annotation(photo(req)).dump(), "application/json");
    }));
    server.Put(R"(/v1/label/annotation/(\d+))", guarded([this](const httplib::Request& req, httplib::Response& res) {
      const size_t i = photo(req);
      try {
        res.set_content(save(i, req.body).dump(), "application/json");
      } catch (const HttpError& e) {
        if (e.status != 409) throw;
        send_error(res, e);
        json body = json::parse(res.body);
        body["current"] = annotation(i);
        res.set_content(body.dump(), "application/json");
      }
    }));
    server.Post("/v1/label/train", guarded([this](const httplib::Request&, httplib::Response& res) {
      train_in_background();
      res.status = 202;
      std::lock_guard<std::mutex> lock(train_mutex);
      res.set_content(training.dump(), "application/json");
    }));
    // The token before anything under /v1/ is read (the body included).
    server.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (req.path.rfind("/v1/", 0) != 0 || http::authorised(req, opt.http.token))
        return httplib::Server::HandlerResponse::Unhandled;
      send_error(res, {401, "unauthorized", "missing or wrong token (Authorization: Bearer TOKEN)"});
      return httplib::Server::HandlerResponse::Handled;
    });
  }
};

LabelServer::LabelServer(LabelOptions opt) : impl_(std::make_unique<Impl>(std::move(opt))) {
  http::configure(impl_->server, impl_->opt.http,
                  "no such endpoint or photo: see GET / and GET /v1/label/state");
  impl_->routes();
}

LabelServer::~LabelServer() { stop(); }

int LabelServer::bind() { return impl_->port = http::bind(impl_->server, impl_->opt.http); }

int LabelServer::port() const { return impl_->port; }

void LabelServer::run() {
  if (impl_->port < 0) bind();
  impl_->lifecycle.run(impl_->server);
}

void LabelServer::stop() {
  impl_->stopping = true;
  impl_->lifecycle.stop(impl_->server);
}

}  // namespace cspn
