#include "cspn/engine/evaluate.hpp"

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

}  // namespace cspn
