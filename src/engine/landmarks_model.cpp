#include "cspn/engine/landmarks_model.hpp"

#include "cspn/engine/process.hpp"
#include "cspn/io/weights.hpp"
#include "cspn/model/batch_norm.hpp"

namespace cspn {

namespace {

torch::ScalarType inference_dtype(const std::string& precision, torch::Device device) {
  if (precision == "bfloat16") return torch::kBFloat16;
  if (precision == "float16") {
    if (!device.is_cuda())
      throw std::invalid_argument("test.precision float16 needs a CUDA device (on a CPU use bfloat16)");
    return torch::kFloat16;
  }
  return torch::kFloat32;
}

}  // namespace

LandmarkPredictor::LandmarkPredictor(CSPNNet net, const Config& cfg, LandmarkSchema schema, torch::Device device)
    : net_(std::move(net)),
      cfg_(cfg),
      schema_(std::move(schema)),
      device_(device),
      dtype_(inference_dtype(cfg.test.precision, device)) {
  for (int i = 0; i < cfg.model.keypoints.stages; ++i) codecs_.push_back(HeatmapCodec::for_stage(cfg.model.keypoints, i));
  net_->to(device_, dtype_);
  net_->eval();
}

torch::Tensor LandmarkPredictor::network_input(const torch::Tensor& images) const {
  return images.to(device_, dtype_).contiguous(torch::MemoryFormat::ChannelsLast);
}

std::vector<torch::Tensor> LandmarkPredictor::run_network(const torch::Tensor& images) {
  c10::InferenceMode inference;
  auto stages = net_->forward(network_input(images)).stages;
  for (auto& s : stages) s = s.to(torch::kFloat32);
  return stages;
}

LandmarkPredictor LandmarkPredictor::from_model_file(const ModelFile& file, torch::Device device) {
  if (!file.config.model.keypoints.enabled)
    throw std::invalid_argument("the model file has no landmark network (model.keypoints.enabled is false)");
  require_memory(file.config, /*training=*/false, device, "the landmark network");
  CSPNNet net(file.config.model.keypoints, file.schema.num_landmarks());
  const LoadReport report = load_state_dict(*net, file.tensors, "keypoints.");
  if (!report.missing.empty() || !report.mismatched.empty())
    throw std::runtime_error("model file does not match its own config:\n" + report.summary());
  fold_batch_norm(*net);
  use_channels_last(*net);
  return LandmarkPredictor(net, file.config, file.schema, device);
}

LandmarkPredictions LandmarkPredictor::predict_crops(const torch::Tensor& images, bool all_stages,
                                                     std::optional<bool> flip) {
  const bool flipped = flip.value_or(cfg_.test.flip);
  c10::InferenceMode inference;
  const auto x = network_input(images);
  const int64_t b = x.size(0);
  auto stages = run_network(flipped ? torch::cat({x, x.flip({3})}) : x);
  LandmarkPredictions out;
  for (size_t s = all_stages ? 0 : stages.size() - 1; s < stages.size(); ++s) {
    auto heatmaps = stages[s];
    if (flipped)
      heatmaps = 0.5 * (heatmaps.slice(0, 0, b) + HeatmapCodec::unflip(heatmaps.slice(0, b), schema_.flip));
    auto [coords, scores] = codecs_[s].decode(heatmaps, cfg_.test.decode);
    out.coords = coords.cpu();
    out.scores = scores.cpu();
    if (all_stages) out.stage_coords.push_back(out.coords);
  }
  return out;
}

LandmarkPredictions LandmarkPredictor::predict_jobs(const CropBatcher& batcher,
                                                    const std::function<void(size_t, size_t)>& progress,
                                                    bool all_stages, std::optional<bool> flip) {
  const size_t n = batcher.size(), bs = static_cast<size_t>(cfg_.test.batch_size);
  const size_t batches = (n + bs - 1) / bs;
  const int64_t k = schema_.num_landmarks();
  LandmarkPredictions out{torch::zeros({static_cast<int64_t>(n), k, 2}), torch::zeros({static_cast<int64_t>(n), k}), {}};
  if (all_stages)
    for (int s = 0; s < net_->num_stages(); ++s) out.stage_coords.push_back(torch::zeros_like(out.coords));
  BatchLoader<KeypointBatch> loader(
      [&](size_t i) {
        std::vector<size_t> idx;
        for (size_t j = i * bs; j < std::min(n, (i + 1) * bs); ++j) idx.push_back(j);
        return batcher.make(idx, i);
      },
      // A worker thread only pays when it can prepare the next batch while the network runs; for a
      // single batch (the pipeline's usual case) it costs a third of the network's time on 2 cores.
      batches, batches > 1 ? cfg_.data.workers : 0, cfg_.data.prefetch);
  size_t done = 0;
  while (auto batch = loader.next()) {
    const auto crops = predict_crops(batch->images, all_stages, flip);
    auto rows = torch::tensor(std::vector<int64_t>(batch->jobs.begin(), batch->jobs.end()));
    out.coords.index_copy_(0, rows, HeatmapCodec::to_image(crops.coords, batch->crop_to_image));
    out.scores.index_copy_(0, rows, crops.scores);
    for (size_t s = 0; s < out.stage_coords.size(); ++s)
      out.stage_coords[s].index_copy_(0, rows, HeatmapCodec::to_image(crops.stage_coords[s], batch->crop_to_image));
    done += batch->jobs.size();
    if (progress) progress(done, n);
  }
  return out;
}

MeanShape::MeanShape(const Dataset& train) {
  const int c = train.schema.num_categories(), k = train.schema.num_landmarks();
  auto sum = torch::zeros({c, k, 2}, torch::kDouble);
  auto count = torch::zeros({c, k, 1}, torch::kDouble);
  auto s = sum.accessor<double, 3>();
  auto n = count.accessor<double, 3>();
  for (const auto& sample : train.samples) {
    for (const auto& g : sample.garments) {
      const double w = std::max(g.box.width(), 1.0f), h = std::max(g.box.height(), 1.0f);
      for (int j = 0; j < k; ++j) {
        const auto& p = g.keypoints[j];
        if (p.v == Visibility::Absent) continue;
        s[g.category][j][0] += (p.x - g.box.x1) / w;
        s[g.category][j][1] += (p.y - g.box.y1) / h;
        n[g.category][j][0] += 1;
      }
    }
  }
  if (count.sum().item<double>() == 0)
    throw std::invalid_argument("mean-shape baseline: the training data has no annotated landmarks");
  // Slots never seen for a category sit at the box centre (they are never scored anyway).
  layout_ = torch::where(count > 0, sum / count.clamp_min(1), torch::full_like(sum, 0.5)).to(torch::kFloat);
}

torch::Tensor MeanShape::predict(const std::vector<CropJob>& jobs) const {
  auto out = torch::empty({static_cast<int64_t>(jobs.size()), layout_.size(1), 2});
  for (size_t i = 0; i < jobs.size(); ++i) {
    const Box& b = jobs[i].box;
    auto unit = layout_[jobs[i].category];
    out[i] = unit * torch::tensor({b.width(), b.height()}) + torch::tensor({b.x1, b.y1});
  }
  return out;
}

}  // namespace cspn
