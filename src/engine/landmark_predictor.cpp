#include "cspn/engine/landmark_predictor.hpp"

#include "cspn/core/io/weights.hpp"
#include "cspn/core/model/batch_norm.hpp"
#include "cspn/core/runtime.hpp"
#include "cspn/engine/loader.hpp"

namespace cspn {

LandmarkPredictor::LandmarkPredictor(CSPNNet net, const Config& cfg, LandmarkSchema schema, torch::Device device)
    : net_(std::move(net)),
      cfg_(cfg),
      schema_(std::move(schema)),
      device_(device),
      dtype_(precision_dtype(cfg.test.precision, device, "test.precision")) {
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
    if (flipped) {
      const auto plain = heatmaps.slice(0, 0, b), mirrored = HeatmapCodec::unflip(heatmaps.slice(0, b), schema_.flip);
      if (s + 1 == stages.size())
        out.flip_offsets = (codecs_[s].decode(plain, cfg_.test.decode).first -
                            codecs_[s].decode(mirrored, cfg_.test.decode).first).cpu();
      heatmaps = 0.5 * (plain + mirrored);
    }
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
    if (crops.flip_offsets.defined()) {
      if (!out.flip_offsets.defined()) out.flip_offsets = torch::zeros_like(out.coords);
      // The transform is affine: an offset maps as the difference of its two ends.
      const auto& affine = batch->crop_to_image;
      out.flip_offsets.index_copy_(0, rows, HeatmapCodec::to_image(crops.coords + crops.flip_offsets, affine) -
                                                HeatmapCodec::to_image(crops.coords, affine));
    }
    for (size_t s = 0; s < out.stage_coords.size(); ++s)
      out.stage_coords[s].index_copy_(0, rows, HeatmapCodec::to_image(crops.stage_coords[s], batch->crop_to_image));
    done += batch->jobs.size();
    if (progress) progress(done, n);
  }
  return out;
}

}  // namespace cspn
