// Tests src/core/metrics.cpp: LandmarkMetrics against values worked out by hand on a three-garment
// example.
#include <array>
#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cspn/core/metrics.hpp"
#include "cspn/core/schema.hpp"

namespace cspn {
namespace {

constexpr int V = 0, O = 1, A = 2;  // Visibility: visible, occluded, absent
constexpr double kTol = 1e-9;

// One garment as written by hand: per slot {gt x, gt y, pred x, pred y, visibility}.
struct Garment {
  int category;
  float width, height;
  std::array<float, 4> box;
  std::vector<std::array<float, 5>> slots;
};

struct Batch {
  torch::Tensor pred, gt, vis, category, image_size, boxes;
};

Batch make_batch(const std::vector<Garment>& garments) {
  std::vector<float> pred, gt, size, box;
  std::vector<int> vis;
  std::vector<int64_t> cat;
  for (const auto& g : garments) {
    for (const auto& s : g.slots) {
      gt.insert(gt.end(), {s[0], s[1]});
      pred.insert(pred.end(), {s[2], s[3]});
      vis.push_back(static_cast<int>(s[4]));
    }
    cat.push_back(g.category);
    size.insert(size.end(), {g.width, g.height});
    box.insert(box.end(), g.box.begin(), g.box.end());
  }
  const int64_t n = static_cast<int64_t>(garments.size());
  return {torch::tensor(pred).view({n, -1, 2}), torch::tensor(gt).view({n, -1, 2}),
          torch::tensor(vis).view({n, -1}),     torch::tensor(cat),
          torch::tensor(size).view({n, 2}),      torch::tensor(box).view({n, 4})};
}

void add(LandmarkMetrics& m, const Batch& b) { m.add(b.pred, b.gt, b.vis, b.category, b.image_size, b.boxes); }

// Slots: 0 left_collar, 1 right_collar, 2 left_sleeve, 3 right_sleeve, 4 left_waistline,
// 5 right_waistline, 6 left_hem, 7 right_hem.
std::vector<Garment> example() {
  return {
      // Upper, image 200x100, box 100x50. s_k = |sleeve L (20,50) - sleeve R (100,50)| = 80.
      {0, 200, 100, {10, 20, 110, 70},
       {{40, 30, 43, 34, V},      // d = 5
        {80, 30, 80, 30, V},      // d = 0
        {20, 50, 26, 58, V},      // d = 10
        {100, 50, 100, 50, V},    // d = 0
        {60, 60, 0, 0, V},        // not an upper slot: ignored although marked visible
        {0, 0, 0, 0, A},
        {30, 65, 190, 5, O},      // occluded: ignored
        {90, 65, 90, 75, V}}},    // d = 10, PCK error exactly 10/50 = 0.2: a miss
      // Lower, image 100x200, box 50x100. s_k = |waist L (20,40) - waist R (60,40)| = 40.
      {1, 100, 200, {0, 0, 50, 100},
       {{0, 0, 0, 0, A}, {0, 0, 0, 0, A}, {0, 0, 0, 0, A}, {0, 0, 0, 0, A},
        {20, 40, 23, 44, V},      // d = 5
        {60, 40, 60, 48, V},      // d = 8
        {20, 150, 20, 150, V},    // d = 0
        {60, 150, 66, 150, V}}},  // d = 6
      // Full, image 400x400, box 200x200. Left sleeve occluded: s_k undefined, so the garment is
      // left out of ne_paper but still counts in ne_image, PCK and EPE.
      {2, 400, 400, {0, 0, 200, 200},
       {{100, 100, 104, 103, V},  // d = 5
        {200, 100, 200, 100, V},  // d = 0
        {120, 180, 300, 300, O},  // occluded: ignored
        {250, 150, 250, 210, V},  // d = 60, PCK error 0.3: a miss
        {150, 250, 158, 256, V},  // d = 10
        {0, 0, 0, 0, A}, {0, 0, 0, 0, A}, {0, 0, 0, 0, A}}},
  };
}

double num(const nlohmann::json& j) { return j.get<double>(); }

TEST(LandmarkMetrics, HandComputedExample) {
  LandmarkMetrics m(LandmarkSchema::deepfashion());
  add(m, make_batch(example()));
  const auto r = m.result();

  // ne_paper: d / s_k over garments 0 (s = 80) and 1 (s = 40) only.
  const auto& paper = r.at("ne_paper");
  const auto& pl = paper.at("per_landmark");
  EXPECT_NEAR(num(pl.at("left_collar")), 5.0 / 80, kTol);
  EXPECT_NEAR(num(pl.at("right_collar")), 0.0, kTol);
  EXPECT_NEAR(num(pl.at("left_sleeve")), 10.0 / 80, kTol);
  EXPECT_NEAR(num(pl.at("right_sleeve")), 0.0, kTol);
  EXPECT_NEAR(num(pl.at("left_waistline")), 5.0 / 40, kTol);
  EXPECT_NEAR(num(pl.at("right_waistline")), 8.0 / 40, kTol);
  EXPECT_NEAR(num(pl.at("left_hem")), 0.0 / 40, kTol);  // garment 0's is occluded
  EXPECT_NEAR(num(pl.at("right_hem")), (10.0 / 80 + 6.0 / 40) / 2, kTol);
  const double paper_avg = (5.0 / 80 + 0 + 10.0 / 80 + 0 + 5.0 / 40 + 8.0 / 40 + 0 + (10.0 / 80 + 6.0 / 40) / 2) / 8;
  EXPECT_NEAR(num(paper.at("avg")), paper_avg, kTol);
  EXPECT_EQ(paper.at("undefined_norm").get<long>(), 1);

  const auto& pc = paper.at("per_category");
  // Upper: left_hem has no visible instance, so its avg is over the other 5 slots.
  EXPECT_TRUE(pc.at("upper").at("per_landmark").at("left_hem").is_null());
  EXPECT_NEAR(num(pc.at("upper").at("avg")), (5.0 / 80 + 0 + 10.0 / 80 + 0 + 10.0 / 80) / 5, kTol);
  EXPECT_FALSE(pc.at("upper").at("per_landmark").contains("left_waistline"));
  EXPECT_NEAR(num(pc.at("lower").at("avg")), (5.0 / 40 + 8.0 / 40 + 0 + 6.0 / 40) / 4, kTol);
  EXPECT_TRUE(pc.at("full").at("avg").is_null());
  for (const auto& [name, value] : pc.at("full").at("per_landmark").items()) EXPECT_TRUE(value.is_null()) << name;

  // ne_image: hypot(dx / image width, dy / image height), all three garments.
  const auto& image = r.at("ne_image");
  const auto& il = image.at("per_landmark");
  const double i_lcollar = (std::hypot(3.0 / 200, 4.0 / 100) + std::hypot(4.0 / 400, 3.0 / 400)) / 2;
  const double i_rcollar = 0.0;
  const double i_lsleeve = std::hypot(6.0 / 200, 8.0 / 100);
  const double i_rsleeve = (0.0 + 60.0 / 400) / 2;
  const double i_lwaist = (std::hypot(3.0 / 100, 4.0 / 200) + std::hypot(8.0 / 400, 6.0 / 400)) / 2;
  const double i_rwaist = 8.0 / 200;
  const double i_lhem = 0.0;
  const double i_rhem = (10.0 / 100 + 6.0 / 100) / 2;
  EXPECT_NEAR(num(il.at("left_collar")), i_lcollar, kTol);
  EXPECT_NEAR(num(il.at("right_collar")), i_rcollar, kTol);
  EXPECT_NEAR(num(il.at("left_sleeve")), i_lsleeve, kTol);
  EXPECT_NEAR(num(il.at("right_sleeve")), i_rsleeve, kTol);
  EXPECT_NEAR(num(il.at("left_waistline")), i_lwaist, kTol);
  EXPECT_NEAR(num(il.at("right_waistline")), i_rwaist, kTol);
  EXPECT_NEAR(num(il.at("left_hem")), i_lhem, kTol);
  EXPECT_NEAR(num(il.at("right_hem")), i_rhem, kTol);
  EXPECT_NEAR(num(image.at("avg")),
              (i_lcollar + i_rcollar + i_lsleeve + i_rsleeve + i_lwaist + i_rwaist + i_lhem + i_rhem) / 8, kTol);
  // Full-body row: garment 2 alone, slots 0, 1, 3, 4 visible.
  EXPECT_NEAR(num(image.at("per_category").at("full").at("avg")), (5.0 / 400 + 0 + 60.0 / 400 + 10.0 / 400) / 4,
              kTol);
  EXPECT_FALSE(image.contains("undefined_norm"));

  // 13 counted landmarks (5 + 4 + 4); misses: garment 0 right_hem (0.2) and garment 2 right_sleeve (0.3).
  EXPECT_EQ(r.at("visible_landmarks").get<long>(), 13);
  EXPECT_NEAR(num(r.at("pck_0_2")), 11.0 / 13, kTol);
  EXPECT_NEAR(num(r.at("epe_px")), ((5 + 0 + 10 + 0 + 10) + (5 + 8 + 0 + 6) + (5 + 0 + 60 + 10)) / 13.0, kTol);
  EXPECT_NEAR(num(r.at("within_5px")), (3.0 + 2 + 2) / 13, kTol) << "5 px counts as within";
  EXPECT_EQ(r.at("garments").get<long>(), 3);
}

TEST(LandmarkMetrics, AccumulatesAcrossBatches) {
  const auto garments = example();
  LandmarkMetrics once(LandmarkSchema::deepfashion()), split(LandmarkSchema::deepfashion());
  add(once, make_batch(garments));
  add(split, make_batch({garments[2]}));
  add(split, make_batch({garments[0], garments[1]}));
  const auto a = once.result(), b = split.result();
  EXPECT_EQ(b.at("garments").get<long>(), 3);
  EXPECT_NEAR(num(a.at("ne_paper").at("avg")), num(b.at("ne_paper").at("avg")), kTol);
  EXPECT_NEAR(num(a.at("ne_image").at("avg")), num(b.at("ne_image").at("avg")), kTol);
  EXPECT_NEAR(num(a.at("pck_0_2")), num(b.at("pck_0_2")), kTol);
  EXPECT_NEAR(num(a.at("epe_px")), num(b.at("epe_px")), kTol);
  EXPECT_EQ(a.at("ne_paper").at("undefined_norm"), b.at("ne_paper").at("undefined_norm"));
}

TEST(LandmarkMetrics, PckThresholdBoundaryPerAxis) {
  // Upper garment, box 100 wide and 50 tall, every ground truth at (50, 25).
  const float x = 50, y = 25;
  Garment g{0, 400, 400, {0, 0, 100, 50},
            {{x, y, x + 19.9f, y, V},       // 0.199 in x: hit
             {x, y, x + 20, y, V},          // exactly 0.2: miss (strictly below counts)
             {x, y, x, y + 9.9f, V},        // 0.198 in y: hit
             {x, y, x, y + 10, V},          // 10 px is 0.1 of the width but 0.2 of the height: miss
             {0, 0, 0, 0, A},
             {0, 0, 0, 0, A},
             {x, y, x + 12, y + 6, V},      // (0.12, 0.12): norm 0.170, hit
             {x, y, x + 15, y + 7.5f, V}}}; // (0.15, 0.15): both axes < 0.2 but norm 0.212, miss
  LandmarkMetrics m(LandmarkSchema::deepfashion());
  add(m, make_batch({g}));
  const auto r = m.result();
  EXPECT_NEAR(num(r.at("pck_0_2")), 3.0 / 6, kTol);
  // Both sleeves at the same point: s_k is zero, so undefined.
  EXPECT_EQ(r.at("ne_paper").at("undefined_norm").get<long>(), 1);
  EXPECT_TRUE(r.at("ne_paper").at("avg").is_null());
}

TEST(LandmarkMetrics, JsonKeysPresent) {
  LandmarkMetrics m(LandmarkSchema::deepfashion());
  add(m, make_batch(example()));
  const auto r = m.result();
  for (const char* proto : {"ne_paper", "ne_image"}) {
    ASSERT_TRUE(r.contains(proto)) << proto;
    EXPECT_TRUE(r.at(proto).contains("avg")) << proto;
    for (const auto& name : LandmarkSchema::deepfashion().landmarks)
      EXPECT_TRUE(r.at(proto).at("per_landmark").contains(name)) << proto << " " << name;
    for (const char* cat : {"upper", "lower", "full"})
      EXPECT_TRUE(r.at(proto).at("per_category").at(cat).contains("avg")) << proto << " " << cat;
  }
  EXPECT_TRUE(r.at("ne_paper").contains("undefined_norm"));
  for (const char* key : {"pck_0_2", "epe_px", "garments"}) EXPECT_TRUE(r.contains(key)) << key;
}

std::vector<std::string> tokens(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> out;
  for (std::string t; in >> t;) out.push_back(t);
  return out;
}

TEST(LandmarkMetrics, TableLayout) {
  LandmarkMetrics m(LandmarkSchema::deepfashion());
  add(m, make_batch(example()));
  std::istringstream text(m.table());
  std::vector<std::string> lines;
  for (std::string line; std::getline(text, line);) lines.push_back(line);
  ASSERT_EQ(lines.size(), 1u + 4 * 4);  // header + (all + 3 categories) per protocol, PCK@0.2 and AUC
  EXPECT_EQ(tokens(lines[0]), (std::vector<std::string>{"L.Collar", "R.Collar", "L.Sleeve", "R.Sleeve", "L.Waist",
                                                        "R.Waist", "L.Hem", "R.Hem", "Avg"}));
  const std::vector<std::string> labels = {"ne_paper all", "ne_paper upper", "ne_paper lower", "ne_paper full",
                                           "ne_image all", "ne_image upper", "ne_image lower", "ne_image full",
                                           "pck_0_2 all",  "pck_0_2 upper",  "pck_0_2 lower",  "pck_0_2 full",
                                           "auc all",      "auc upper",      "auc lower",      "auc full"};
  for (size_t i = 0; i < labels.size(); ++i) {
    EXPECT_EQ(lines[i + 1].rfind(labels[i], 0), 0u) << lines[i + 1];
    EXPECT_EQ(lines[i + 1].size(), lines[0].size()) << "fixed width: " << lines[i + 1];
  }
  // Upper row: 5/80, 0, 10/80, 0, no waistlines, left hem occluded, 10/80; avg 0.3125 / 5.
  EXPECT_EQ(tokens(lines[2]), (std::vector<std::string>{"ne_paper", "upper", "0.0625", "0.0000", "0.1250", "0.0000",
                                                        "-", "-", "-", "0.1250", "0.0625"}));
  EXPECT_EQ(tokens(lines[4]), (std::vector<std::string>{"ne_paper", "full", "-", "-", "-", "-", "-", "-", "-", "-",
                                                        "-"}));
  // Lower garment: every landmark within 0.2 of its box; right hem 8 / 100 (see the next test).
  EXPECT_EQ(tokens(lines[11]), (std::vector<std::string>{"pck_0_2", "lower", "-", "-", "-", "-", "1.0000", "1.0000",
                                                         "1.0000", "1.0000", "1.0000"}));
  EXPECT_EQ(tokens(lines[15]), (std::vector<std::string>{"auc", "lower", "-", "-", "-", "-", "0.8500", "0.8000",
                                                         "0.9500", "0.7500", "0.8375"}));
}

TEST(LandmarkMetrics, CategoriesWithoutGarmentsGetNoRows) {
  LandmarkMetrics m(LandmarkSchema::deepfashion());
  auto upper_and_lower = example();
  upper_and_lower.pop_back();  // no full-body garment
  add(m, make_batch(upper_and_lower));
  const std::string table = m.table();
  EXPECT_EQ(table.find("full"), std::string::npos) << table;
  for (const char* row : {"ne_paper all", "ne_image upper", "pck_0_2 lower", "auc all"})
    EXPECT_NE(table.find(row), std::string::npos) << row << "\n" << table;
}

TEST(LandmarkMetrics, AccuracyPerLandmarkAndCategory) {
  LandmarkMetrics m(LandmarkSchema::deepfashion());
  add(m, make_batch(example()));
  const auto acc = m.result().at("accuracy");
  // PCK errors (per axis in box units): the AUC counts the thresholds 0, 0.025, .., 0.475 above each.
  // right_collar: 0 twice (19 of 20 thresholds each).
  const auto& rc = acc.at("per_landmark").at("right_collar");
  EXPECT_NEAR(num(rc.at("auc")), 19.0 / 20, kTol);
  EXPECT_NEAR(num(rc.at("pck_0_2")), 1.0, kTol);
  // right_hem: 0.2 (garment 0: 11 thresholds, a miss at 0.2) and 0.12 (garment 1: 15, a hit).
  const auto& rh = acc.at("per_landmark").at("right_hem");
  EXPECT_NEAR(num(rh.at("auc")), (11.0 + 15.0) / 2 / 20, kTol);
  EXPECT_NEAR(num(rh.at("pck_0_2")), 0.5, kTol);
  EXPECT_NEAR(num(rh.at("epe_px")), (10.0 + 6.0) / 2, kTol);
  // Lower: errors 0.072, 0.08, 0, 0.12 -> 17, 16, 19, 15 thresholds.
  const auto& lower = acc.at("per_category").at("lower");
  EXPECT_NEAR(num(lower.at("auc")), (17.0 + 16 + 19 + 15) / 4 / 20, kTol);
  EXPECT_NEAR(num(lower.at("pck_0_2")), 1.0, kTol);
  EXPECT_NEAR(num(lower.at("epe_px")), (5.0 + 8 + 0 + 6) / 4, kTol);
  EXPECT_NEAR(num(lower.at("within_5px")), 2.0 / 4, kTol);
  EXPECT_NEAR(num(lower.at("per_landmark").at("right_waistline").at("auc")), 16.0 / 20, kTol);
  EXPECT_FALSE(lower.at("per_landmark").contains("left_collar"));
  EXPECT_TRUE(acc.at("per_category").at("upper").at("per_landmark").at("left_hem").at("auc").is_null());
}

TEST(LandmarkMetrics, CategoriesWithTheirOwnSlotsGetABlockEach) {
  const LandmarkSchema schema = LandmarkSchema::load("deepfashion2");
  LandmarkMetrics m(schema);
  const int k = schema.num_landmarks(), skirt = schema.category_index("skirt");
  // One skirt: its 8 landmarks 3 px off in x, box 100 x 100.
  auto gt = torch::zeros({1, k, 2}), vis = torch::full({1, k}, static_cast<int>(Visibility::Absent), torch::kInt);
  for (int i = 0; i < 8; ++i) {
    const int slot = schema.categories[skirt].landmarks[i];
    gt[0][slot][0] = 10.0f * i + 10;
    gt[0][slot][1] = 50;
    vis[0][slot] = static_cast<int>(Visibility::Visible);
  }
  auto pred = gt.clone();
  pred.select(2, 0) += 3;
  m.add(pred, gt, vis, torch::tensor({static_cast<int64_t>(skirt)}), torch::tensor({{200, 200}}),
        torch::tensor({{0.0f, 0.0f, 100.0f, 100.0f}}));
  const std::string table = m.table();
  std::istringstream text(table);
  std::vector<std::string> headers;
  for (std::string line; std::getline(text, line);)
    if (!line.empty() && line[0] == ' ') headers.push_back(line);
  ASSERT_EQ(headers.size(), 1u) << "the skirt's block alone: the other 12 categories have no garment\n" << table;
  EXPECT_EQ(tokens(headers[0]), (std::vector<std::string>{"1", "2", "3", "4", "5", "6", "7", "8", "Avg"}));
  EXPECT_NE(table.find("auc skirt"), std::string::npos) << table;
  EXPECT_EQ(table.find("trousers"), std::string::npos) << table;
  // 3 px in a 100 px box: 0.03 -> hits at 0.05 .. 0.475, 18 of 20 thresholds.
  EXPECT_NEAR(num(m.result().at("auc")), 18.0 / 20, kTol);
  EXPECT_NEAR(num(m.result().at("ne_image").at("avg")), 3.0 / 200, 1e-7);
}

TEST(LandmarkMetrics, EmptyHasNullValues) {
  LandmarkMetrics m(LandmarkSchema::deepfashion());
  const auto r = m.result();
  EXPECT_TRUE(r.at("ne_paper").at("avg").is_null());
  EXPECT_TRUE(r.at("pck_0_2").is_null());
  EXPECT_EQ(r.at("garments").get<long>(), 0);
  EXPECT_NE(m.table().find("-"), std::string::npos);
}

TEST(LandmarkMetrics, RejectsBadInputs) {
  LandmarkMetrics m(LandmarkSchema::deepfashion());
  const auto b = make_batch(example());
  EXPECT_THROW(m.add(b.pred.narrow(1, 0, 6), b.gt, b.vis, b.category, b.image_size, b.boxes), std::invalid_argument);
  EXPECT_THROW(m.add(b.pred, b.gt, b.vis.to(torch::kFloat32), b.category, b.image_size, b.boxes),
               std::invalid_argument);
  EXPECT_THROW(m.add(b.pred, b.gt, b.vis, torch::tensor({0, 1, 3}), b.image_size, b.boxes), std::invalid_argument);
  EXPECT_THROW(m.add(b.pred, b.gt, b.vis, b.category, b.image_size, torch::zeros({3, 4})), std::invalid_argument);
  EXPECT_THROW(m.add(b.pred, b.gt, b.vis, b.category, b.image_size.narrow(0, 0, 2), b.boxes), std::invalid_argument);
  EXPECT_EQ(m.result().at("garments").get<long>(), 0) << "a rejected batch must not be counted";
}

TEST(LandmarkMetrics, CudaMatchesCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device in this build/machine";
  const auto b = make_batch(example());
  LandmarkMetrics cpu(LandmarkSchema::deepfashion()), gpu(LandmarkSchema::deepfashion());
  add(cpu, b);
  gpu.add(b.pred.cuda(), b.gt.cuda(), b.vis.cuda(), b.category.cuda(), b.image_size.cuda(), b.boxes.cuda());
  EXPECT_EQ(cpu.table(), gpu.table());
  EXPECT_NEAR(num(cpu.result().at("epe_px")), num(gpu.result().at("epe_px")), kTol);
}

}  // namespace
}  // namespace cspn

