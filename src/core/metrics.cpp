#include "cspn/metrics.hpp"

#include <algorithm>
#include <cctype>
#include <iomanip>
#include <map>
#include <sstream>
#include <stdexcept>

#include <torch/torch.h>

namespace cspn {
namespace {

constexpr double kPckThreshold = 0.2;
enum Protocol { kPaper = 0, kImage = 1, kNumProtocols = 2 };
const char* const kProtocolNames[kNumProtocols] = {"ne_paper", "ne_image"};

std::string shape_of(const torch::Tensor& t) {
  std::ostringstream out;
  out << t.sizes();
  return out.str();
}

enum class Dtype { Float, Integer, Real };

void check_shape(const torch::Tensor& t, const std::string& what, std::vector<int64_t> expected, Dtype kind) {
  const bool real = !t.is_complex() && t.scalar_type() != torch::kBool;
  const bool dtype_ok = kind == Dtype::Float ? t.is_floating_point()
                        : kind == Dtype::Integer ? real && !t.is_floating_point()
                                                 : real;
  if (t.sizes() != torch::IntArrayRef(expected) || !dtype_ok) {
    const char* kinds[] = {"float ", "integer ", ""};
    std::ostringstream out;
    out << "LandmarkMetrics::add: " << what << " should be " << kinds[static_cast<int>(kind)]
        << torch::IntArrayRef(expected) << ", got " << t.dtype().name() << " " << t.sizes();
    throw std::invalid_argument(out.str());
  }
}

// Column label in the paper's Table 1 style: left_collar -> L.Collar, right_waistline -> R.Waist.
std::string short_label(const std::string& name) {
  static const std::map<std::string, std::string> kWords = {{"waistline", "Waist"}};
  std::string side, word = name;
  for (const auto& [prefix, abbrev] : {std::pair<std::string, std::string>{"left_", "L."}, {"right_", "R."}})
    if (name.rfind(prefix, 0) == 0) side = abbrev, word = name.substr(prefix.size());
  if (auto it = kWords.find(word); it != kWords.end()) return side + it->second;
  if (!word.empty()) word[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(word[0])));
  return side + word;
}

}  // namespace

LandmarkMetrics::LandmarkMetrics(LandmarkSchema schema)
    : schema_(std::move(schema)),
      ne_(kNumProtocols, std::vector<std::vector<Sum>>(schema_.num_categories() + 1,
                                                       std::vector<Sum>(schema_.num_landmarks()))) {
  if (schema_.num_landmarks() == 0 || schema_.num_categories() == 0)
    throw std::invalid_argument("LandmarkMetrics: schema '" + schema_.name + "' has " +
                                std::to_string(schema_.num_landmarks()) + " landmarks and " +
                                std::to_string(schema_.num_categories()) + " categories; both must be > 0");
}

