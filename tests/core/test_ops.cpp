// Tests src/core/detect/ops.cpp: NMS, RoIAlign and RoIPool against naive loop implementations of
// torchvision's kernels and against torchvision.ops itself (scripts/torchvision_ops_reference.py),
// plus input checks, finite-difference gradients and the same results on CUDA.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cspn/core/detect/ops.hpp"
#include "common.hpp"
#include "cuda.hpp"
#include "tensor_exchange.hpp"

namespace {

using cspn::detect::batched_nms;
using cspn::detect::box_iou;
using cspn::detect::nms;
using cspn::detect::roi_align;
using cspn::detect::roi_pool;
using cspn::test::max_diff;

// ---- naive references (plain loops over CPU doubles/floats, written from torchvision's kernels)

double naive_iou(const double* a, const double* b) {
  const double w = std::max(0.0, std::min(a[2], b[2]) - std::max(a[0], b[0]));
  const double h = std::max(0.0, std::min(a[3], b[3]) - std::max(a[1], b[1]));
  const double inter = w * h;
  return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter);
}

std::vector<int64_t> naive_nms(const torch::Tensor& boxes_t, const torch::Tensor& scores_t,
                               double thr) {
  const auto boxes = boxes_t.to(torch::kDouble).contiguous();
  const auto scores = scores_t.to(torch::kDouble).contiguous();
  const double* b = boxes.data_ptr<double>();
  const double* s = scores.data_ptr<double>();
  std::vector<int64_t> order(boxes.size(0));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t i, int64_t j) { return s[i] > s[j]; });
  std::vector<int64_t> keep;
  for (int64_t i : order) {
    bool ok = true;
    for (int64_t k : keep) ok = ok && naive_iou(b + 4 * i, b + 4 * k) <= thr;
    if (ok) keep.push_back(i);
  }
  return keep;
}

