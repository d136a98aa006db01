#include "cspn/core/config.hpp"
#include "cspn/core/util.hpp"

#include <cmath>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <type_traits>

#include <yaml-cpp/yaml.h>

#include "yaml_text.hpp"

#include "cspn/core/model/backbone.hpp"

namespace cspn {
namespace {

template <class T, class = void>
struct is_section : std::false_type {};
template <class T>
struct is_section<T, std::void_t<decltype(&T::template visit<int>)>> : std::true_type {};

template <class T>
constexpr const char* type_name() {
  if constexpr (std::is_same_v<T, bool>) return "true or false";
  else if constexpr (std::is_integral_v<T>) return "an integer";
  else if constexpr (std::is_floating_point_v<T>) return "a number";
  else if constexpr (std::is_same_v<T, std::string>) return "a string";
  else return "a list of numbers";
}

std::string where(const std::string& origin, const YAML::Node& node) {
  const auto mark = node.Mark();
  if (mark.line < 0) return origin;
  return origin + ":" + std::to_string(mark.line + 1);
}

// NaN and infinities are never meaningful settings.
template <class T>
bool finite(const T& value) {
  if constexpr (std::is_floating_point_v<T>) {
    return std::isfinite(value);
  } else if constexpr (std::is_same_v<T, std::vector<float>>) {
    for (float v : value)
      if (!std::isfinite(v)) return false;
    return true;
  } else {
    return true;
  }
}

// Collects a section's key names (for unknown-key errors).
struct KeyNames {
  std::vector<std::string> names;
  template <class T> void operator()(const char* key, T&) { names.emplace_back(key); }
};

// Overlays a YAML mapping onto a section, recursing into nested sections.
struct FromYaml {
  const YAML::Node& node;
  std::string path;    // "model.keypoints."
  const std::string& origin;

  template <class T> void operator()(const char* key, T& value) {
    const YAML::Node child = node[key];
    if (!child) return;
    const std::string full = path + key;
    if constexpr (is_section<T>::value) {
      apply(child, value, full + ".", origin);
    } else {
      if (!child.IsScalar() && !child.IsSequence())
        throw std::invalid_argument(where(origin, child) + ": key '" + full + "' expects " + type_name<T>());
      try {
        value = child.as<T>();
      } catch (const YAML::Exception&) {
        std::string got = child.IsScalar() ? "'" + child.Scalar() + "'" : "a list";
        throw std::invalid_argument(where(origin, child) + ": key '" + full + "' expects " +
                                    type_name<T>() + ", got " + got);
      }
      if (!finite(value))
        throw std::invalid_argument(where(origin, child) + ": key '" + full + "' expects finite numbers, got " +
                                    (child.IsScalar() ? child.Scalar() : "a list holding one that is not"));
    }
  }

  template <class S>
  static void apply(const YAML::Node& node, S& section, const std::string& path, const std::string& origin) {
    if (node.IsNull()) return;
    if (!node.IsMap())
      throw std::invalid_argument(where(origin, node) + ": '" + (path.empty() ? "<root>" : path) +
                                  "' should be a mapping of keys");
    KeyNames names;
    section.visit(names);
    const std::set<std::string> known(names.names.begin(), names.names.end());
    std::set<std::string> seen;
    for (const auto& item : node) {
      if (!item.first.IsScalar())
        throw std::invalid_argument(where(origin, item.first) + ": under '" + (path.empty() ? "<root>" : path) +
                                    "' a key is not a plain name");
      const auto key = item.first.Scalar();
      if (!seen.insert(key).second)  // YAML forbids it; yaml-cpp would silently keep the first
        throw std::invalid_argument(where(origin, item.first) + ": key '" + path + key + "' given twice");
      if (!known.count(key)) {
        std::string list;
        for (const auto& n : names.names) list += (list.empty() ? "" : ", ") + n;
        throw std::invalid_argument(where(origin, item.first) + ": unknown key '" + path + key +
                                    "' (known here: " + list + ")");
      }
    }
    FromYaml visitor{node, path, origin};
    section.visit(visitor);
  }
};

struct ToJson {
  nlohmann::json& out;
  template <class T> void operator()(const char* key, T& value) {
    if constexpr (is_section<T>::value) {
      nlohmann::json child = nlohmann::json::object();
      ToJson sub{child};
      value.visit(sub);
      out[key] = child;
    } else if constexpr (std::is_same_v<T, float>) {
      out[key] = decimal(value);
    } else if constexpr (std::is_same_v<T, std::vector<float>>) {
      nlohmann::json list = nlohmann::json::array();
      for (float v : value) list.push_back(decimal(v));
      out[key] = list;
    } else {
      out[key] = value;
    }
  }
};

template <class T>
void require(bool ok, const std::string& key, const T& value, const std::string& expected) {
  if (!ok) {
    std::ostringstream msg;
    // Bytes that are not UTF-8 (a damaged file) are shown as U+FFFD instead of failing the message.
    msg << "config key '" << key << "' = "
        << nlohmann::json(value).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << ": expected "
        << expected;
    throw std::invalid_argument(msg.str());
  }
}

}  // namespace

void Config::load_yaml_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::invalid_argument("cannot open config file " + path);
  std::stringstream text;
  text << in.rdbuf();
  load_yaml_string(text.str(), path);
}

