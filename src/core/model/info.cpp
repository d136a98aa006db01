#include "cspn/core/model/info.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <ATen/record_function.h>

#include "cspn/core/detect/faster_rcnn.hpp"

namespace cspn {

namespace {

// The counter of the innermost count_flops on this thread. Thread-local because ATen copies
// RecordFunction callbacks into its intra-op worker threads; those see nullptr and count nothing.
thread_local double* t_flops = nullptr;

// aten::convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding,
// groups). Not aten::conv2d (a composite that calls it) nor aten::_convolution (called by it), so
// each convolution is counted once.
double convolution_flops(c10::ArrayRef<const c10::IValue> in) {
  const auto& x = in[0].toTensor();       // [B,Cin,*spatial]
  const auto& w = in[1].toTensor();       // [Cout,Cin/g,*k], transposed: [Cin,Cout/g,*k]
  const int64_t macs_per_point = w.numel() / w.size(0);
  if (in[6].toBool())  // transposed: every input point scatters into (Cout/g) * prod(k) outputs
    return 2.0 * static_cast<double>(x.numel()) * static_cast<double>(macs_per_point);
  const auto stride = in[3].toIntVector();
  const auto padding = in[4].toIntVector();
  const auto dilation = in[5].toIntVector();
  double outputs = static_cast<double>(x.size(0) * w.size(0));  // B * Cout
  for (int64_t d = 0; d + 2 < x.dim(); ++d) {
    const int64_t k = w.size(d + 2);
    outputs *= static_cast<double>((x.size(d + 2) + 2 * padding[d] - dilation[d] * (k - 1) - 1) /
                                       stride[d] + 1);
  }
  return 2.0 * outputs * static_cast<double>(macs_per_point);
}

// a [..,n,m] x b [..,m,p]: 2 * batch * n * m * p.
double matmul_flops(const at::Tensor& a, const at::Tensor& b) {
  return 2.0 * static_cast<double>(a.numel()) * static_cast<double>(b.size(-1));
}

std::unique_ptr<at::ObserverContext> on_op_start(const at::RecordFunction& fn) {
  if (t_flops == nullptr) return nullptr;
  const char* name = fn.name();
  const auto in = fn.inputs();
  if (std::strcmp(name, "aten::convolution") == 0) {
    *t_flops += convolution_flops(in);
  } else if (std::strcmp(name, "aten::mm") == 0 || std::strcmp(name, "aten::bmm") == 0) {
    *t_flops += matmul_flops(in[0].toTensor(), in[1].toTensor());
  } else if (std::strcmp(name, "aten::addmm") == 0 || std::strcmp(name, "aten::baddbmm") == 0) {
    *t_flops += matmul_flops(in[1].toTensor(), in[2].toTensor());  // (self, mat1, mat2, ...)
  }
  return nullptr;
}

// Installs the observer for the outermost count_flops on this thread and removes it on exit,
// also when `fn` throws.
class FlopCounter {
 public:
  explicit FlopCounter(double* total) : previous_(t_flops) {
    t_flops = total;
    if (previous_ == nullptr)
      handle_ = at::addThreadLocalCallback(at::RecordFunctionCallback(on_op_start)
                                               .needsInputs(true)
                                               .scopes({at::RecordScope::FUNCTION}));
  }
  ~FlopCounter() {
    if (previous_ == nullptr) at::removeCallback(handle_);
    else *previous_ += *t_flops;  // a nested count also belongs to the enclosing one
    t_flops = previous_;
  }
  FlopCounter(const FlopCounter&) = delete;
  FlopCounter& operator=(const FlopCounter&) = delete;

 private:
  double* previous_;
  at::CallbackHandle handle_ = at::INVALID_CALLBACK_HANDLE;
};

// Parameters that inference uses (training-only heads left out).
int64_t count_params(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.named_parameters())
    if (!CSPNNetImpl::training_only(p.key())) n += p.value().numel();
  return n;
}

// Puts the net in eval mode for the scope and restores its mode on exit.
class EvalGuard {
 public:
  explicit EvalGuard(torch::nn::Module& m) : module_(m), was_training_(m.is_training()) { m.eval(); }
  ~EvalGuard() { module_.train(was_training_); }
  EvalGuard(const EvalGuard&) = delete;
  EvalGuard& operator=(const EvalGuard&) = delete;

 private:
  torch::nn::Module& module_;
  bool was_training_;
};

}  // namespace

double count_flops(const std::function<void()>& fn) {
  double total = 0;
  FlopCounter counter(&total);
  fn();
  return total;
}

std::vector<PartCost> cspn_costs(CSPNNet& net, int input_h, int input_w) {
  if (input_h <= 0 || input_w <= 0 || input_h % 32 != 0 || input_w % 32 != 0)
    throw std::invalid_argument("cspn_costs: input size must be positive multiples of 32, got " +
                                std::to_string(input_h) + "x" + std::to_string(input_w));
  torch::NoGradGuard no_grad;
  EvalGuard eval(*net);
  const auto options = net->parameters().front().options();
  const auto x = torch::zeros({1, 3, input_h, input_w}, options);

  std::vector<PartCost> costs;
  StageOutput cur;
  const double backbone_flops = count_flops([&] { cur = net->trunk(x); });
  costs.push_back({"backbone", count_params(*net->backbone), backbone_flops / 1e9});
  for (int i = 0; i < net->num_stages(); ++i) {
    const double flops = count_flops([&] { cur = net->stage_forward(i, cur); });
    costs.push_back({"stage" + std::to_string(i + 1), count_params(net->stage(i)), flops / 1e9});
  }
  return costs;
}

