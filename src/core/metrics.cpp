#include "cspn/core/metrics.hpp"
#include "cspn/core/util.hpp"

#include <algorithm>
#include <iomanip>
#include <map>
#include <sstream>
#include <stdexcept>

#include <torch/torch.h>

namespace cspn {
namespace {

// PCK thresholds 0, 0.025, .., 0.5 of the box: index 8 is PCK@0.2; the AUC is the mean over
// the first 20 (the area under PCK(t) for t in [0, 0.5), as mmpose sums it, scaled to [0, 1]).
constexpr int kThresholds = 21, kPck02 = 8;
constexpr double kThresholdStep = 0.025;
enum Protocol { kPaper = 0, kImage = 1, kNumProtocols = 2 };
const char* const kProtocolNames[kNumProtocols] = {"ne_paper", "ne_image"};

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

}  // namespace

torch::Tensor ne_image_lengths(const torch::Tensor& offsets, const torch::Tensor& image_size) {
  if (offsets.dim() != 3 || offsets.size(2) != 2 || image_size.dim() != 2 || image_size.size(0) != offsets.size(0) ||
      image_size.size(1) != 2)
    throw std::invalid_argument("ne_image_lengths: offsets should be [N,K,2] and image_size [N,2], got " +
                                shape_of(offsets) + " and " + shape_of(image_size));
  return (offsets.to(torch::kFloat64) / image_size.to(offsets.device(), torch::kFloat64).unsqueeze(1))
      .square()
      .sum(2)
      .sqrt();
}

double flip_uncertainty(const torch::Tensor& offsets, const std::vector<int>& landmarks, int width, int height) {
  if (landmarks.empty()) return 0.0;
  const auto lengths = ne_image_lengths(offsets.unsqueeze(0), torch::tensor({{width, height}})).squeeze(0);
  return lengths.index_select(0, torch::tensor(std::vector<int64_t>(landmarks.begin(), landmarks.end())))
      .mean()
      .item<double>();
}

LandmarkMetrics::LandmarkMetrics(LandmarkSchema schema)
    : schema_(std::move(schema)),
      ne_(kNumProtocols, std::vector<std::vector<Sum>>(schema_.num_categories() + 1,
                                                       std::vector<Sum>(schema_.num_landmarks()))),
      pck_(schema_.num_categories() + 1, std::vector<PckSum>(schema_.num_landmarks())) {
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
      ne_image_lengths(diff, size)};
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

  // PCK: the error per axis in units of the ground-truth box's width and height, at each threshold.
  auto pck_err = (diff / box_wh.unsqueeze(1)).square().sum(2).sqrt();         // [N,K]
  auto thresholds = torch::arange(kThresholds, f64) * kThresholdStep;          // [T]
  auto hits = (pck_err.unsqueeze(2) < thresholds) & counted.unsqueeze(2);      // [N,K,T]
  auto hit_sums = torch::zeros({c, k, kThresholds}, f64).index_add_(0, cat, hits.to(torch::kFloat64)).cpu();
  auto epe_sums = torch::zeros({c, k}, f64).index_add_(0, cat, torch::where(counted, dist, torch::zeros_like(dist))).cpu();
  auto count_sums = torch::zeros({c, k}, f64).index_add_(0, cat, counted.to(torch::kFloat64)).cpu();
  auto near_sums = torch::zeros({c, k}, f64).index_add_(0, cat, (counted & (dist <= 5)).to(torch::kFloat64)).cpu();
  auto ha = hit_sums.accessor<double, 3>();
  auto ea = epe_sums.accessor<double, 2>();
  auto na = count_sums.accessor<double, 2>();
  auto wa = near_sums.accessor<double, 2>();
  for (int64_t ci = 0; ci < c; ++ci)
    for (int64_t ki = 0; ki < k; ++ki)
      for (PckSum* sum : {&pck_[0][ki], &pck_[ci + 1][ki]}) {
        for (int t = 0; t < kThresholds; ++t) sum->hits[t] += static_cast<long>(ha[ci][ki][t]);
        sum->epe += ea[ci][ki];
        sum->count += static_cast<long>(na[ci][ki]);
        sum->within_5px += static_cast<long>(wa[ci][ki]);
      }
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
  // PCK@0.2, EPE, AUC and the share within 5 px of a set of slots of one row of pck_, pooled over their landmarks.
  auto accuracy = [&](const std::vector<PckSum>& sums, const std::vector<int>& slots) {
    PckSum pooled;
    for (int slot : slots) {
      for (int t = 0; t < kThresholds; ++t) pooled.hits[t] += sums[slot].hits[t];
      pooled.epe += sums[slot].epe;
      pooled.count += sums[slot].count;
      pooled.within_5px += sums[slot].within_5px;
    }
    if (pooled.count == 0)
      return nlohmann::json{{"pck_0_2", nullptr}, {"epe_px", nullptr}, {"auc", nullptr}, {"within_5px", nullptr}};
    const double n = static_cast<double>(pooled.count);
    double auc = 0;
    for (int t = 0; t + 1 < kThresholds; ++t) auc += pooled.hits[t] / n;
    return nlohmann::json{{"pck_0_2", pooled.hits[kPck02] / n}, {"epe_px", pooled.epe / n}, {"auc", auc / (kThresholds - 1)},
                          {"within_5px", pooled.within_5px / n}};
  };
  const auto with_landmarks = [&](const std::vector<PckSum>& sums, const std::vector<int>& slots) {
    auto j = accuracy(sums, slots);
    j["per_landmark"] = nlohmann::json::object();
    for (int slot : slots) j["per_landmark"][schema_.landmarks[slot]] = accuracy(sums, {slot});
    return j;
  };
  const auto overall = with_landmarks(pck_[0], all_slots);
  for (const char* key : {"pck_0_2", "epe_px", "auc", "within_5px"}) out[key] = overall[key];
  nlohmann::json accuracy_json{{"per_landmark", overall["per_landmark"]}, {"per_category", nlohmann::json::object()}};
  for (int ci = 0; ci < schema_.num_categories(); ++ci)
    accuracy_json["per_category"][schema_.categories[ci].name] = with_landmarks(pck_[ci + 1], schema_.categories[ci].landmarks);
  out["accuracy"] = accuracy_json;
  long visible = 0;
  for (const auto& s : pck_[0]) visible += s.count;
  out["visible_landmarks"] = visible;
  out["schema"] = schema_.name;
  out["landmarks"] = schema_.landmarks;  // slot order, with their table headings
  out["labels"] = schema_.labels;
  out["garments"] = garments_;
  return out;
}