void Config::load_yaml_string(const std::string& text, const std::string& origin) {
  YAML::Node root = parse_yaml(text, origin);
  try {
    FromYaml::apply(root, *this, "", origin);
  } catch (const YAML::Exception& e) {  // a node of an unexpected shape that the checks above let through
    throw std::invalid_argument(origin + ":" + std::to_string(e.mark.line + 1) + ": " + e.msg);
  }
}

void Config::set(const std::string& assignment) {
  const auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    throw std::invalid_argument("--set expects section.key=value, got '" + assignment + "'");
  const std::string key = assignment.substr(0, eq);
  YAML::Node value;
  try {
    value = YAML::Load(assignment.substr(eq + 1));
  } catch (const YAML::ParserException& e) {
    throw std::invalid_argument("--set " + assignment + ": " + e.msg);
  }
  // Build {a: {b: {c: value}}} from "a.b.c" and overlay it like a file.
  YAML::Node root = value;
  std::string rest = key;
  while (true) {
    const auto dot = rest.rfind('.');
    YAML::Node parent(YAML::NodeType::Map);
    parent[rest.substr(dot == std::string::npos ? 0 : dot + 1)] = root;
    root = parent;
    if (dot == std::string::npos) break;
    rest = rest.substr(0, dot);
  }
  FromYaml::apply(root, *this, "", "--set " + assignment);
}

void KeypointModelConfig::validate() const {
  const auto& k = *this;
  require(is_backbone(k.backbone), "model.keypoints.backbone", k.backbone, backbone_list());
  require(k.stages >= 1 && k.stages <= 4, "model.keypoints.stages", k.stages, "1 to 4");
  // Upper bounds keep a typo (or a damaged model file) from asking for gigabytes before anything
  // can fail with a message: the largest values here are several times what any model uses.
  require(k.channels >= 2 && k.channels <= 2048 && k.channels % 2 == 0, "model.keypoints.channels", k.channels,
          "even, 2 to 2048 (the pyramid's bottlenecks halve it)");
  require(k.input_size.size() == 2 && k.input_size[0] % 32 == 0 && k.input_size[1] % 32 == 0 &&
              k.input_size[0] > 0 && k.input_size[1] > 0 && k.input_size[0] <= 1024 && k.input_size[1] <= 1024,
          "model.keypoints.input_size", k.input_size, "[height, width], both multiples of 32 from 32 to 1024");
  require(k.heatmap_stride == 4, "model.keypoints.heatmap_stride", k.heatmap_stride,
          "4 (the pyramid's finest level)");
  require(k.refine_stride == 4 || k.refine_stride == 2 || k.refine_stride == 1, "model.keypoints.refine_stride",
          k.refine_stride, "4 (stage 1's maps), 2 or 1 (the input's pixels)");
  require(k.sigma > 0 && k.sigma <= 32, "model.keypoints.sigma", k.sigma, "in (0, 32] heatmap pixels");
}

