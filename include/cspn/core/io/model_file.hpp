#pragma once
// The model file (.cspn): a safetensors file whose metadata holds the resolved config, the landmark
// schema and a format version, so eval, predict and info need nothing else.
#include <string>

#include <nlohmann/json.hpp>

#include "cspn/core/config.hpp"
#include "cspn/core/io/weights.hpp"
#include "cspn/core/schema.hpp"

namespace cspn {

// Metadata "cspn.format" of the files this build writes: format 3. Format 3 added stages that refine
// at a finer stride than stage 1's (model.keypoints.refine_stride); format 2 files read as before,
// at stride 4. Format 2 made stages 2..4 refine the previous answer (cross-stage encoder and decoder
// features, residual heatmaps, coarse-level heads): format 1 landmark networks have another stage
// layout and are refused, though their backbone can still start a new run
// (model.keypoints.pretrained).
inline constexpr int kModelFileFormat = 3;

struct ModelFile {
  Config config;
  LandmarkSchema schema;
  nlohmann::json extra;   // free-form run facts (epochs trained, metrics)
  StateDict tensors;      // "keypoints.*" and "detector.*" keys
};

// Atomic write (temporary file + rename).
void save_model_file(const std::string& path, const ModelFile& model);
// Errors name the path and what is wrong (not a model file, newer format version, bad metadata).
ModelFile load_model_file(const std::string& path);

}  // namespace cspn
