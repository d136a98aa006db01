#include "cspn/api/pipeline.hpp"

#include <chrono>
#include <map>
#include <stdexcept>

#include "cspn/core/metrics.hpp"
#include "cspn/core/runtime.hpp"
#include "cspn/engine/garment_detector.hpp"
#include "cspn/engine/landmark_predictor.hpp"
#include "cspn/engine/loader.hpp"

namespace cspn {

struct Pipeline::Impl {
  GarmentDetector detector;
  LandmarkPredictor landmarks;
  float min_score;
};

Pipeline::Pipeline(const ModelFile& file, torch::Device device)
    : impl_(std::make_unique<Impl>(Impl{GarmentDetector::from_model_file(file, device),
                                        LandmarkPredictor::from_model_file(file, device), file.config.test.min_score})) {}
Pipeline::~Pipeline() = default;
Pipeline::Pipeline(Pipeline&&) noexcept = default;
Pipeline& Pipeline::operator=(Pipeline&&) noexcept = default;

float Pipeline::min_score() const { return impl_->min_score; }
void Pipeline::set_min_score(float score) { impl_->min_score = score; }
const LandmarkSchema& Pipeline::schema() const { return impl_->landmarks.schema(); }
const Config& Pipeline::config() const { return impl_->landmarks.config(); }
torch::Device Pipeline::device() const { return impl_->landmarks.device(); }
GarmentDetector& Pipeline::detector() { return impl_->detector; }
LandmarkPredictor& Pipeline::landmarks() { return impl_->landmarks; }

std::vector<std::vector<GarmentPrediction>> Pipeline::predict(const std::vector<cv::Mat>& images) {
  return predict(images, {PredictOptions{}});
}

std::vector<std::vector<GarmentPrediction>> Pipeline::predict(const std::vector<cv::Mat>& images,
                                                              const std::vector<PredictOptions>& options,
                                                              PredictTimings* timings) {
  if (options.size() != images.size() && options.size() != 1)
    throw std::invalid_argument("Pipeline::predict: " + std::to_string(options.size()) + " options for " +
                                std::to_string(images.size()) + " images (give one per image, or one for all)");
  const auto option = [&](size_t i) -> const PredictOptions& { return options[options.size() == 1 ? 0 : i]; };
  using clock = std::chrono::steady_clock;
  const auto ms_since = [](clock::time_point t) {
    return std::chrono::duration<double, std::milli>(clock::now() - t).count();
  };
  const auto start = clock::now();
  const auto detections = impl_->detector.detect(images);
  synchronize(device());
  const double detector_ms = ms_since(start);

  // Crops go through the landmark network in two groups at most: images with and without the flip
  // test. An image's garments stay in one group, by decreasing detection score.
  const auto landmarks_start = clock::now();
  const LandmarkSchema& schema = this->schema();
  std::vector<std::vector<GarmentPrediction>> out(images.size());
  int crops = 0;
  for (const bool flip : {true, false}) {
    Dataset frames{schema, {}, {}};
    std::map<int, cv::Mat> decoded;
    std::vector<CropJob> jobs;
    std::vector<const DetectedGarment*> garment_of_job;
    for (size_t i = 0; i < images.size(); ++i) {
      Sample s;
      s.width = images[i].cols;
      s.height = images[i].rows;
      frames.samples.push_back(s);
      const PredictOptions& o = option(i);
      if (o.flip.value_or(config().test.flip) != flip) continue;
      decoded.emplace(static_cast<int>(i), images[i]);
      const float min_score = o.min_score.value_or(impl_->min_score);
      int kept = 0;
      for (const auto& d : detections[i]) {  // by decreasing score
        if (d.score < min_score || (o.max_garments > 0 && kept >= o.max_garments)) continue;
        jobs.push_back({static_cast<int>(i), -1, d.category, d.box});
        garment_of_job.push_back(&d);
        ++kept;
      }
    }
    if (jobs.empty()) continue;
    crops += static_cast<int>(jobs.size());
    const Config& cfg = config();
    CropBatcher batcher(frames, jobs, cfg, false, std::move(decoded));
    const auto predictions = impl_->landmarks.predict_jobs(batcher, {}, false, flip);
    auto c = predictions.coords.accessor<float, 3>();
    auto s = predictions.scores.accessor<float, 2>();
    for (size_t j = 0; j < jobs.size(); ++j) {
      const DetectedGarment& d = *garment_of_job[j];
      GarmentPrediction g{d.category, d.score, d.box, std::vector<LandmarkPoint>(schema.num_landmarks()), {}};
      const auto& ours = schema.categories[d.category].landmarks;
      for (int k : ours) g.landmarks[k] = {c[j][k][0], c[j][k][1], s[j][k], s[j][k] >= cfg.test.visible_score};
      if (predictions.flip_offsets.defined()) {
        const cv::Mat& image = images[jobs[j].sample];
        g.uncertainty = static_cast<float>(flip_uncertainty(predictions.flip_offsets[j], ours, image.cols, image.rows));
      }
      out[jobs[j].sample].push_back(std::move(g));
    }
  }
  if (timings) *timings = {detector_ms, ms_since(landmarks_start), crops};
  return out;
}

}  // namespace cspn