void DetectorModelConfig::validate() const {
  const auto& d = *this;
  require(is_backbone(d.backbone), "model.detector.backbone", d.backbone, backbone_list());
  require(d.roi_op == "align" || d.roi_op == "pool", "model.detector.roi_op", d.roi_op, "align or pool");
  require(d.roi_sampling_ratio > 0, "model.detector.roi_sampling_ratio", d.roi_sampling_ratio, "> 0");
  require(d.box_head == "fc" || (d.box_head == "vgg" && backbone_has_box_head(d.backbone) && d.roi_size == 7),
          "model.detector.box_head", d.box_head, "fc, or vgg with backbone vgg16 and roi_size 7");
  require(d.trainable_layers >= 0 && d.trainable_layers <= 5, "model.detector.trainable_layers", d.trainable_layers,
          "0..5");
  require(d.min_size > 0 && d.max_size >= d.min_size && d.max_size <= 4096, "model.detector.max_size", d.max_size,
          ">= min_size > 0, at most 4096");
  require(d.head_dim > 0 && d.head_dim <= 8192, "model.detector.head_dim", d.head_dim, "1 to 8192");
  require(d.score_thresh >= 0 && d.score_thresh <= 1, "model.detector.score_thresh", d.score_thresh, "in [0, 1]");
  require(d.nms > 0 && d.nms <= 1, "model.detector.nms", d.nms, "in (0, 1]");
  require(d.detections_per_image >= 1 && d.detections_per_image <= 1000, "model.detector.detections_per_image",
          d.detections_per_image, "1 to 1000");
  for (float a : d.anchor_sizes)
    require(a > 0 && a <= 4096, "model.detector.anchor_sizes", d.anchor_sizes, "sizes in (0, 4096] pixels");
  for (float r : d.anchor_ratios)
    require(r > 0 && r <= 100, "model.detector.anchor_ratios", d.anchor_ratios, "ratios in (0, 100]");
  require(d.min_box_size >= 0, "model.detector.min_box_size", d.min_box_size, ">= 0");
  require(!d.anchor_sizes.empty() && !d.anchor_ratios.empty(), "model.detector.anchor_sizes", d.anchor_sizes,
          "non-empty sizes and ratios");
  require(d.roi_size > 0 && d.roi_size <= 64, "model.detector.roi_size", d.roi_size, "1 to 64");
  for (const auto& [key, value] : {std::pair<const char*, int>{"rpn_pre_nms_train", d.rpn_pre_nms_train},
                                   {"rpn_post_nms_train", d.rpn_post_nms_train},
                                   {"rpn_pre_nms_test", d.rpn_pre_nms_test},
                                   {"rpn_post_nms_test", d.rpn_post_nms_test},
                                   {"rpn_batch", d.rpn_batch},
                                   {"box_batch", d.box_batch}})
    require(value > 0 && value <= 1000000, std::string("model.detector.") + key, value, "1 to 1000000");
}

Config Config::resolve(const std::string& yaml_file, const std::vector<std::string>& sets, Config base) {
  if (!yaml_file.empty()) base.load_yaml_file(yaml_file);
  for (const auto& s : sets) base.set(s);
  base.validate();
  return base;
}

Config Config::resolve(const std::string& yaml_file, const std::vector<std::string>& sets) {
  return resolve(yaml_file, sets, Config());
}

