#include "cspn/engine/mean_shape.hpp"

namespace cspn {

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