namespace cspn {
namespace {

// ne_image_lengths divides each axis by the image's width or height, then takes the length.
TEST(FlipUncertainty, OffsetsInNeImageUnits) {
  const auto offsets = torch::tensor({3.0f, 4.0f, 0.0f, 0.0f, -10.0f, 0.0f}).view({1, 3, 2});
  const auto lengths = ne_image_lengths(offsets, torch::tensor({{100, 50}}));
  EXPECT_NEAR(lengths[0][0].item<double>(), std::sqrt(0.03 * 0.03 + 0.08 * 0.08), kTol);
  EXPECT_NEAR(lengths[0][1].item<double>(), 0.0, kTol);
  EXPECT_NEAR(lengths[0][2].item<double>(), 0.1, kTol);
  EXPECT_THROW(ne_image_lengths(offsets, torch::tensor({{100, 50}, {1, 1}})), std::invalid_argument);
}

// 0 where the passes agree; the mean over the category's landmarks only; larger offsets, larger values.
TEST(FlipUncertainty, ZeroWhenThePassesAgreeAndGrowingWithTheirGap) {
  auto offsets = torch::zeros({4, 2});
  EXPECT_EQ(flip_uncertainty(offsets, {0, 1, 2, 3}, 200, 100), 0.0);
  offsets[3][0] = 50.0f;  // outside the category below: not counted
  EXPECT_EQ(flip_uncertainty(offsets, {0, 1}, 200, 100), 0.0);
  double last = 0;
  for (float gap : {1.0f, 2.0f, 8.0f}) {
    offsets[1][1] = gap;
    const double u = flip_uncertainty(offsets, {0, 1}, 200, 100);
    EXPECT_NEAR(u, 0.5 * gap / 100.0, kTol);
    EXPECT_GT(u, last);
    last = u;
  }
  EXPECT_EQ(flip_uncertainty(offsets, {}, 200, 100), 0.0);
}

}  // namespace
}  // namespace cspn