MemoryNeed estimate_memory(const Config& cfg, bool training) {
  constexpr double kFloat = 4;
  MemoryNeed need;
  const auto& k = cfg.model.keypoints;
  if (k.enabled) {
    const double c = k.channels;
    need.weights_bytes += kFloat * 28 * c * c * k.stages;
    double pixels = static_cast<double>(k.input_size[0]) * k.input_size[1];
    const auto& pre = cfg.data.pretrain_input_size;
    if (training && pre.size() == 2) pixels = std::max(pixels, static_cast<double>(pre[0]) * pre[1]);
    // Encoder and decoder, four levels from H/4 down: 2 x (1 + 1/4 + 1/16 + 1/64) x C x H/4 x W/4.
    const double stage_maps = kFloat * 2 * (85.0 / 64) * c * pixels / 16;
    need.activation_bytes += training ? cfg.train.batch_size * 3 * stage_maps * k.stages
                                      : cfg.test.batch_size * stage_maps * std::min(2, k.stages);
  }
  const auto& d = cfg.model.detector;
  if (d.enabled) {
    constexpr double kTrunkChannels = 256, kStride = 16;
    if (d.box_head == "fc") {
      const double h = d.head_dim;
      need.weights_bytes += kFloat * (kTrunkChannels * d.roi_size * d.roi_size * h + h * h);
    }
    const double side = std::ceil(d.max_size / kStride);
    need.activation_bytes += kFloat * kTrunkChannels * side * side *
                             (training ? cfg.train_detector.batch_size : cfg.test.detector_batch_size);
  }
  if (training) need.weights_bytes *= 4;
  return need;
}

std::string describe_model(const Config& cfg, const LandmarkSchema& schema) {
  std::ostringstream out;
  char line[160];
  const auto& k = cfg.model.keypoints;
  CSPNNet net(k, schema.num_landmarks());
  out << "landmark network: " << k.backbone << ", " << k.stages << " stages, input " << k.input_size[0] << "x"
      << k.input_size[1] << ", " << schema.num_landmarks() << " landmarks (" << schema.name << ")\n";
  // Inference costs (training-only heads left out), per part and cumulative as in the paper's Table 3.
  const auto costs = cspn_costs(net, k.input_size[0], k.input_size[1]);
  std::snprintf(line, sizeof line, "%-10s %14s %12s %12s\n", "part", "params", "MB (fp32)", "GFLOPs");
  out << line;
  for (const auto& part : costs) {
    std::snprintf(line, sizeof line, "%-10s %14lld %12.1f %12.2f\n", part.name.c_str(),
                  static_cast<long long>(part.params), part.params * 4.0 / 1e6, part.gflops);
    out << line;
  }
  std::snprintf(line, sizeof line, "\n%-10s %14s %12s %12s\n", "stages", "params", "MB (fp32)", "GFLOPs");
  out << line;
  int64_t params = costs.front().params;
  double gflops = costs.front().gflops;
  for (size_t s = 1; s < costs.size(); ++s) {
    params += costs[s].params;
    gflops += costs[s].gflops;
    std::snprintf(line, sizeof line, "%-10zu %14lld %12.1f %12.2f\n", s, static_cast<long long>(params),
                  params * 4.0 / 1e6, gflops);
    out << line;
  }
  const MemoryNeed inference = estimate_memory(cfg, false), training = estimate_memory(cfg, true);
  std::snprintf(line, sizeof line,
                "\nmemory, at least: %.2f GB in inference (test.batch_size %d), %.2f GB in training "
                "(train.batch_size %d)\n",
                inference.total() / 1e9, cfg.test.batch_size, training.total() / 1e9, cfg.train.batch_size);
  out << line;
  if (cfg.model.detector.enabled) {
    const auto& d = cfg.model.detector;
    FasterRCNN detector(d, schema.num_categories() + 1);
    int64_t detector_params = 0;
    for (const auto& p : detector->parameters()) detector_params += p.numel();
    out << "detector: Faster R-CNN, " << d.backbone << " (stride 16), " << (d.roi_op == "align" ? "RoIAlign" : "RoI pooling")
        << ", " << schema.num_categories() << " categories + background, input shorter side " << d.min_size
        << " (longer <= " << d.max_size << "): " << detector_params << " params (" << detector_params * 4.0 / 1e6
        << " MB fp32)\n";
  }
  return out.str();
}

std::string describe_backbones(int input_h, int input_w) {
  if (input_h <= 0 || input_w <= 0 || input_h % 32 != 0 || input_w % 32 != 0)
    throw std::invalid_argument("describe_backbones: input size must be positive multiples of 32, got " +
                                std::to_string(input_h) + "x" + std::to_string(input_w));
  torch::NoGradGuard no_grad;
  std::ostringstream out;
  char line[160];
  out << "backbones (model.keypoints.backbone, model.detector.backbone), input " << input_h << "x" << input_w << ":\n";
  std::snprintf(line, sizeof line, "%-14s %-24s %12s %10s %s\n", "name", "channels (stride 4..32)", "params", "GFLOPs",
                "box head");
  out << line;
  const auto x = torch::zeros({1, 3, input_h, input_w});
  for (const auto& name : backbone_names()) {
    auto backbone = make_backbone(name);
    backbone->eval();
    std::string channels;
    for (int64_t c : backbone->channels()) channels += (channels.empty() ? "" : " ") + std::to_string(c);
    const double flops = count_flops([&] { backbone->features(x); });
    std::snprintf(line, sizeof line, "%-14s %-24s %12lld %10.2f %s\n", name.c_str(), channels.c_str(),
                  static_cast<long long>(count_params(*backbone)), flops / 1e9,
                  backbone_has_box_head(name) ? "fc6/fc7 (box_head: vgg)" : "-");
    out << line;
  }
  return out.str();
}

}  // namespace cspn
