#pragma once
// `cspn bench --parts pipeline`: what a user's photo costs end to end (detector, crops, landmark
// network with flip test, decoding; image decoding excluded), and how fast the landmark network
// runs against its bare backbone.
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace cspn {

struct PipelineBenchOptions {
  std::string model;              // a trained model file; "" = untrained weights of `config`
  std::string config;             // a YAML config; "" = the built-in case below (detector, backbone,
                                  // stages, input_size)
  std::vector<std::string> sets;  // section.key=value overrides of the model's or config's settings
  std::string images;            // a folder of photos; "" = one synthetic textured 4:3 image per size
  std::vector<int> sizes;        // detector input, shorter side (longer = 4/3 of it); empty: the
                                 // model's own, or 320 and 608 for the built-in case
  int garments = 2;              // garments per image: the detector keeps exactly this many boxes
  std::vector<int> batches{1, 4, 16};  // images per call, for the throughput column
  std::string detector = "resnet18";   // built-in case: detector backbone
  std::string backbone = "resnet50";   // built-in case: landmark network backbone
  int stages = 4;
  std::vector<int> input_size{256, 192};
  std::string device = "cpu";
  int iters = 5;  // timed passes over the images (batch 1) or timed calls (larger batches)
  bool train_step = true;  // also time the landmark network's training step
};

// One row per detector input size: {"image" [w,h] of the (first) source image, "images",
// "detector_input" [w,h], "garments", "detector_ms", "detector_flip_ms", "pipeline_ms" (median per
// image at batch 1), "pipeline_p90_ms", "throughput" [{batch, images_per_s}], "best_batch",
// "best_images_per_s", "peak_rss_mb"}. Prints a table to `out` as it goes.
nlohmann::json bench_pipeline(const PipelineBenchOptions& opt, std::ostream& out);

// The pipeline's landmark network (same model, config or built-in case as above) alone, in
// test.precision, against its bare backbone, every batch's backbone and network timed in turn
// (median_ms_alternating): {"precision", "inference": [{"batch" (1, 2, 16),
// "backbone_ms", "network_ms", "ms_per_crop", "backbone_gflops", "network_gflops",
// "backbone_gflop_s", "network_gflop_s", "ratio" (network_gflop_s / backbone_gflop_s); in a precision
// other than float32 also "float32_ms_per_crop" and "speedup_vs_float32", the same network in float32
// timed in turn with them}], and with opt.train_step
// "train_step": {"batch" (train.batch_size), "ms", "crops_per_s"}} (float32, the config's loss, Adam).
// The training step is timed as `cspn train` runs it: keep_freed_memory(false) first, so the process
// maps large blocks afresh from then on.
nlohmann::json bench_landmark_gflops(const PipelineBenchOptions& opt, std::ostream& out);

// Crops per second that the training data pipeline (decode without the image cache, crop, the
// config's augmentation, heatmap targets) delivers from the data set at `data_path`, on the calling
// thread and with data.workers threads: [{"workers", "crops_per_s", "batch", "batches"}].
nlohmann::json bench_data(const PipelineBenchOptions& opt, const std::string& data_path, const std::string& format,
                          std::ostream& out);

// Writes to `path` (safetensors) a seeded batch of crops "input" [2,3,H,W], the landmark network's
// heatmaps for it "stage1".."stageN" (float32, computed in test.precision, no flip), its weights
// ("keypoints.*") and config (metadata "cspn.config"): what another implementation needs to be
// checked against this one.
void write_landmark_io(const PipelineBenchOptions& opt, const std::string& path);

}  // namespace cspn
