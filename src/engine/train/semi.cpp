// data.unlabelled: rounds of pseudo-labelling the photos nobody labelled, then training both halves
// on the labelled and pseudo-labelled photos together.
#include <spdlog/spdlog.h>

#include "cspn/data/readers.hpp"
#include "cspn/engine/garment_detector.hpp"
#include "cspn/engine/landmark_predictor.hpp"
#include "cspn/engine/progress.hpp"
#include "cspn/engine/pseudo_labels.hpp"
#include "train_internal.hpp"

namespace cspn::train_detail {

Dataset read_unlabelled_photos(const Config& cfg, const LandmarkSchema& schema) {
  Dataset unlabelled = read_unlabelled(cfg.data.unlabelled, schema);
  if (!unlabelled.skipped.empty())
    spdlog::warn("data.unlabelled: skipped {} unreadable image(s):", unlabelled.skipped.size());
  for (const auto& message : unlabelled.skipped) spdlog::warn("  {}", message);
  spdlog::info("data.unlabelled: {} photos in {}", unlabelled.samples.size(), cfg.data.unlabelled);
  return unlabelled;
}

nlohmann::json train_semi_supervised(const RunContext& run, CSPNNet keypoint_net, FasterRCNN detector,
                                     const Dataset& train_set, const Dataset& val_set, const Dataset& unlabelled) {
  const Config& cfg = run.cfg;

  Config teacher = cfg;
  teacher.test.precision = "float32";  // the networks being trained stay in float32
  TrainConfig keypoint_tc = cfg.train, detector_tc = cfg.train_detector;
  keypoint_tc.iters = cfg.semi.keypoint_iters;
  detector_tc.iters = cfg.semi.detector_iters;
  nlohmann::json rounds = nlohmann::json::array();
  for (int r = 1; r <= cfg.semi.rounds; ++r) {
    PseudoLabelCounts counts;
    Dataset pseudo;
    {
      GarmentDetector garments(detector, teacher, train_set.schema, run.device);
      LandmarkPredictor landmarks(keypoint_net, teacher, train_set.schema, run.device);
      Progress bar("pseudo-labels", unlabelled.samples.size(), "img", run.opt.progress && run.main);
      pseudo = pseudo_label(garments, landmarks, unlabelled, teacher, &counts,
                            [&bar](size_t done, size_t) { bar.update(done); });
      bar.finish();
    }
    for (size_t i = unlabelled.skipped.size(); i < pseudo.skipped.size(); ++i)
      spdlog::warn("data.unlabelled: skipped {}", pseudo.skipped[i]);
    nlohmann::json record{{"round", r},
                          {"images", counts.images},
                          {"unreadable", unlabelled.skipped.size() + counts.unreadable},
                          {"garments", counts.garments},
                          {"landmarks", counts.landmarks},
                          {"candidate_landmarks", counts.candidates}};
    nlohmann::json log_record{{"type", "pseudo_labels"}};
    log_record.update(record);
    run.log.write(log_record);
    spdlog::info("round {}: {} garments on {} photos, {} of their {} landmarks kept as pseudo-labels", r,
                 counts.garments, counts.images, counts.landmarks, counts.candidates);

    Dataset both = train_set;
    both.samples.insert(both.samples.end(), pseudo.samples.begin(), pseudo.samples.end());
    const std::string suffix = "-round" + std::to_string(r);
    if (keypoint_tc.iters > 0)
      record["keypoints"] = train_keypoints(run, keypoint_net, both, val_set, keypoint_tc, "keypoints" + suffix);
    if (detector_tc.iters > 0)
      record["detector"] = train_detector(run, detector, both, val_set, detector_tc, "detector" + suffix);
    rounds.push_back(record);
  }
  return {{"unlabelled", cfg.data.unlabelled}, {"photos", unlabelled.samples.size()}, {"rounds", rounds}};
}

}  // namespace cspn::train_detail