std::vector<int64_t> to_vector(const torch::Tensor& t) {
  const auto c = t.to(torch::kCPU, torch::kLong).contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

// torchvision's roi_align_forward_kernel_impl + bilinear_interpolate, one sample at a time.
torch::Tensor naive_roi_align(const torch::Tensor& input_t, const torch::Tensor& rois_t, int PH,
                              int PW, double scale, int S, bool aligned) {
  const auto input = input_t.to(torch::kDouble).contiguous();
  const auto rois = rois_t.to(torch::kDouble).contiguous();
  const int64_t C = input.size(1), H = input.size(2), W = input.size(3), R = rois.size(0);
  auto out = torch::zeros({R, C, PH, PW}, torch::kDouble);
  auto in = input.accessor<double, 4>();
  auto ro = rois.accessor<double, 2>();
  auto o = out.accessor<double, 4>();
  for (int64_t r = 0; r < R; ++r) {
    const auto b = static_cast<int64_t>(ro[r][0]);
    const double off = aligned ? 0.5 : 0.0;
    const double x1 = ro[r][1] * scale - off, y1 = ro[r][2] * scale - off;
    double rw = ro[r][3] * scale - off - x1, rh = ro[r][4] * scale - off - y1;
    if (!aligned) rw = std::max(rw, 1.0), rh = std::max(rh, 1.0);
    const double bh = rh / PH, bw = rw / PW;
    for (int64_t c = 0; c < C; ++c)
      for (int ph = 0; ph < PH; ++ph)
        for (int pw = 0; pw < PW; ++pw) {
          double sum = 0;
          for (int iy = 0; iy < S; ++iy)
            for (int ix = 0; ix < S; ++ix) {
              double y = y1 + ph * bh + (iy + 0.5) * bh / S;
              double x = x1 + pw * bw + (ix + 0.5) * bw / S;
              if (y < -1.0 || y > H || x < -1.0 || x > W) continue;
              y = std::max(y, 0.0), x = std::max(x, 0.0);
              int64_t yl = static_cast<int64_t>(y), xl = static_cast<int64_t>(x), yh, xh;
              if (yl >= H - 1) yh = yl = H - 1, y = static_cast<double>(yl);
              else yh = yl + 1;
              if (xl >= W - 1) xh = xl = W - 1, x = static_cast<double>(xl);
              else xh = xl + 1;
              const double ly = y - yl, lx = x - xl, hy = 1 - ly, hx = 1 - lx;
              sum += hy * hx * in[b][c][yl][xl] + hy * lx * in[b][c][yl][xh] +
                     ly * hx * in[b][c][yh][xl] + ly * lx * in[b][c][yh][xh];
            }
          o[r][c][ph][pw] = sum / (S * S);
        }
  }
  return out;
}

// torchvision's roi_pool_forward_kernel_impl / backward in float, the kernel's own arithmetic.
// Returns the output and the input gradient for upstream gradient grad_out.
std::pair<torch::Tensor, torch::Tensor> naive_roi_pool(const torch::Tensor& input_t,
                                                       const torch::Tensor& rois_t, int PH, int PW,
                                                       float scale, const torch::Tensor& grad_out_t) {
  const auto input = input_t.to(torch::kFloat).contiguous();
  const auto rois = rois_t.to(torch::kFloat).contiguous();
  const auto grad_out = grad_out_t.to(torch::kFloat).contiguous();
  const int64_t C = input.size(1), H = input.size(2), W = input.size(3), R = rois.size(0);
  auto out = torch::zeros({R, C, PH, PW});
  auto grad = torch::zeros_like(input);
  auto in = input.accessor<float, 4>();
  auto ro = rois.accessor<float, 2>();
  auto go = grad_out.accessor<float, 4>();
  auto o = out.accessor<float, 4>();
  auto g = grad.accessor<float, 4>();
  for (int64_t r = 0; r < R; ++r) {
    const auto b = static_cast<int64_t>(ro[r][0]);
    const int sw = static_cast<int>(std::round(ro[r][1] * scale));
    const int sh = static_cast<int>(std::round(ro[r][2] * scale));
    const int ew = static_cast<int>(std::round(ro[r][3] * scale));
    const int eh = static_cast<int>(std::round(ro[r][4] * scale));
    const int rw = std::max(ew - sw + 1, 1), rh = std::max(eh - sh + 1, 1);
    const float bh = static_cast<float>(rh) / static_cast<float>(PH);
    const float bw = static_cast<float>(rw) / static_cast<float>(PW);
    for (int ph = 0; ph < PH; ++ph)
      for (int pw = 0; pw < PW; ++pw) {
        int h0 = static_cast<int>(std::floor(static_cast<float>(ph) * bh));
        int w0 = static_cast<int>(std::floor(static_cast<float>(pw) * bw));
        int h1 = static_cast<int>(std::ceil(static_cast<float>(ph + 1) * bh));
        int w1 = static_cast<int>(std::ceil(static_cast<float>(pw + 1) * bw));
        h0 = std::min(std::max(h0 + sh, 0), static_cast<int>(H));
        h1 = std::min(std::max(h1 + sh, 0), static_cast<int>(H));
        w0 = std::min(std::max(w0 + sw, 0), static_cast<int>(W));
        w1 = std::min(std::max(w1 + sw, 0), static_cast<int>(W));
        const bool empty = h1 <= h0 || w1 <= w0;
        for (int64_t c = 0; c < C; ++c) {
          float best = empty ? 0 : -FLT_MAX;
          int by = -1, bx = -1;
          for (int y = h0; y < h1; ++y)
            for (int x = w0; x < w1; ++x)
              if (in[b][c][y][x] > best) best = in[b][c][y][x], by = y, bx = x;
          o[r][c][ph][pw] = best;
          if (by >= 0) g[b][c][by][bx] += go[r][c][ph][pw];
        }
      }
  }
  return {out, grad};
}

// ---- random inputs

// [N,4] boxes with corners in [0, extent), widths and heights in [1, max_side).
torch::Tensor random_boxes(int64_t n, double extent, double max_side, torch::ScalarType dtype) {
  const auto xy = torch::rand({n, 2}, dtype) * extent;
  const auto wh = torch::rand({n, 2}, dtype) * (max_side - 1) + 1;
  return torch::cat({xy, xy + wh}, 1);
}

// [R,5] rois over a B-image batch whose maps are H x W cells of 1/scale pixels; some reach
// outside the map (and past -1 / H, where samples are zero) and a few are flipped (x2 < x1).
torch::Tensor random_rois(int64_t R, int64_t B, int64_t H, int64_t W, double scale,
                          torch::ScalarType dtype) {
  const double ext_x = W / scale, ext_y = H / scale;
  const auto x = std::get<0>(torch::sort(torch::rand({R, 2}, dtype) * (1.5 * ext_x) - 0.25 * ext_x, 1));
  const auto y = std::get<0>(torch::sort(torch::rand({R, 2}, dtype) * (1.5 * ext_y) - 0.25 * ext_y, 1));
  auto rois = torch::stack({torch::randint(0, B, {R}, dtype), x.select(1, 0), y.select(1, 0),
                            x.select(1, 1), y.select(1, 1)},
                           1);
  // Flip the corners of every 7th roi.
  const auto flipped = torch::arange(R) % 7 == 3;
  rois.index_put_({flipped}, rois.index({flipped}).index_select(1, torch::tensor({0, 3, 4, 1, 2})));
  return rois;
}

void expect_close(const torch::Tensor& actual, const torch::Tensor& expected, double atol,
                  const std::string& what) {
  ASSERT_EQ(actual.sizes(), expected.sizes()) << what;
  const auto diff = (actual.to(torch::kDouble).cpu() - expected.to(torch::kDouble).cpu()).abs();
  EXPECT_LE(diff.max().item<double>(), atol) << what << ": largest difference";
}

// ---- box_iou and NMS

TEST(DetectOps, BoxIouHandComputed) {
  const auto a = torch::tensor({{0.f, 0.f, 2.f, 2.f}, {1.f, 1.f, 3.f, 2.f}});
  const auto b = torch::tensor({{1.f, 1.f, 3.f, 3.f}, {5.f, 5.f, 6.f, 6.f}});
  const auto iou = box_iou(a, b);
  ASSERT_EQ(iou.sizes(), (std::vector<int64_t>{2, 2}));
  EXPECT_NEAR(iou[0][0].item<float>(), 1.f / 7.f, 1e-7);  // inter 1, union 4 + 4 - 1
  EXPECT_EQ(iou[0][1].item<float>(), 0.f);
  EXPECT_NEAR(iou[1][0].item<float>(), 0.5f, 1e-7);       // inter 2, union 2 + 4 - 2
}

TEST(DetectOps, NmsMatchesNaiveLoop) {
  for (auto dtype : {torch::kFloat, torch::kDouble}) {
    for (double thr : {0.3, 0.5, 0.7}) {
      const auto boxes = random_boxes(300, 100, 40, dtype);
      // Quantised scores give many ties: both keep the earlier box first.
      const auto scores = (torch::rand({300}, dtype) * 20).floor();
      const auto keep = nms(boxes, scores, thr);
      EXPECT_EQ(keep.scalar_type(), torch::kLong);
      EXPECT_EQ(to_vector(keep), naive_nms(boxes, scores, thr)) << "thr " << thr;
    }
  }
  EXPECT_EQ(nms(torch::zeros({0, 4}), torch::zeros({0}), 0.5).numel(), 0);
}

TEST(DetectOps, BatchedNmsKeepsGroupsApart) {
  const auto boxes = random_boxes(200, 60, 30, torch::kFloat);
  const auto scores = torch::rand({200});
  const auto idxs = torch::randint(0, 4, {200}, torch::kLong);
  // Reference: NMS per group, merged by decreasing score.
  std::vector<int64_t> expected;
  for (int64_t g = 0; g < 4; ++g) {
    const auto members = (idxs == g).nonzero().select(1, 0);
    for (int64_t k : naive_nms(boxes.index_select(0, members), scores.index_select(0, members), 0.5))
      expected.push_back(members[k].item<int64_t>());
  }
  const auto s = scores.accessor<float, 1>();
  std::stable_sort(expected.begin(), expected.end(), [&](int64_t a, int64_t b) { return s[a] > s[b]; });
  EXPECT_EQ(to_vector(batched_nms(boxes, scores, idxs, 0.5)), expected);
}

TEST(DetectOps, InputChecksSayWhatCame) {
  const auto x = torch::zeros({1, 2, 4, 4});
  try {
    roi_align(x, torch::zeros({3, 4}), {2, 2}, 1.0, 2, false);
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("rois should be [R,5]"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[3, 4]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(roi_align(torch::zeros({2, 4, 4}), torch::zeros({1, 5}), {2, 2}, 1.0, 2, false),
               std::invalid_argument);
  EXPECT_THROW(roi_align(x, torch::zeros({1, 5}), {2, 2}, 1.0, 0, false), std::invalid_argument);
  EXPECT_THROW(roi_pool(x, torch::tensor({{1.f, 0.f, 0.f, 2.f, 2.f}}), {2, 2}, 1.0),
               std::invalid_argument);  // batch index 1 of a 1-image batch
  EXPECT_THROW(nms(torch::zeros({3, 4}), torch::zeros({2}), 0.5), std::invalid_argument);
  EXPECT_THROW(box_iou(torch::zeros({3, 5}), torch::zeros({2, 4})), std::invalid_argument);
}

// ---- RoIAlign

TEST(DetectOps, RoiAlignMatchesNaiveLoop) {
  struct Case { int ph, pw, s; double scale; bool aligned; };
  for (const Case& c : {Case{7, 7, 2, 1.0 / 16, false}, Case{3, 5, 1, 0.5, true},
                        Case{4, 4, 3, 0.25, false}, Case{2, 3, 2, 1.0, true}}) {
    const int64_t B = 2, C = 3, H = 9, W = 11;
    const auto x = torch::randn({B, C, H, W}, torch::kDouble);
    const auto rois = random_rois(40, B, H, W, c.scale, torch::kDouble);
    const auto out = roi_align(x, rois, {c.ph, c.pw}, c.scale, c.s, c.aligned);
    expect_close(out, naive_roi_align(x, rois, c.ph, c.pw, c.scale, c.s, c.aligned), 1e-12,
                 "roi_align double, aligned " + std::to_string(c.aligned));
    const auto out_f = roi_align(x.to(torch::kFloat), rois.to(torch::kFloat), {c.ph, c.pw},
                                 c.scale, c.s, c.aligned);
    EXPECT_EQ(out_f.scalar_type(), torch::kFloat);
    expect_close(out_f, out, 1e-5, "roi_align float");
  }
  EXPECT_EQ(roi_align(torch::zeros({1, 4, 5, 5}), torch::zeros({0, 5}), {2, 3}, 1.0, 2, false)
                .sizes(),
            (std::vector<int64_t>{0, 4, 2, 3}));
}

TEST(DetectOps, RoiAlignGradientMatchesFiniteDifferences) {
  const auto x = torch::randn({2, 2, 5, 6}, torch::kDouble).requires_grad_(true);
  const auto rois = torch::tensor({{0.0, 0.3, 0.7, 4.1, 3.9},   // inside
                                   {1.0, -1.6, 2.2, 3.0, 6.5},  // over the top-left edge
                                   {1.0, 3.5, -0.8, 7.5, 5.2},  // over the right/bottom edges
                                   {0.0, 2.0, 2.0, 2.3, 2.2}},  // smaller than a cell
                                  torch::kDouble);
  const auto weight = torch::randn({4, 2, 2, 3}, torch::kDouble);
  const auto f = [&](const torch::Tensor& in) {
    return (roi_align(in, rois, {2, 3}, 1.0, 2, false) * weight).sum();
  };
  f(x).backward();
  const auto analytic = x.grad().clone();
  auto numeric = torch::zeros_like(analytic);
  auto flat = x.detach().clone();
  const double eps = 1e-6;
  for (int64_t i = 0; i < flat.numel(); ++i) {
    const double v = flat.view(-1)[i].item<double>();
    flat.view(-1)[i] = v + eps;
    const double up = f(flat).item<double>();
    flat.view(-1)[i] = v - eps;
    const double down = f(flat).item<double>();
    flat.view(-1)[i] = v;
    numeric.view(-1)[i] = (up - down) / (2 * eps);
  }
  expect_close(analytic, numeric, 1e-7, "roi_align input gradient");
  EXPECT_GT(analytic.abs().sum().item<double>(), 0.0);
}

// ---- RoIPool

TEST(DetectOps, RoiPoolMatchesNaiveLoopWithGradient) {
  for (double scale : {1.0 / 16, 0.5, 1.0}) {
    const int64_t B = 2, C = 3, H = 10, W = 8;
    // Rounded values make equal maxima common: the gradient must go to the first one.
    const auto x = (torch::randn({B, C, H, W}) * 2).round().requires_grad_(true);
    const auto rois = random_rois(30, B, H, W, scale, torch::kFloat);
    const auto grad_out = torch::randn({30, C, 3, 4});
    const auto out = roi_pool(x, rois, {3, 4}, scale);
    out.backward(grad_out);
    const auto [ref, ref_grad] =
        naive_roi_pool(x.detach(), rois, 3, 4, static_cast<float>(scale), grad_out);
    expect_close(out, ref, 0.0, "roi_pool output, scale " + std::to_string(scale));
    expect_close(x.grad(), ref_grad, 1e-5, "roi_pool gradient, scale " + std::to_string(scale));
  }
}

// Autocast hands the RoI ops bfloat16 or float16 maps; they pool in float32 (torchvision's autocast
// rule) and answer in the map's type. The CPU's sparse product has no bfloat16 kernel: this threw.
TEST(DetectOps, ReducedPrecisionMapsArePooledInFloat32) {
  const int64_t B = 2, C = 4, H = 40, W = 50;
  const auto rois = random_rois(20, B, H, W, 1.0 / 16, torch::kFloat);
  for (const auto dtype : {torch::kBFloat16, torch::kHalf}) {
    const auto x = torch::randn({B, C, H, W}).to(dtype).requires_grad_(true);
    const auto widened = x.detach().to(torch::kFloat);
    const auto a = roi_align(x, rois, {7, 7}, 1.0 / 16, 2, false);
    EXPECT_EQ(a.scalar_type(), dtype);
    expect_close(a.to(torch::kFloat), roi_align(widened, rois, {7, 7}, 1.0 / 16, 2, false).to(dtype).to(torch::kFloat),
                 0.0, "roi_align reduced");
    const auto p = roi_pool(x, rois, {7, 7}, 1.0 / 16);
    EXPECT_EQ(p.scalar_type(), dtype);
    expect_close(p.to(torch::kFloat), roi_pool(widened, rois, {7, 7}, 1.0 / 16).to(torch::kFloat), 0.0,
                 "roi_pool reduced");
    (a.sum() + p.sum()).backward();
    ASSERT_TRUE(x.grad().defined());
    EXPECT_EQ(x.grad().scalar_type(), dtype);
    EXPECT_GT(x.grad().abs().sum().item<double>(), 0.0);
  }
}

TEST(DetectOps, RoiPoolRoundsHalvesAwayFromZero) {
  // x1 = 2.5 cells rounds to 3 (C round), not to 2 (round half to even): the roi spans cells
  // 3..4 and its maximum is cell 3's value 5, not cell 2's 6.
  const auto x = (8 - torch::arange(8, torch::kFloat)).view({1, 1, 1, 8});
  const auto out = roi_pool(x, torch::tensor({{0.f, 5.f, 0.f, 7.f, 0.f}}), {1, 1}, 0.5);
  EXPECT_EQ(out.item<float>(), 5.f);
}

// ---- torchvision itself

TEST(DetectOps, MatchTorchvisionOps) {
  CSPN_REQUIRE_TORCHVISION();
  const auto dir = cspn::test::scratch_dir("detect_ops_torchvision");
  const int64_t B = 2, C = 4, H = 12, W = 10, R = 64;
  std::map<std::string, torch::Tensor> in;
  in["boxes"] = random_boxes(500, 200, 60, torch::kFloat);
  in["scores"] = torch::rand({500});
  in["idxs"] = torch::randint(0, 5, {500}, torch::kLong);
  in["x"] = torch::randn({B, C, H, W});
  in["rois16"] = random_rois(R, B, H, W, 1.0 / 16, torch::kFloat);
  in["rois2"] = random_rois(R, B, H, W, 0.5, torch::kFloat);
  in["g77"] = torch::randn({R, C, 7, 7});
  in["g35"] = torch::randn({R, C, 3, 5});
  const nlohmann::json cases = nlohmann::json::array({
      {{"name", "nms_05"}, {"op", "nms"}, {"boxes", "boxes"}, {"scores", "scores"}, {"iou", 0.5}},
      {{"name", "nms_07"}, {"op", "nms"}, {"boxes", "boxes"}, {"scores", "scores"}, {"iou", 0.7}},
      {{"name", "bnms"}, {"op", "batched_nms"}, {"boxes", "boxes"}, {"scores", "scores"},
       {"idxs", "idxs"}, {"iou", 0.4}},
      {{"name", "align_a"}, {"op", "roi_align"}, {"input", "x"}, {"rois", "rois16"},
       {"output_size", {7, 7}}, {"spatial_scale", 1.0 / 16}, {"sampling_ratio", 2},
       {"aligned", false}, {"grad_out", "g77"}},
      {{"name", "align_b"}, {"op", "roi_align"}, {"input", "x"}, {"rois", "rois2"},
       {"output_size", {3, 5}}, {"spatial_scale", 0.5}, {"sampling_ratio", 3},
       {"aligned", true}, {"grad_out", "g35"}},
      {{"name", "pool_a"}, {"op", "roi_pool"}, {"input", "x"}, {"rois", "rois16"},
       {"output_size", {7, 7}}, {"spatial_scale", 1.0 / 16}, {"grad_out", "g77"}},
      {{"name", "pool_b"}, {"op", "roi_pool"}, {"input", "x"}, {"rois", "rois2"},
       {"output_size", {3, 5}}, {"spatial_scale", 0.5}, {"grad_out", "g35"}},
  });
  cspn::test::write_tensors(dir, "inputs.json", in, {{"cases", cases}});
  cspn::test::run_reference_script("torchvision_ops_reference.py", "ops '" + dir.string() + "'",
                                   dir);
  const auto ref = cspn::test::read_tensors(dir, "outputs.json");

  EXPECT_EQ(to_vector(nms(in["boxes"], in["scores"], 0.5)), to_vector(ref.at("nms_05")));
  EXPECT_EQ(to_vector(nms(in["boxes"], in["scores"], 0.7)), to_vector(ref.at("nms_07")));
  EXPECT_EQ(to_vector(batched_nms(in["boxes"], in["scores"], in["idxs"], 0.4)),
            to_vector(ref.at("bnms")));

  const auto check = [&](const std::string& name, bool align, const std::string& rois,
                         std::array<int64_t, 2> size, double scale, int sr, bool aligned,
                         const std::string& grad_out) {
    const auto x = in["x"].clone().requires_grad_(true);
    const auto out = align ? roi_align(x, in[rois], size, scale, sr, aligned)
                           : roi_pool(x, in[rois], size, scale);
    out.backward(in[grad_out]);
    expect_close(out, ref.at(name), align ? 2e-6 : 0.0, name);
    expect_close(x.grad(), ref.at(name + "_grad"), 2e-5, name + " gradient");
  };
  check("align_a", true, "rois16", {7, 7}, 1.0 / 16, 2, false, "g77");
  check("align_b", true, "rois2", {3, 5}, 0.5, 3, true, "g35");
  check("pool_a", false, "rois16", {7, 7}, 1.0 / 16, 0, false, "g77");
  check("pool_b", false, "rois2", {3, 5}, 0.5, 0, false, "g35");
}

// ---- another device

TEST(DetectOps, CudaMatchesCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const torch::Device cuda(torch::kCUDA);
  const auto boxes = random_boxes(400, 200, 60, torch::kFloat);
  const auto scores = torch::rand({400});
  const auto keep = nms(boxes.to(cuda), scores.to(cuda), 0.5);
  EXPECT_TRUE(keep.is_cuda());
  EXPECT_EQ(to_vector(keep), to_vector(nms(boxes, scores, 0.5)));
  const auto x = torch::randn({2, 8, 20, 24});
  const auto rois = random_rois(100, 2, 20, 24, 1.0 / 16, torch::kFloat);
  const auto xc = x.to(cuda).requires_grad_(true);
  const auto xr = x.clone().requires_grad_(true);
  const auto g = torch::randn({100, 8, 7, 7});
  const auto a_cuda = roi_align(xc, rois.to(cuda), {7, 7}, 1.0 / 16, 2, false);
  const auto a_cpu = roi_align(xr, rois, {7, 7}, 1.0 / 16, 2, false);
  EXPECT_TRUE(a_cuda.is_cuda());
  a_cuda.backward(g.to(cuda));
  a_cpu.backward(g);
  expect_close(a_cuda, a_cpu, 1e-5, "roi_align cuda");
  expect_close(xc.grad(), xr.grad(), 1e-4, "roi_align cuda gradient");
  const auto p_cuda = roi_pool(x.to(cuda), rois.to(cuda), {7, 7}, 1.0 / 16);
  expect_close(p_cuda, roi_pool(x, rois, {7, 7}, 1.0 / 16), 0.0, "roi_pool cuda");
}

TEST(Cuda, DetectionOpsMatchCpu) {
  CSPN_REQUIRE_CUDA();
  torch::manual_seed(1);
  const auto feat = torch::randn({2, 16, 20, 24}, torch::dtype(torch::kFloat).requires_grad(true));
  auto xy = torch::rand({40, 2}) * 300;
  auto wh = torch::rand({40, 2}) * 100 + 4;
  const auto rois = torch::cat({torch::randint(0, 2, {40, 1}).to(torch::kFloat), xy, xy + wh}, 1);
  const auto a_c = cspn::detect::roi_align(feat, rois, {7, 7}, 1.0 / 16, 2, true);
  const auto a_g = cspn::detect::roi_align(feat.cuda(), rois.cuda(), {7, 7}, 1.0 / 16, 2, true);
  EXPECT_LT(max_diff(a_c, a_g), 1e-4);
  const auto p_c = cspn::detect::roi_pool(feat, rois, {7, 7}, 1.0 / 16);
  const auto p_g = cspn::detect::roi_pool(feat.cuda(), rois.cuda(), {7, 7}, 1.0 / 16);
  EXPECT_LT(max_diff(p_c, p_g), 1e-5);
  const auto boxes = rois.slice(1, 1, 5);
  const auto scores = torch::rand({40});
  const auto keep_c = cspn::detect::nms(boxes, scores, 0.5);
  const auto keep_g = cspn::detect::nms(boxes.cuda(), scores.cuda(), 0.5);
  EXPECT_TRUE(keep_g.is_cuda());
  EXPECT_TRUE(torch::equal(keep_c, keep_g.cpu()));
  // Gradients flow on the device.
  const auto feat_g = feat.detach().cuda().requires_grad_(true);
  cspn::detect::roi_align(feat_g, rois.cuda(), {7, 7}, 1.0 / 16, 2, true).sum().backward();
  (a_c.sum()).backward();
  EXPECT_LT(max_diff(feat.grad(), feat_g.grad()), 1e-4);
}

}  // namespace
