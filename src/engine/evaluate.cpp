#include "cspn/engine/evaluate.hpp"

#include <cmath>
#include <cstdio>
#include <stdexcept>

namespace cspn {

void score_jobs(const Dataset& data, const std::vector<CropJob>& jobs, const torch::Tensor& coords,
                LandmarkMetrics& metrics) {
  const int k = data.schema.num_landmarks();
  std::vector<int64_t> rows;
  for (size_t i = 0; i < jobs.size(); ++i)
    if (jobs[i].garment >= 0) rows.push_back(static_cast<int64_t>(i));
  const auto n = static_cast<int64_t>(rows.size());
  if (n == 0) return;
  auto gt = torch::empty({n, k, 2});
  auto vis = torch::empty({n, k}, torch::kInt);
  auto category = torch::empty({n}, torch::kLong);
  auto size = torch::empty({n, 2});
  auto boxes = torch::empty({n, 4});
  auto gt_a = gt.accessor<float, 3>();
  auto vis_a = vis.accessor<int, 2>();
  for (int64_t r = 0; r < n; ++r) {
    const CropJob& job = jobs[rows[r]];
    const Sample& sample = data.samples[job.sample];
    const Garment& g = sample.garments[job.garment];
    for (int j = 0; j < k; ++j) {
      gt_a[r][j][0] = g.keypoints[j].x;
      gt_a[r][j][1] = g.keypoints[j].y;
      vis_a[r][j] = static_cast<int>(g.keypoints[j].v);
    }
    category[r] = g.category;
    size[r] = torch::tensor({static_cast<float>(sample.width), static_cast<float>(sample.height)});
    boxes[r] = torch::tensor({g.box.x1, g.box.y1, g.box.x2, g.box.y2});
  }
  metrics.add(coords.index_select(0, torch::tensor(rows)), gt, vis, category, size, boxes);
}

StageMetrics::StageMetrics(const LandmarkSchema& schema, int stages) {
  if (stages < 1) throw std::invalid_argument("StageMetrics: need at least one stage, got " + std::to_string(stages));
  stages_.assign(static_cast<size_t>(stages), LandmarkMetrics(schema));
}

void StageMetrics::add(const Dataset& data, const std::vector<CropJob>& jobs,
                       const std::vector<torch::Tensor>& stage_coords) {
  if (stage_coords.size() != stages_.size())
    throw std::invalid_argument("StageMetrics::add: predictions of " + std::to_string(stage_coords.size()) +
                                " stages for a model of " + std::to_string(stages_.size()));
  for (size_t s = 0; s < stages_.size(); ++s) score_jobs(data, jobs, stage_coords[s], stages_[s]);
}

nlohmann::json StageMetrics::per_stage() const {
  nlohmann::json out = nlohmann::json::array();
  for (size_t s = 0; s < stages_.size(); ++s) {
    const auto m = stages_[s].result();
    out.push_back({{"stage", s + 1},
                   {"ne_image", {{"avg", m["ne_image"]["avg"]}}},
                   {"ne_paper", {{"avg", m["ne_paper"]["avg"]}}},
                   {"pck_0_2", m["pck_0_2"]}});
  }
  return out;
}

std::string StageMetrics::describe(const nlohmann::json& per_stage) {
  std::string text = "per stage ne_image:";
  for (const auto& s : per_stage) {
    const auto& ne = s["ne_image"]["avg"];
    char part[48];
    std::snprintf(part, sizeof part, " %s%d %.4f", text.back() == ':' ? "" : "| ", s["stage"].get<int>(),
                  ne.is_number() ? ne.get<double>() : std::nan(""));
    text += part;
  }
  return text;
}

}  // namespace cspn