void Config::validate() const {
  model.keypoints.validate();
  model.detector.validate();
  const auto& k = model.keypoints;
  const auto& d = model.detector;
  require(!d.enabled || !d.backbone_from_keypoints ||
              (model.keypoints.enabled && d.backbone == k.backbone && d.pretrained.empty()),
          "model.detector.backbone_from_keypoints", d.backbone_from_keypoints,
          "false, or true with model.keypoints enabled, the same backbone in both and no detector.pretrained");
  require(model.keypoints.enabled || model.detector.enabled, "model.keypoints.enabled", model.keypoints.enabled,
          "at least one of model.keypoints and model.detector enabled");
  require(data.box_expand >= 1.0f, "data.box_expand", data.box_expand, ">= 1");
  require(data.scale_aug >= 0 && data.scale_aug < 1, "data.scale_aug", data.scale_aug, "in [0, 1)");
  require(data.holdout >= 0 && data.holdout < 1, "data.holdout", data.holdout, "in [0, 1)");
  require(data.workers >= 0 && data.workers <= 256, "data.workers", data.workers, "0 to 256");
  require(data.prefetch >= 1 && data.prefetch <= 1024, "data.prefetch", data.prefetch, "1 to 1024");
  require(loss.ohkm_topk >= 1, "loss.ohkm_topk", loss.ohkm_topk, ">= 1");
  require(loss.global_weight >= 0 && std::isfinite(loss.global_weight), "loss.global_weight", loss.global_weight,
          "finite and >= 0");
  require(loss.coarse_to_fine >= 0 && loss.coarse_to_fine <= 16, "loss.coarse_to_fine", loss.coarse_to_fine,
          "in [0, 16] (heatmap pixels)");
  require(loss.same_stride_sigma >= 0.25 && loss.same_stride_sigma <= 1, "loss.same_stride_sigma",
          loss.same_stride_sigma, "in [0.25, 1]");
  const auto& pi = data.pretrain_input_size;
  require(pi.empty() || (pi.size() == 2 && pi[0] % 32 == 0 && pi[1] % 32 == 0 && pi[0] > 0 && pi[1] > 0 &&
                          pi[0] <= 1024 && pi[1] <= 1024),
          "data.pretrain_input_size", pi, "empty or [height, width], both multiples of 32 from 32 to 1024");
  require(data.pretrain_synthetic >= 0 && data.pretrain_synthetic <= 1000000, "data.pretrain_synthetic",
          data.pretrain_synthetic, "0 (none) to 1000000");
  require(semi.rounds >= 1 && semi.rounds <= 10, "semi.rounds", semi.rounds, "1 to 10");
  require(semi.min_score >= 0 && semi.min_score <= 1, "semi.min_score", semi.min_score, "in [0, 1]");
  require(semi.max_disagreement > 0 && semi.max_disagreement <= 1, "semi.max_disagreement", semi.max_disagreement,
          "in (0, 1] (ne_image units)");
  require(semi.scale_jitter >= 0 && semi.scale_jitter < 1, "semi.scale_jitter", semi.scale_jitter, "in [0, 1)");
  require(semi.min_landmark_score >= 0 && semi.min_landmark_score <= 1, "semi.min_landmark_score",
          semi.min_landmark_score, "in [0, 1]");
  require(semi.keypoint_iters >= 0, "semi.keypoint_iters", semi.keypoint_iters, ">= 0");
  require(semi.detector_iters >= 0, "semi.detector_iters", semi.detector_iters, ">= 0");
  require(data.unlabelled.empty() || (model.keypoints.enabled && model.detector.enabled), "data.unlabelled",
          data.unlabelled,
          "empty, or a folder with both model.keypoints and model.detector enabled (the detector finds the garments "
          "on the unlabelled photos, the landmark network labels them)");
  for (const auto& [name, t] : {std::pair<std::string, const TrainConfig&>{"train", train},
                                 std::pair<std::string, const TrainConfig&>{"train_pretrain", train_pretrain},
                                 std::pair<std::string, const TrainConfig&>{"train_detector", train_detector}}) {
    require(t.optimizer == "adam" || t.optimizer == "sgd", name + ".optimizer", t.optimizer, "adam or sgd");
    require(t.schedule == "cosine" || t.schedule == "step", name + ".schedule", t.schedule, "cosine or step");
    require(t.lr > 0, name + ".lr", t.lr, "> 0");
    require(t.epochs >= 1, name + ".epochs", t.epochs, ">= 1");
    require(t.iters >= 0, name + ".iters", t.iters, ">= 0 (0: epochs x batches per epoch)");
    require(t.batch_size >= 1 && t.batch_size <= 4096, name + ".batch_size", t.batch_size, "1 to 4096");
    require(t.warmup_iters >= 0, name + ".warmup_iters", t.warmup_iters, ">= 0");
    require(t.time_limit_minutes >= 0, name + ".time_limit_minutes", t.time_limit_minutes, ">= 0");
    require(t.val_every >= 0, name + ".val_every", t.val_every, ">= 0 (0: never)");
    require(t.log_every >= 1, name + ".log_every", t.log_every, ">= 1");
    require(t.precision == "float32" || t.precision == "bfloat16" || t.precision == "float16", name + ".precision",
            t.precision, "float32, bfloat16 or float16");
    require(t.dist_timeout_s >= 1 && t.dist_timeout_s <= 86400, name + ".dist_timeout_s", t.dist_timeout_s,
            "1 to 86400 seconds");
  }
  require(test.decode == "taylor" || test.decode == "quarter" || test.decode == "argmax", "test.decode", test.decode,
          "taylor, quarter or argmax");
  require(test.batch_size >= 1 && test.batch_size <= 4096, "test.batch_size", test.batch_size, "1 to 4096");
  require(test.detector_batch_size >= 1 && test.detector_batch_size <= 1024, "test.detector_batch_size",
          test.detector_batch_size, "1 to 1024");
  require(test.visible_score >= 0 && test.visible_score <= 1, "test.visible_score", test.visible_score, "in [0, 1]");
  require(test.min_score >= 0 && test.min_score <= 1, "test.min_score", test.min_score, "in [0, 1]");
  require(test.precision == "float32" || test.precision == "bfloat16" || test.precision == "float16", "test.precision",
          test.precision, "float32, bfloat16 or float16");
}

nlohmann::json Config::to_json() const {
  nlohmann::json out = nlohmann::json::object();
  ToJson visitor{out};
  const_cast<Config*>(this)->visit(visitor);
  return out;
}

std::string Config::to_yaml() const {
  YAML::Emitter emitter;
  emitter << YAML::Load(to_json().dump());
  return emitter.c_str();
}

Config Config::from_json(const nlohmann::json& j) {
  Config cfg;
  cfg.load_yaml_string(j.dump(), "stored config");
  cfg.validate();
  return cfg;
}

}  // namespace cspn
