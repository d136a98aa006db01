#pragma once
// The report of an evaluation: metrics files, loss curves, example images.
#include <string>

#include "cspn/core/io/model_file.hpp"
#include "cspn/core/sample.hpp"
#include "cspn/engine/evaluate.hpp"

namespace cspn {

// Writes metrics.json/metrics.md, loss.png (from a run's log.jsonl, when given) and up to
// `examples` images with predicted (filled) and true (ring) landmarks into `dir`.
void write_report(const std::string& dir, const ModelFile& model, const Dataset& test, const EvalResult& result,
                  const std::string& run_log, int examples, const std::string& device);

}  // namespace cspn
