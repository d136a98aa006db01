#pragma once
// One typed configuration. Struct defaults are the schema; a YAML file overrides them, then
// `--set section.key=value` pairs; unknown keys and bad values are errors that name the key.
// The resolved config is stored in every model file and run folder.
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace cspn {

struct KeypointModelConfig {
  bool enabled = true;
  std::string backbone = "resnet50";     // a registered backbone (backbone_names(): resnet18..152,
                                         // vgg16, mobilenet_v2)
  int stages = 4;                        // 1..4 cascaded pyramid stages
  int channels = 256;                    // pyramid width
  std::vector<int> input_size{256, 192}; // crop height, width
  int heatmap_stride = 4;                // heatmap = input / stride
  int refine_stride = 1;                 // the later stages' finest stride: 1 (the input's pixels),
                                         // 2 or 4 (stage 1's maps); each stage halves its
                                         // predecessor's down to it (1: strides 4, 2, 1, 1)
  float sigma = 2.0f;                    // Gaussian target sigma, heatmap pixels
  std::string pretrained;                // backbone weights: ImageNet .pth/.safetensors (torchvision
                                         // keys), or an earlier model file's (.cspn) landmark backbone
  template <class V> void visit(V& v) {
    v("enabled", enabled); v("backbone", backbone); v("stages", stages); v("channels", channels);
    v("input_size", input_size); v("heatmap_stride", heatmap_stride);
    v("refine_stride", refine_stride); v("sigma", sigma);
    v("pretrained", pretrained);
  }
  // Checks ranges and choices (Config::validate and CSPNNet's constructor both rely on it); throws
  // std::invalid_argument naming the key (model.keypoints.*).
  void validate() const;
  // The stride of stage i's heatmaps (0-based): heatmap_stride for stage 1, then half the stage
  // before's, but not finer than refine_stride.
  int stage_stride(int i) const { return i == 0 ? heatmap_stride : std::max(refine_stride, heatmap_stride >> i); }
};

struct DetectorModelConfig {
  bool enabled = false;
  std::string backbone = "resnet18";     // a registered backbone, built to its stride-16 features
  std::string pretrained;
  bool backbone_from_keypoints = false;  // start the trunk from the landmark network's backbone trained
                                         // just before in the same run (same backbone; garment features)
  int min_size = 320;                    // shorter image side after resizing
  int max_size = 512;                    // cap on the longer side
  std::vector<float> anchor_sizes{32, 64, 128, 256, 512};
  std::vector<float> anchor_ratios{0.5f, 1.0f, 2.0f};
  int rpn_pre_nms_train = 2000, rpn_post_nms_train = 512;
  int rpn_pre_nms_test = 1000, rpn_post_nms_test = 300;
  float rpn_nms = 0.7f;
  float rpn_fg_iou = 0.7f, rpn_bg_iou = 0.3f;
  int rpn_batch = 256;
  float rpn_pos_fraction = 0.5f;
  std::string roi_op = "align";          // align (RoIAlign) | pool (the paper's RoI pooling)
  int roi_size = 7;
  int roi_sampling_ratio = 2;            // RoIAlign bilinear samples per bin side
  bool roi_aligned = false;              // RoIAlign half-pixel shift (torchvision's Faster R-CNN: off)
  std::string box_head = "fc";           // fc: two new head_dim FC layers | vgg: VGG16's fc6/fc7
                                         // (4096 wide, ImageNet-loadable; backbone vgg16, roi_size 7)
  int head_dim = 256;                    // width of the two fully connected layers
  bool freeze_bn = false;                // backbone BatchNorm keeps its running statistics and affine
                                         // parameters: for ImageNet-initialised backbones trained on
                                         // batches of 1-2 images; from scratch it must learn (false)
  int trainable_layers = 5;              // the last n of the backbone's five parts learn, as
                                         // torchvision's (ResNet: layer4, layer3, layer2, layer1,
                                         // conv1; the stride-16 trunk has no layer4); the rest is
                                         // frozen, BatchNorm statistics included
  float box_fg_iou = 0.5f, box_bg_iou = 0.5f;
  int box_batch = 128;
  float box_pos_fraction = 0.25f;
  float score_thresh = 0.05f, nms = 0.5f;
  float min_box_size = 4.0f;             // detections narrower or lower than this (input pixels) are
                                         // dropped: slivers left by clipping a box outside the image
  int detections_per_image = 100;        // COCO's AP counts up to 100 per image (and torchvision keeps
                                         // 100); predict reports only those >= test.min_score
  // Checks ranges and choices of this section (Config::validate and FasterRCNN's constructor both
  // rely on it); throws std::invalid_argument naming the key (model.detector.*).
  void validate() const;
  template <class V> void visit(V& v) {
    v("enabled", enabled); v("backbone", backbone); v("pretrained", pretrained);
    v("backbone_from_keypoints", backbone_from_keypoints); v("min_size", min_size); v("max_size", max_size); v("anchor_sizes", anchor_sizes);
    v("anchor_ratios", anchor_ratios); v("rpn_pre_nms_train", rpn_pre_nms_train);
    v("rpn_post_nms_train", rpn_post_nms_train); v("rpn_pre_nms_test", rpn_pre_nms_test);
    v("rpn_post_nms_test", rpn_post_nms_test); v("rpn_nms", rpn_nms); v("rpn_fg_iou", rpn_fg_iou);
    v("rpn_bg_iou", rpn_bg_iou); v("rpn_batch", rpn_batch); v("rpn_pos_fraction", rpn_pos_fraction);
    v("roi_op", roi_op); v("roi_size", roi_size); v("roi_sampling_ratio", roi_sampling_ratio);
    v("roi_aligned", roi_aligned); v("box_head", box_head); v("head_dim", head_dim);
    v("freeze_bn", freeze_bn); v("trainable_layers", trainable_layers);
    v("box_fg_iou", box_fg_iou); v("box_bg_iou", box_bg_iou); v("box_batch", box_batch);
    v("box_pos_fraction", box_pos_fraction); v("score_thresh", score_thresh); v("nms", nms);
    v("min_box_size", min_box_size); v("detections_per_image", detections_per_image);
  }
};

struct ModelConfig {
  KeypointModelConfig keypoints;
  DetectorModelConfig detector;
  template <class V> void visit(V& v) { v("keypoints", keypoints); v("detector", detector); }
};

struct DataConfig {
  std::string schema;             // landmark schema: built in (deepfashion, deepfashion2, fashionai) or
                                  // the path of a schema YAML file; unset: the data format's own
                                  // (deepfashion2, fashionai), else deepfashion
  // data.schema, or deepfashion where it is unset (no data format to choose).
  std::string schema_or_default() const { return schema.empty() ? "deepfashion" : schema; }
  float box_expand = 1.25f;       // crop = box scaled by this, fitted to the input aspect ratio
  float scale_aug = 0.25f;        // random scale in [1-s, 1+s]
  float rotate_aug = 30.0f;       // degrees, uniform in [-r, r]
  float shift_aug = 0.1f;         // fraction of the crop size
  bool flip_aug = true;
  float color_aug = 0.3f;         // brightness/contrast/saturation jitter
  float occlusion_aug = 0.3f;     // probability of pasting a random occluding patch
  float holdout = 0.0f;           // fraction of the training images held out (deterministic by name)
  std::uint64_t holdout_seed = 0;
  int workers = 2;                // loader threads
  int prefetch = 4;               // batches prepared ahead
  bool skip_bad = false;          // skip malformed records (reported) instead of failing
  bool cache_images = false;      // keep decoded images in memory (small sets of large photos)
  int pretrain_synthetic = 0;     // > 0: cspn synthesizes this many single-garment images into
                                  // RUN/pretrain-synthetic and trains the landmark network on them
                                  // first (train_pretrain), then on the data given
  std::vector<int> pretrain_input_size;  // crop height, width for that phase (empty: the model's);
                                         // smaller crops buy more pretraining in the same time
  std::string unlabelled;         // a folder of photos without labels (searched recursively): after
                                  // training on the labelled data, the model labels them (section
                                  // semi) and both halves train again on both (docs/training.md)
  template <class V> void visit(V& v) {
    v("schema", schema); v("box_expand", box_expand); v("scale_aug", scale_aug); v("rotate_aug", rotate_aug);
    v("shift_aug", shift_aug); v("flip_aug", flip_aug); v("color_aug", color_aug);
    v("occlusion_aug", occlusion_aug); v("holdout", holdout); v("holdout_seed", holdout_seed);
    v("workers", workers); v("prefetch", prefetch); v("skip_bad", skip_bad);
    v("cache_images", cache_images); v("pretrain_synthetic", pretrain_synthetic);
    v("pretrain_input_size", pretrain_input_size); v("unlabelled", unlabelled);
  }
};

// Semi-supervised training from data.unlabelled: each round, the model trained so far (the
// teacher) finds the garments on the unlabelled photos and places their landmarks; the confident
// ones become pseudo-labels, and both halves go on training on labelled and pseudo-labelled photos.
struct SemiConfig {
  int rounds = 1;                  // teacher -> student rounds (each student teaches the next)
  float min_score = 0.7f;          // a detection becomes a pseudo-garment from this score
  float max_disagreement = 0.01f;  // a landmark becomes a pseudo-landmark where its plain, mirrored and
                                   // rescaled predictions agree within this (ne_image units: offset
                                   // over the image's width and height)
  float scale_jitter = 0.15f;      // the rescaled prediction's crop is the box grown by this fraction
  float min_landmark_score = 0.3f; // and its heatmap peak reaches this
  int keypoint_iters = 200;        // each round's landmark-network iterations, train's other settings (0: none)
  int detector_iters = 150;        // each round's detector iterations, train_detector's other settings (0: none)
  template <class V> void visit(V& v) {
    v("rounds", rounds); v("min_score", min_score); v("max_disagreement", max_disagreement);
    v("scale_jitter", scale_jitter); v("min_landmark_score", min_landmark_score);
    v("keypoint_iters", keypoint_iters); v("detector_iters", detector_iters);
  }
};

struct LossConfig {
  int ohkm_topk = 4;              // stages 2..4 back-propagate the K hardest landmarks
  float global_weight = 1.0f;     // weight of the GlobalNet heatmap loss (stage 1's 4 levels, summed)
  float coarse_to_fine = 0.0f;    // target widening (heatmap px, blur std) per stage before the last
                                  // and per coarser GlobalNet level: earlier stages and coarser levels
                                  // learn wider Gaussians (MSPN); 0: every output learns the same
                                  // targets (docs/results.md: it makes stages refine, but by holding stage 1 back)
  float same_stride_sigma = 1.0f; // a stage at the same stride as the one before learns Gaussians this
                                  // many times as wide as that stage's (1: the same targets)
  template <class V> void visit(V& v) {
    v("ohkm_topk", ohkm_topk); v("global_weight", global_weight); v("coarse_to_fine", coarse_to_fine);
    v("same_stride_sigma", same_stride_sigma);
  }
};

struct TrainConfig {
  std::string optimizer = "adam"; // adam|sgd
  float lr = 1e-3f;
  float momentum = 0.9f;
  float weight_decay = 0.0f;
  int epochs = 20;
  int batch_size = 32;
  std::string schedule = "cosine"; // cosine|step
  std::vector<int> steps{15, 18};  // epochs at which step decays by gamma
  float gamma = 0.1f;
  int warmup_iters = 100;
  int iters = 0;                   // 0: epochs x batches per epoch; else exactly this many iterations
                                   // (epochs is then ignored), whatever the machine's speed
  float time_limit_minutes = 0;    // 0: none; else as many iterations as fit this budget (at most the above)
  int val_every = 1;               // epochs between validations
  int log_every = 10;              // iterations between JSON-lines log records
  float checkpoint_minutes = 5;    // mid-epoch checkpoint interval (also at every epoch end)
  std::uint64_t seed = 0;
  int threads = 0;                 // intra-op threads; 0 = every core this process may use (LibTorch's
                                   // own default can be 1 on a machine without SMT)
  std::string precision = "float32";  // float32 | bfloat16 (autocast: CPUs with AVX512-BF16 or AMX, GPUs)
                                      // | float16 (autocast with a gradient scaler; GPUs)
  bool sync_bn = false;            // data-parallel: batch-norm statistics over every process's batch
  float dist_timeout_s = 300;      // data-parallel: a rank silent this long (at rendezvous or in a
                                   // collective) stops the run; the train section's value serves all
  template <class V> void visit(V& v) {
    v("optimizer", optimizer); v("lr", lr); v("momentum", momentum); v("weight_decay", weight_decay);
    v("epochs", epochs); v("iters", iters); v("batch_size", batch_size); v("schedule", schedule); v("steps", steps);
    v("gamma", gamma); v("warmup_iters", warmup_iters); v("time_limit_minutes", time_limit_minutes);
    v("val_every", val_every); v("log_every", log_every);
    v("checkpoint_minutes", checkpoint_minutes); v("seed", seed); v("threads", threads);
    v("precision", precision); v("sync_bn", sync_bn); v("dist_timeout_s", dist_timeout_s);
  }
};

struct TestConfig {
  bool flip = true;               // average with the prediction on the mirrored crop
  std::string decode = "taylor";  // taylor (maximum of the log-heatmap's local quadratic) |
                                  // quarter (argmax + 1/4 px toward the higher neighbour) | argmax
  int batch_size = 32;            // crops per landmark-network batch
  int detector_batch_size = 4;    // whole images per detector batch
  bool detector_flip = true;      // the detector's box head also sees the mirrored image; class
                                  // probabilities and boxes are averaged (one more trunk pass)
  float visible_score = 0.2f;     // a predicted landmark is reported visible when its heatmap peak
                                  // (1.0 = a perfect target's centre) reaches this
  float min_score = 0.5f;         // predict reports the garments whose detection score reaches
                                  // this (eval scores every detection)
  std::string precision = "float32";  // the landmark network at inference: float32 | bfloat16 (CPUs
                                      // with AVX512-BF16 or AMX, and GPUs) | float16 (GPUs)
  template <class V> void visit(V& v) {
    v("flip", flip); v("decode", decode); v("batch_size", batch_size);
    v("detector_batch_size", detector_batch_size); v("detector_flip", detector_flip);
    v("visible_score", visible_score);
    v("min_score", min_score); v("precision", precision);
  }
};

// The detector's optimisation defaults: whole images, a few per batch.
inline TrainConfig detector_train_defaults() {
  TrainConfig t;
  t.lr = 1e-3f;
  t.batch_size = 4;
  t.epochs = 20;
  t.warmup_iters = 100;
  t.weight_decay = 1e-4f;
  return t;
}

struct Config {
  ModelConfig model;
  DataConfig data;
  LossConfig loss;
  TrainConfig train;                                     // the landmark network
  TrainConfig train_pretrain;                            // the landmark network on synthetic garments
                                                         // first (data.pretrain_synthetic > 0)
  TrainConfig train_detector = detector_train_defaults();  // the detector (model.detector.enabled)
  SemiConfig semi;                                       // data.unlabelled's rounds
  TestConfig test;
  template <class V> void visit(V& v) {
    v("model", model); v("data", data); v("loss", loss); v("train", train);
    v("train_pretrain", train_pretrain); v("train_detector", train_detector); v("semi", semi); v("test", test);
  }

  // Overlay a YAML file; errors name the file and the key.
  void load_yaml_file(const std::string& path);
  // Overlay a YAML/JSON document (the same rules); `origin` names it in errors.
  void load_yaml_string(const std::string& text, const std::string& origin);
  // Apply one "section.key=value" override (value parsed as YAML: 3, 0.1, true, [256,192]).
  void set(const std::string& assignment);
  // Checks ranges and choices; throws std::invalid_argument naming the key.
  void validate() const;
  // The config a command runs with: `base` (the defaults, or a model file's stored config), then
  // the YAML file `yaml_file` when one is named, then each "section.key=value" of `sets`, validated.
  static Config resolve(const std::string& yaml_file, const std::vector<std::string>& sets, Config base);
  static Config resolve(const std::string& yaml_file, const std::vector<std::string>& sets);

  nlohmann::json to_json() const;
  std::string to_yaml() const;
  static Config from_json(const nlohmann::json& j);
};

}  // namespace cspn
