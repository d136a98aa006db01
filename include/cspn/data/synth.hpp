#pragma once
// Synthetic garments: parametric tops, trousers, skirts and dresses whose landmarks are known
// exactly, drawn photo-like (fabric colour and texture, shading, clutter, occluders, truncation),
// laid out, worn or hanging.
#include <cstdint>
#include <functional>
#include <string>

#include "cspn/core/schema.hpp"

namespace cspn {

struct SynthOptions {
  int count = 1000;
  std::uint64_t seed = 0;
  int width = 256, height = 256;   // image size
  double val_fraction = 0.1, test_fraction = 0.1;
  bool scenes = false;             // several garments per image, COCO JSON output
  int max_garments = 4;            // scenes only
  double hanging = 0;              // share of garments hanging as from grippers or a hanger: held at
                                   // the shoulders (waist), sleeves mostly down their sides (0: none,
                                   // the data sets of earlier versions)
  int threads = 0;                 // 0: hardware concurrency
};

// Writes the FLD layout (img/, Anno/, Eval/) to out_dir, or with opt.scenes a COCO keypoint JSON
// (annotations.json + img/). Deterministic for a seed whatever the thread count.
// progress(done, total) is called from the writing thread.
void synthesize(const std::string& out_dir, const SynthOptions& opt,
                const std::function<void(int, int)>& progress = {});

// Synthetic garments carry DeepFashion's 8 landmarks: for any other schema, throws
// std::invalid_argument starting with `what` (the flag or key that asked) and ending with `remedy`.
void require_synthesizable(const LandmarkSchema& schema, const std::string& what, const std::string& remedy);

}  // namespace cspn
