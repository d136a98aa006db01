#pragma once
// The public C++ API of CSPN: load a model file, decode photos (from files or from bytes in
// memory), find the garments in them with their named landmarks, and write the answer as JSON.
// The cspn command, the HTTP server, the example and the benchmarks use this header for inference.
//
//   const cspn::ModelFile model = cspn::load_model_file("model.cspn");
//   cspn::Pipeline pipeline(model, torch::kCPU);
//   const cv::Mat photo = cspn::read_image("photo.jpg");
//   for (const cspn::GarmentPrediction& g : pipeline.predict({photo}).front())
//     std::cout << cspn::garment_json(g, pipeline.schema()).dump(2) << "\n";
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <torch/torch.h>

#include "cspn/errors.hpp"
#include "cspn/io/model_file.hpp"
#include "cspn/landmarks.hpp"
#include "cspn/sample.hpp"

namespace cspn {

class GarmentDetector;
class LandmarkPredictor;

// Images larger than this (width x height, read from the header before decoding) are refused.
inline constexpr long kDefaultMaxPixels = 80'000'000;

// Decodes a JPEG, PNG, WebP or BMP file to BGR uint8. Throws ImageError naming the path when it is
// missing, not a regular file, empty, not an image, truncated or corrupt, or larger than max_pixels.
cv::Mat read_image(const std::string& path, long max_pixels = kDefaultMaxPixels);
// The same checks for an encoded image in memory; `name` (a file name, "upload") goes into errors.
cv::Mat decode_image(const std::string& bytes, const std::string& name, long max_pixels = kDefaultMaxPixels);

// Encodes by the extension of `path` (.jpg, .png, ...) and writes atomically; throws naming the file.
void write_image(const std::string& path, const cv::Mat& bgr, const std::vector<int>& params = {});

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

// One garment as JSON: {category_id (1-based), category, bbox [x, y, w, h], score, keypoints
// [x, y, v] per schema slot (COCO v: 2 visible, 1 below test.visible_score, 0 not in the
// category), landmarks {name: {x, y, score, visible}} for the category's landmarks}.
nlohmann::json garment_json(const GarmentPrediction& garment, const LandmarkSchema& schema);
// The schema's categories: [{id, name, landmarks [names]}].
nlohmann::json categories_json(const LandmarkSchema& schema);

}  // namespace cspn