std::string LandmarkMetrics::table() const {
  const auto r = result();
  struct Row {
    std::string label;
    const nlohmann::json* per_landmark;  // name -> value, or name -> {key: value} with `key`
    const nlohmann::json* avg;
    const char* key;
  };
  // One block: the given slots as columns, the rows of every protocol and accuracy measure for the
  // given categories ("all" = -1).
  std::ostringstream out;
  const auto block = [&](const std::vector<int>& slots, const std::vector<int>& categories) {
    std::vector<std::string> labels;
    for (int slot : slots) labels.push_back(schema_.labels[slot]);
    labels.push_back("Avg");
    std::vector<Row> rows;
    for (const char* proto : kProtocolNames)
      for (int ci : categories) {
        const auto& j = ci < 0 ? r.at(proto) : r.at(proto).at("per_category").at(schema_.categories[ci].name);
        rows.push_back({std::string(proto) + " " + (ci < 0 ? "all" : schema_.categories[ci].name), &j.at("per_landmark"),
                        &j.at("avg"), nullptr});
      }
    for (const char* key : {"pck_0_2", "auc"})
      for (int ci : categories) {
        const auto& acc = r.at("accuracy");
        const auto& j = ci < 0 ? r : acc.at("per_category").at(schema_.categories[ci].name);
        const auto& per = ci < 0 ? acc.at("per_landmark") : j.at("per_landmark");
        rows.push_back({std::string(key) + " " + (ci < 0 ? "all" : schema_.categories[ci].name), &per, &j.at(key), key});
      }
    size_t col = std::string("0.0000").size();
    for (const auto& l : labels) col = std::max(col, l.size());
    col += 2;
    size_t first = 0;
    for (const auto& row : rows) first = std::max(first, row.label.size());
    first += 2;
    out << std::left << std::setw(static_cast<int>(first)) << "" << std::right;
    for (const auto& l : labels) out << std::setw(static_cast<int>(col)) << l;
    out << "\n" << std::fixed << std::setprecision(4);
    const auto cell = [&](const nlohmann::json* value) {
      out << std::setw(static_cast<int>(col));
      if (value && value->is_number()) out << value->get<double>();
      else out << "-";
    };
    for (const auto& row : rows) {
      out << std::left << std::setw(static_cast<int>(first)) << row.label << std::right;
      for (int slot : slots) {
        const auto& name = schema_.landmarks[slot];
        const nlohmann::json* v = row.per_landmark->contains(name) ? &row.per_landmark->at(name) : nullptr;
        cell(v && row.key ? &v->at(row.key) : v);
      }
      cell(row.avg);
      out << "\n";
    }
  };
  // Categories without a counted landmark get no rows (every category while nothing is counted).
  std::vector<int> present;
  for (int ci = 0; ci < schema_.num_categories(); ++ci) {
    long counted = 0;
    for (const PckSum& sum : pck_[ci + 1]) counted += sum.count;
    if (counted > 0) present.push_back(ci);
  }
  if (present.empty())
    for (int ci = 0; ci < schema_.num_categories(); ++ci) present.push_back(ci);
  // Categories with slots of their own (DeepFashion2): one block each, over its landmarks.
  std::vector<int> owner(schema_.num_landmarks(), -1);
  bool shared = false;
  for (int ci = 0; ci < schema_.num_categories(); ++ci)
    for (int slot : schema_.categories[ci].landmarks) shared = shared || owner[slot] >= 0, owner[slot] = ci;
  if (shared || schema_.num_categories() == 1) {
    std::vector<int> slots(schema_.num_landmarks()), categories{-1};
    for (int i = 0; i < schema_.num_landmarks(); ++i) slots[i] = i;
    categories.insert(categories.end(), present.begin(), present.end());
    block(slots, categories);
  } else {
    for (int ci : present) {
      if (ci != present.front()) out << "\n";
      block(schema_.categories[ci].landmarks, {ci});
    }
  }
  return out.str();
}

}  // namespace cspn
