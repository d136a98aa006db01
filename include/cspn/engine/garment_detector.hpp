#pragma once
// The detection half at inference: photos resized for the detector, and the trained Faster R-CNN
// turning photos into garment boxes with categories. Its training batches are DetectionBatcher
// (loader.hpp), its AP detector_ap.hpp; the whole pipeline is cspn::Pipeline (api/pipeline.hpp).
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <torch/torch.h>

#include "cspn/core/config.hpp"
#include "cspn/core/detect/faster_rcnn.hpp"
#include "cspn/core/io/model_file.hpp"
#include "cspn/core/sample.hpp"

namespace cspn {

// The factor taking a width x height image to the detector's input: shorter side min_size, longer
// side at most max_size.
float detector_scale(int width, int height, const DetectorModelConfig& cfg);

// Each image resized by its scale, ImageNet-normalised, and padded (bottom/right) into one batch
// [B,3,H,W] whose sides are multiples of the detector's stride.
torch::Tensor detector_input(const std::vector<cv::Mat>& bgr, const std::vector<float>& scales);

struct DetectedGarment {
  Box box;           // image pixels
  float score = 0;
  int category = 0;  // schema category index
};

class GarmentDetector {
 public:
  GarmentDetector(FasterRCNN net, const Config& cfg, LandmarkSchema schema, torch::Device device);
  // From a model file's "detector.*" tensors, readied for inference (BatchNorm folded, channels-last,
  // on the CPU VGG16's fc6 as a convolution), so net() is not for training or saving. Throws when
  // the file has no detector.
  static GarmentDetector from_model_file(const ModelFile& file, torch::Device device);

  // Per image, garments by decreasing score, in batches of test.detector_batch_size images.
  std::vector<std::vector<DetectedGarment>> detect(const std::vector<cv::Mat>& images);

  FasterRCNN& net() { return net_; }
  const LandmarkSchema& schema() const { return schema_; }

 private:
  FasterRCNN net_;
  Config cfg_;
  LandmarkSchema schema_;
  torch::Device device_;
};

// Runs the detector over every image of `data`, decoding `chunk` images at a time on the data
// workers; visit(first sample index, decoded images, their detections) per chunk.
void detect_dataset(GarmentDetector& detector, const Dataset& data, const Config& cfg, int chunk,
                    const std::function<void(int, const std::vector<cv::Mat>&,
                                             const std::vector<std::vector<DetectedGarment>>&)>& visit);

}  // namespace cspn
