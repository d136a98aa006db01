#pragma once
// The detection half: photos resized for the detector, detector training batches, and the trained
// Faster R-CNN turning photos into garment boxes with categories. The whole pipeline (photo ->
// detector -> garment crops -> landmark network -> named landmarks) is cspn::Pipeline (cspn.hpp).
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <torch/torch.h>

#include "cspn/config.hpp"
#include "cspn/cspn.hpp"
#include "cspn/detect/ap.hpp"
#include "cspn/detect/faster_rcnn.hpp"
#include "cspn/engine/landmarks_model.hpp"
#include "cspn/engine/loader.hpp"
#include "cspn/io/model_file.hpp"
#include "cspn/sample.hpp"

namespace cspn {

// The factor taking a width x height image to the detector's input: shorter side min_size, longer
// side at most max_size.
float detector_scale(int width, int height, const DetectorModelConfig& cfg);

// Each image resized by its scale, ImageNet-normalised, and padded (bottom/right) into one batch
// [B,3,H,W] whose sides are multiples of the detector's stride.
torch::Tensor detector_input(const std::vector<cv::Mat>& bgr, const std::vector<float>& scales);

struct DetectorBatch {
  torch::Tensor images;            // [B,3,H,W]
  std::vector<DetTarget> targets;  // boxes in network-input pixels, label = category + 1
};

// Whole training images with at least one garment; augmented with a random horizontal flip, scale
// jitter (data.scale_aug around detector_scale) and colour jitter.
class DetectionBatcher {
 public:
  DetectionBatcher(const Dataset& data, const Config& cfg, bool augment);
  size_t size() const { return samples_.size(); }
  DetectorBatch make(const std::vector<size_t>& indices, std::uint64_t seed) const;

 private:
  const Dataset& data_;
  Config cfg_;
  bool augment_;
  std::vector<int> samples_;
  ImageStore images_;
};

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

// COCO-style AP of the detector against `data`'s garment boxes: DetectionAP::result().
nlohmann::json detector_ap(GarmentDetector& detector, const Dataset& data, const Config& cfg,
                           const std::function<void(size_t, size_t)>& progress = {});

// Adds one image's detections and ground truth to an AP accumulator.
void add_to_ap(detect::DetectionAP& ap, const std::vector<DetectedGarment>& detections, const Sample& truth);

// Pairs detections with ground-truth garments of the same category, greedily by decreasing score,
// each to the unmatched garment of highest IoU >= min_iou. Result[d]: garment index or -1.
std::vector<int> match_detections(const std::vector<DetectedGarment>& detections,
                                  const std::vector<Garment>& truth, float min_iou = 0.5f);

}  // namespace cspn