void LandmarkMetrics::add(const torch::Tensor& pred, const torch::Tensor& gt, const torch::Tensor& vis,
                          const torch::Tensor& category, const torch::Tensor& image_size,
                          const torch::Tensor& boxes) {
  const int64_t k = schema_.num_landmarks(), c = schema_.num_categories();
  if (pred.dim() != 3)
    throw std::invalid_argument("LandmarkMetrics::add: pred should be float [N," + std::to_string(k) + ",2], got " +
                                shape_of(pred));
  const int64_t n = pred.size(0);
  check_shape(pred, "pred", {n, k, 2}, Dtype::Float);
  check_shape(gt, "gt", {n, k, 2}, Dtype::Float);
  check_shape(vis, "vis", {n, k}, Dtype::Integer);
  check_shape(category, "category", {n}, Dtype::Integer);
  check_shape(image_size, "image_size", {n, 2}, Dtype::Real);
  check_shape(boxes, "boxes", {n, 4}, Dtype::Real);
  if (n == 0) return;
  const auto dev = pred.device();
  // Sums over many garments: float64 keeps them exact enough to compare with hand arithmetic.
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64).device(dev);
  auto cat = category.to(dev, torch::kLong);
  const int64_t cat_min = cat.min().item<int64_t>(), cat_max = cat.max().item<int64_t>();
  if (cat_min < 0 || cat_max >= c)
    throw std::invalid_argument("LandmarkMetrics::add: category values should be in [0, " + std::to_string(c) +
                                ") (schema " + schema_.name + "), got range [" + std::to_string(cat_min) + ", " +
                                std::to_string(cat_max) + "]");
  auto size = image_size.to(f64);                                               // [N,2] (w, h)
  auto box = boxes.to(f64);                                                     // [N,4]
  auto box_wh = box.narrow(1, 2, 2) - box.narrow(1, 0, 2);                      // [N,2]
  if (!(size > 0).all().item<bool>())
    throw std::invalid_argument("LandmarkMetrics::add: image_size should be > 0, got " + shape_of(image_size) +
                                " with a non-positive entry");
  if (!(box_wh > 0).all().item<bool>())
    throw std::invalid_argument("LandmarkMetrics::add: boxes should have x2 > x1 and y2 > y1 (PCK normaliser), "
                                "got a degenerate box in " + shape_of(boxes));

  auto p = pred.to(f64), g = gt.to(f64);
  auto v = vis.to(dev);
  // A landmark counts where it is visible and its garment's category has the slot.
  auto counted = (v == static_cast<int>(Visibility::Visible)) & schema_.category_mask(cat).to(dev).gt(0);  // [N,K]
  auto diff = p - g;                                                            // [N,K,2]
  auto dist = diff.square().sum(2).sqrt();                                      // [N,K] pixels

  // s_k: ground-truth distance of the category's norm pair; undefined unless both are visible and apart.
  std::vector<int64_t> pair_table;
  for (const auto& cc : schema_.categories) pair_table.insert(pair_table.end(), cc.norm_pair.begin(), cc.norm_pair.end());
  auto pairs = torch::tensor(pair_table, torch::TensorOptions().dtype(torch::kLong).device(dev))
                   .view({c, 2}).index_select(0, cat);                          // [N,2]
  auto pair_xy = g.gather(1, pairs.unsqueeze(2).expand({n, 2, 2}));             // [N,2,2]
  auto s = (pair_xy.select(1, 0) - pair_xy.select(1, 1)).square().sum(1).sqrt(); // [N]
  auto defined = (v.gather(1, pairs) == static_cast<int>(Visibility::Visible)).all(1) & (s > 0);  // [N]

  torch::Tensor masks[kNumProtocols] = {counted & defined.unsqueeze(1), counted};
  torch::Tensor values[kNumProtocols] = {
      dist / torch::where(defined, s, torch::ones_like(s)).unsqueeze(1),
      (diff / size.unsqueeze(1)).square().sum(2).sqrt()};
  for (int proto = 0; proto < kNumProtocols; ++proto) {
    // Per category and landmark: [C,K] sums and counts of the counted values.
    auto m = masks[proto];
    auto totals = torch::zeros({c, k}, f64).index_add_(0, cat, torch::where(m, values[proto], torch::zeros_like(values[proto])));
    auto counts = torch::zeros({c, k}, torch::TensorOptions().dtype(torch::kLong).device(dev)).index_add_(0, cat, m.to(torch::kLong));
    totals = totals.cpu();
    counts = counts.cpu();
    auto ta = totals.accessor<double, 2>();
    auto ca = counts.accessor<int64_t, 2>();
    for (int64_t ci = 0; ci < c; ++ci)
      for (int64_t ki = 0; ki < k; ++ki)
        for (Sum* sum : {&ne_[proto][0][ki], &ne_[proto][ci + 1][ki]}) {
          sum->total += ta[ci][ki];
          sum->count += ca[ci][ki];
        }
  }

  // PCK@0.2: the error per axis in units of the ground-truth box's width and height.
  auto pck_err = (diff / box_wh.unsqueeze(1)).square().sum(2).sqrt();         // [N,K]
  pck_hits_ += ((pck_err < kPckThreshold) & counted).sum().item<int64_t>();
  visible_ += counted.sum().item<int64_t>();
  epe_total_ += torch::where(counted, dist, torch::zeros_like(dist)).sum().item<double>();
  undefined_norm_ += (~defined).sum().item<int64_t>();
  garments_ += n;
}

