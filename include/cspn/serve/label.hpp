#pragma once
// `cspn label`: a labelling page for a folder of photos, served over HTTP with the limits, token and
// shutdown of `cspn serve`. Every save rewrites one COCO keypoints JSON file (atomically), which
// `cspn train --format coco` reads as it is. With a model, the photos start from its predictions
// and come most uncertain first, and the page can retrain on what is labelled so far.
//
//   GET  /                          the page
//   GET  /garments.js               the drawing code it shares with the prediction page
//   GET  /v1/label/state            schema, photos in labelling order with their status, counts,
//                                   mean layouts, retraining progress
//   GET  /v1/label/image/N          photo N's bytes
//   GET  /v1/label/annotation/N     photo N's garments: saved, else the model's, else none
//   PUT  /v1/label/annotation/N     {"version", "status": labelled|skipped, "garments"}; 409 where
//                                   the version is not the current one (another tab saved first)
//   POST /v1/label/train            retrain in the background (202; 409 while one runs)
//   GET  /healthz
// Garments as JSON: {"category": name, "bbox": [x, y, w, h], "keypoints": {name: [x, y, v]}} with
// COCO's v (2 visible, 1 occluded, 0 absent); a suggestion adds "score".
#include <memory>
#include <string>
#include <vector>

#include "cspn/serve/server.hpp"

namespace cspn {

struct LabelOptions {
  std::string images;              // the photos, searched recursively
  std::string out;                 // the COCO keypoints JSON (continued where it exists)
  std::string model;               // suggestions, uncertainty order, retraining ("": none)
  std::string schema;              // where no model tells it ("": deepfashion)
  std::string config;              // retraining settings ("": the model's)
  std::vector<std::string> sets;   // overrides of the model's settings and of retraining's
  std::string device = "cpu";
  ServeOptions http;               // host, port, token, threads, limits
};

class LabelServer {
 public:
  // Reads the folder and the file, and with a model predicts every photo (progress on stderr).
  explicit LabelServer(LabelOptions opt);
  ~LabelServer();

  int bind();  // the port; throws naming host:port where it cannot listen
  int port() const;
  void run();   // serves until stop(); waits for a retraining in progress to stop at a checkpoint
  void stop();  // safe from any thread

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The labelling page (web/label.html, compiled in).
const std::string& label_page();

}  // namespace cspn
