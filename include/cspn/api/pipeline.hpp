#pragma once
// The whole pipeline of one model file: photo -> detector -> garment crops -> landmark network ->
// named landmarks in image pixels.
#include <memory>
#include <optional>
#include <vector>

#include <opencv2/core.hpp>
#include <torch/torch.h>

#include "cspn/core/config.hpp"
#include "cspn/core/io/model_file.hpp"
#include "cspn/core/sample.hpp"
#include "cspn/core/schema.hpp"

namespace cspn {

class GarmentDetector;
class LandmarkPredictor;

struct LandmarkPoint {
  float x = 0, y = 0;  // image pixels
  float score = 0;     // heatmap peak
  bool visible = false;
};

struct GarmentPrediction {
  int category = 0;                      // schema category index
  float score = 0;                       // detection score (1 for a given box)
  Box box;                               // image pixels
  std::vector<LandmarkPoint> landmarks;  // one per schema slot; slots outside the category: score 0
  // With the flip test: how far the plain and mirrored crops' landmarks lie apart, averaged over the
  // category's landmarks, in ne_image units (flip_uncertainty). 0 where they agree; larger on
  // photos the model finds hard: label those first. Unset without the flip test.
  std::optional<float> uncertainty;
};

// Per-image choices; unset values take the model's test settings.
struct PredictOptions {
  std::optional<float> min_score;  // keep detections scoring at least this (test.min_score)
  int max_garments = 0;            // the best N garments (0: all)
  std::optional<bool> flip;        // average with the mirrored crop (test.flip)
};

// Where one predict call spent its time (all images of the call together).
struct PredictTimings {
  double detector_ms = 0;   // detector network and box decoding
  double landmarks_ms = 0;  // crops, landmark network and heatmap decoding
  int crops = 0;            // garments sent to the landmark network
};

// The two halves of one model file: a Faster R-CNN finds garments, the CSPN landmark network
// places each garment's landmarks. Images of one call go through the detector as one batch (in
// test.detector_batch_size chunks), their garment crops through the landmark network together (in
// test.batch_size chunks). Not thread-safe: one caller at a time.
class Pipeline {
 public:
  Pipeline(const ModelFile& file, torch::Device device);
  ~Pipeline();
  Pipeline(Pipeline&&) noexcept;
  Pipeline& operator=(Pipeline&&) noexcept;

  // Per image, the garments by decreasing score with their landmarks.
  std::vector<std::vector<GarmentPrediction>> predict(const std::vector<cv::Mat>& images);
  // The same with options per image (options.size() == images.size(), or one for all).
  std::vector<std::vector<GarmentPrediction>> predict(const std::vector<cv::Mat>& images,
                                                      const std::vector<PredictOptions>& options,
                                                      PredictTimings* timings = nullptr);

  // The default minimum detection score: the model's test.min_score unless set here.
  float min_score() const;
  void set_min_score(float score);

  const LandmarkSchema& schema() const;
  const Config& config() const;  // the model file's resolved config
  torch::Device device() const;
  GarmentDetector& detector();
  LandmarkPredictor& landmarks();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cspn