nlohmann::json LandmarkMetrics::result() const {
  // Mean over the garments where the landmark was counted; null where it never was.
  auto mean = [](const Sum& s) -> nlohmann::json {
    return s.count > 0 ? nlohmann::json(s.total / static_cast<double>(s.count)) : nlohmann::json(nullptr);
  };
  // {avg, per_landmark} of one row over the given slots; avg over the slots that have a value.
  auto row = [&](const std::vector<Sum>& sums, const std::vector<int>& slots) {
    nlohmann::json per = nlohmann::json::object();
    double total = 0;
    int defined = 0;
    for (int slot : slots) {
      per[schema_.landmarks[slot]] = mean(sums[slot]);
      if (sums[slot].count > 0) total += sums[slot].total / static_cast<double>(sums[slot].count), ++defined;
    }
    return nlohmann::json{{"avg", defined > 0 ? nlohmann::json(total / defined) : nlohmann::json(nullptr)},
                          {"per_landmark", per}};
  };
  std::vector<int> all_slots(schema_.num_landmarks());
  for (int i = 0; i < schema_.num_landmarks(); ++i) all_slots[i] = i;

  nlohmann::json out;
  for (int proto = 0; proto < kNumProtocols; ++proto) {
    auto j = row(ne_[proto][0], all_slots);
    nlohmann::json per_category = nlohmann::json::object();
    for (int ci = 0; ci < schema_.num_categories(); ++ci)
      per_category[schema_.categories[ci].name] = row(ne_[proto][ci + 1], schema_.categories[ci].landmarks);
    j["per_category"] = per_category;
    if (proto == kPaper) j["undefined_norm"] = undefined_norm_;
    out[kProtocolNames[proto]] = j;
  }
  const double visible = static_cast<double>(visible_);
  out["pck_0_2"] = visible_ > 0 ? nlohmann::json(pck_hits_ / visible) : nlohmann::json(nullptr);
  out["epe_px"] = visible_ > 0 ? nlohmann::json(epe_total_ / visible) : nlohmann::json(nullptr);
  out["visible_landmarks"] = visible_;
  out["garments"] = garments_;
  return out;
}

std::string LandmarkMetrics::table() const {
  const auto r = result();
  std::vector<std::string> labels;
  for (const auto& name : schema_.landmarks) labels.push_back(short_label(name));
  labels.push_back("Avg");
  size_t col = std::string("0.0000").size();
  for (const auto& l : labels) col = std::max(col, l.size());
  col += 2;
  std::vector<std::pair<std::string, const nlohmann::json*>> rows;  // label, {avg, per_landmark}
  for (const char* proto : kProtocolNames) {
    rows.emplace_back(std::string(proto) + " all", &r.at(proto));
    for (const auto& cat : schema_.categories)
      rows.emplace_back(std::string(proto) + " " + cat.name, &r.at(proto).at("per_category").at(cat.name));
  }
  size_t first = 0;
  for (const auto& [label, _] : rows) first = std::max(first, label.size());
  first += 2;

  std::ostringstream out;
  out << std::left << std::setw(static_cast<int>(first)) << "" << std::right;
  for (const auto& l : labels) out << std::setw(static_cast<int>(col)) << l;
  out << "\n" << std::fixed << std::setprecision(4);
  auto cell = [&](const nlohmann::json* value) {
    out << std::setw(static_cast<int>(col));
    if (value && value->is_number()) out << value->get<double>();
    else out << "-";
  };
  for (const auto& [label, j] : rows) {
    out << std::left << std::setw(static_cast<int>(first)) << label << std::right;
    const auto& per = j->at("per_landmark");
    for (const auto& name : schema_.landmarks) cell(per.contains(name) ? &per.at(name) : nullptr);
    cell(&j->at("avg"));
    out << "\n";
  }
  return out.str();
}

}  // namespace cspn
