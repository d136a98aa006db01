#include "cspn/core/detect/ops.hpp"
#include "cspn/core/util.hpp"

#include <algorithm>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include <torch/torch.h>

namespace cspn::detect {
namespace {

[[noreturn]] void fail(const char* where, const std::string& what) {
  throw std::invalid_argument(std::string("cspn::detect::") + where + ": " + what);
}

void check_boxes(const char* where, const char* name, const torch::Tensor& boxes) {
  cspn::check_boxes(std::string("cspn::detect::") + where, name, boxes, /*floating=*/true);
}

// float16 and bfloat16 maps (autocast) are pooled in float32, as torchvision's autocast wrappers of
// these ops do: coordinates of several hundred pixels are off by whole pixels in those types, and
// the CPU's sparse matrix product has no bfloat16 kernel.
bool reduced_precision(const torch::Tensor& t) {
  return t.scalar_type() == torch::kHalf || t.scalar_type() == torch::kBFloat16;
}

void check_roi_inputs(const char* where, const torch::Tensor& input, const torch::Tensor& rois,
                      std::array<int64_t, 2> output_size) {
  if (!input.defined() || input.dim() != 4)
    fail(where, "input should be [B,C,H,W], got " +
                    (input.defined() ? shape_of(input) : std::string("an undefined tensor")));
  if (!input.is_floating_point())
    fail(where, "input should be floating point, got " +
                    std::string(c10::toString(input.scalar_type())));
  if (input.size(2) == 0 || input.size(3) == 0)
    fail(where, "input should have a non-empty spatial size, got " + shape_of(input));
  if (!rois.defined() || rois.dim() != 2 || rois.size(1) != 5)
    fail(where, "rois should be [R,5] (batch index, x1, y1, x2, y2), got " +
                    (rois.defined() ? shape_of(rois) : std::string("an undefined tensor")));
  if (rois.device() != input.device())
    fail(where, "rois should be on the input's device " + input.device().str() + ", got " +
                    rois.device().str());
  if (output_size[0] <= 0 || output_size[1] <= 0)
    fail(where, "output_size should be positive, got (" + std::to_string(output_size[0]) + ", " +
                    std::to_string(output_size[1]) + ")");
}

// rois [R,5] -> batch indices [R] int64, truncated like torchvision's int cast; checked in [0,B).
torch::Tensor roi_batch_index(const char* where, const torch::Tensor& rois, int64_t batch) {
  auto index = rois.select(1, 0).to(torch::kLong);
  if (index.numel() > 0) {
    const int64_t lo = index.min().item<int64_t>(), hi = index.max().item<int64_t>();
    if (lo < 0 || hi >= batch)
      fail(where, "rois batch indices should be in [0, " + std::to_string(batch) + "), got [" +
                      std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  return index;
}

// Classic greedy NMS over boxes already sorted by decreasing score (torchvision's CPU kernel,
// the same float operations so the same ties break the same way).
template <class T>
std::vector<int64_t> greedy_nms(const T* box, int64_t n, double iou_thresh) {
  std::vector<T> area(n);
  for (int64_t i = 0; i < n; ++i)
    area[i] = (box[4 * i + 2] - box[4 * i]) * (box[4 * i + 3] - box[4 * i + 1]);
  std::vector<char> suppressed(n, 0);
  std::vector<int64_t> keep;
  for (int64_t i = 0; i < n; ++i) {
    if (suppressed[i]) continue;
    keep.push_back(i);
    const T* a = box + 4 * i;
    for (int64_t j = i + 1; j < n; ++j) {
      if (suppressed[j]) continue;
      const T* b = box + 4 * j;
      const T w = std::max(T(0), std::min(a[2], b[2]) - std::max(a[0], b[0]));
      const T h = std::max(T(0), std::min(a[3], b[3]) - std::max(a[1], b[1]));
      const T inter = w * h;
      if (inter / (area[i] + area[j] - inter) > iou_thresh) suppressed[j] = 1;
    }
  }
  return keep;
}

// Per-axis bilinear sampling of torchvision's roi_align. v [...] sample coordinates in cells,
// size = H or W. Returns the low/high cell indices (int64) and their weights; samples outside
// [-1, size] get weight 0, others are clamped into [0, size-1].
struct AxisTaps {
  torch::Tensor lo, hi, w_lo, w_hi;
};

AxisTaps bilinear_taps(const torch::Tensor& v, int64_t size) {
  const auto valid = ((v >= -1) & (v <= static_cast<double>(size))).to(v.scalar_type());
  auto c = v.clamp_min(0);
  auto lo = c.floor().to(torch::kLong);
  const auto at_edge = lo >= size - 1;
  lo = lo.clamp_max(size - 1);
  const auto hi = torch::where(at_edge, lo, lo + 1);
  c = torch::where(at_edge, lo.to(v.scalar_type()), c);
  const auto w_hi = c - lo.to(v.scalar_type());
  const auto w_lo = 1 - w_hi;
  return {lo, hi, w_lo * valid, w_hi * valid};
}

// a / b rounded as the kernels' scalar code does. CUDA computes a tensor divided by a CPU scalar
// as a * (1/b), which can land just above an integer (14 * (1/7) > 2) and move a ceil()ed bin
// edge; dividing by a 0-dim tensor on a's device keeps the correctly rounded quotient.
torch::Tensor divide(const torch::Tensor& a, double b) {
  return a / torch::scalar_tensor(b, a.options());
}

// C's round(): halves away from zero (torch::round rounds halves to even). x - trunc(x) is exact.
torch::Tensor round_half_away(const torch::Tensor& x) {
  const auto t = x.trunc();
  return torch::where((x - t).abs() >= 0.5, t + x.sign(), t);
}

}  // namespace

torch::Tensor box_iou(const torch::Tensor& a, const torch::Tensor& b) {
  check_boxes("box_iou", "a", a);
  check_boxes("box_iou", "b", b);
  const auto area_a = (a.select(1, 2) - a.select(1, 0)) * (a.select(1, 3) - a.select(1, 1));
  const auto area_b = (b.select(1, 2) - b.select(1, 0)) * (b.select(1, 3) - b.select(1, 1));
  const auto lt = torch::max(a.unsqueeze(1).narrow(2, 0, 2), b.unsqueeze(0).narrow(2, 0, 2));
  const auto rb = torch::min(a.unsqueeze(1).narrow(2, 2, 2), b.unsqueeze(0).narrow(2, 2, 2));
  const auto wh = (rb - lt).clamp_min(0);  // [N,M,2]
  const auto inter = wh.select(2, 0) * wh.select(2, 1);
  return inter / (area_a.unsqueeze(1) + area_b.unsqueeze(0) - inter);
}

torch::Tensor nms(const torch::Tensor& boxes, const torch::Tensor& scores, double iou_thresh) {
  check_boxes("nms", "boxes", boxes);
  if (!scores.defined() || scores.dim() != 1 || scores.size(0) != boxes.size(0))
    fail("nms", "scores should be [N] with N = " + std::to_string(boxes.size(0)) +
                    " (boxes " + shape_of(boxes) + "), got " +
                    (scores.defined() ? shape_of(scores) : std::string("an undefined tensor")));
  if (scores.device() != boxes.device())
    fail("nms", "scores should be on the boxes' device " + boxes.device().str() + ", got " +
                    scores.device().str());
  const auto long_opts = boxes.options().dtype(torch::kLong);
  if (boxes.size(0) == 0) return torch::empty({0}, long_opts);

  torch::NoGradGuard no_grad;
  const auto order = std::get<1>(scores.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  // The greedy pass is sequential: run it on a CPU copy of the sorted boxes.
  const auto work_type = boxes.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  const auto sorted = boxes.index_select(0, order).to(torch::kCPU, work_type).contiguous();
  std::vector<int64_t> keep;
  if (work_type == torch::kDouble)
    keep = greedy_nms(sorted.data_ptr<double>(), sorted.size(0), iou_thresh);
  else
    keep = greedy_nms(sorted.data_ptr<float>(), sorted.size(0), iou_thresh);
  const auto keep_t = torch::tensor(keep, torch::kLong).to(boxes.device());
  return order.index_select(0, keep_t);
}

torch::Tensor batched_nms(const torch::Tensor& boxes, const torch::Tensor& scores,
                          const torch::Tensor& idxs, double iou_thresh) {
  check_boxes("batched_nms", "boxes", boxes);
  if (!idxs.defined() || idxs.dim() != 1 || idxs.size(0) != boxes.size(0))
    fail("batched_nms", "idxs should be [N] with N = " + std::to_string(boxes.size(0)) +
                            ", got " +
                            (idxs.defined() ? shape_of(idxs) : std::string("an undefined tensor")));
  if (boxes.size(0) == 0) return torch::empty({0}, boxes.options().dtype(torch::kLong));
  torch::NoGradGuard no_grad;
  // Shift each group by (group id) x (largest coordinate + 1): boxes of different groups can
  // then never overlap, and one NMS pass handles all groups.
  const auto offsets = idxs.to(boxes.scalar_type()) * (boxes.max() + 1);
  return nms(boxes + offsets.unsqueeze(1), scores, iou_thresh);
}

torch::Tensor roi_align(const torch::Tensor& input, const torch::Tensor& rois,
                        std::array<int64_t, 2> output_size, double spatial_scale,
                        int64_t sampling_ratio, bool aligned) {
  check_roi_inputs("roi_align", input, rois, output_size);
  if (reduced_precision(input)) {
    const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);  // float32 inside
    return roi_align(input.to(torch::kFloat), rois.to(torch::kFloat), output_size, spatial_scale, sampling_ratio,
                     aligned)
        .to(input.scalar_type());
  }
  if (sampling_ratio <= 0)
    fail("roi_align", "sampling_ratio should be > 0 (the adaptive mode is not supported), got " +
                          std::to_string(sampling_ratio));
  const int64_t B = input.size(0), C = input.size(1), H = input.size(2), W = input.size(3);
  const int64_t PH = output_size[0], PW = output_size[1], S = sampling_ratio, R = rois.size(0);
  if (R == 0) return torch::zeros({0, C, PH, PW}, input.options());

  // The sampling positions and weights are constants of the op (torchvision gives rois no
  // gradient); the output is a sparse [R*PH*PW, B*H*W] interpolation matrix times the feature
  // map as rows [B*H*W, C], so the gradient w.r.t. input comes from the matrix product.
  torch::Tensor weights;
  {
    torch::NoGradGuard no_grad;
    const auto r = rois.to(input.scalar_type());
    const auto batch = roi_batch_index("roi_align", r, B);
    const double offset = aligned ? 0.5 : 0.0;
    const auto x1 = r.select(1, 1) * spatial_scale - offset;
    const auto y1 = r.select(1, 2) * spatial_scale - offset;
    auto roi_w = r.select(1, 3) * spatial_scale - offset - x1;
    auto roi_h = r.select(1, 4) * spatial_scale - offset - y1;
    if (!aligned) {
      roi_w = roi_w.clamp_min(1);
      roi_h = roi_h.clamp_min(1);
    }
    const auto fopts = r.options();
    // Sample s of bin p sits at start + p*bin + (s + 0.5)*bin/S, in torchvision's operation order.
    const auto sample_coords = [&](const torch::Tensor& start, const torch::Tensor& len, int64_t P) {
      const auto bin = divide(len, static_cast<double>(P)).view({R, 1, 1});
      const auto p = torch::arange(P, fopts).view({1, P, 1});
      const auto s = (torch::arange(S, fopts) + 0.5).view({1, 1, S});
      return start.view({R, 1, 1}) + p * bin + divide(s * bin, static_cast<double>(S));  // [R,P,S]
    };
    const auto ty = bilinear_taps(sample_coords(y1, roi_h, PH), H);
    const auto tx = bilinear_taps(sample_coords(x1, roi_w, PW), W);
    // Corners: y taps [R,PH,1,S,1,2,1] x x taps [R,1,PW,1,S,1,2] -> [R,PH,PW,S,S,2,2].
    const auto yi = torch::stack({ty.lo, ty.hi}, -1).view({R, PH, 1, S, 1, 2, 1});
    const auto xi = torch::stack({tx.lo, tx.hi}, -1).view({R, 1, PW, 1, S, 1, 2});
    const auto wy = torch::stack({ty.w_lo, ty.w_hi}, -1).view({R, PH, 1, S, 1, 2, 1});
    const auto wx = torch::stack({tx.w_lo, tx.w_hi}, -1).view({R, 1, PW, 1, S, 1, 2});
    const auto cols = batch.view({R, 1, 1, 1, 1, 1, 1}) * (H * W) + yi * W + xi;
    const auto rows = torch::arange(R * PH * PW, batch.options()).view({R, PH, PW, 1, 1, 1, 1});
    const auto values = wy * wx / static_cast<double>(S * S);
    const auto index = torch::stack({rows.expand_as(cols).reshape(-1), cols.reshape(-1)});
    weights = torch::sparse_coo_tensor(index, values.reshape(-1), {R * PH * PW, B * H * W},
                                       input.options().layout(torch::kSparse));
  }
  const auto features = input.permute({0, 2, 3, 1}).reshape({B * H * W, C});
  return torch::mm(weights, features).view({R, PH, PW, C}).permute({0, 3, 1, 2}).contiguous();
}

torch::Tensor roi_pool(const torch::Tensor& input, const torch::Tensor& rois,
                       std::array<int64_t, 2> output_size, double spatial_scale) {
  check_roi_inputs("roi_pool", input, rois, output_size);
  if (reduced_precision(input)) {
    const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);  // float32 inside
    return roi_pool(input.to(torch::kFloat), rois.to(torch::kFloat), output_size, spatial_scale).to(input.scalar_type());
  }
  const int64_t B = input.size(0), C = input.size(1), H = input.size(2), W = input.size(3);
  const int64_t PH = output_size[0], PW = output_size[1], R = rois.size(0);
  if (R == 0) return torch::zeros({0, C, PH, PW}, input.options());

  // Rows of the map, channels last, plus a zero row B*H*W that empty bins read.
  const auto features = torch::cat(
      {input.permute({0, 2, 3, 1}).reshape({B * H * W, C}), torch::zeros({1, C}, input.options())});
  torch::Tensor argmax;  // [R*PH*PW, C] rows of `features`
  {
    torch::NoGradGuard no_grad;
    const auto r = rois.to(input.scalar_type());
    const auto batch = roi_batch_index("roi_pool", r, B);
    const auto corner = round_half_away(r.narrow(1, 1, 4) * spatial_scale).to(torch::kLong);
    // Bin p of P over a roi of `len` cells starting at `start`: [floor(p*bin), ceil((p+1)*bin))
    // shifted by start and clipped to [0, size]. -> start, end [R,P] int64.
    const auto bins = [&](int64_t lo_col, int64_t P, int64_t size) {
      const auto start = corner.select(1, lo_col).unsqueeze(1);
      const auto len = (corner.select(1, lo_col + 2).unsqueeze(1) - start + 1).clamp_min(1);
      const auto bin = divide(len.to(r.scalar_type()), static_cast<double>(P));
      const auto p = torch::arange(P, r.options()).unsqueeze(0);
      const auto b0 = ((p * bin).floor().to(torch::kLong) + start).clamp(0, size);
      const auto b1 = (((p + 1) * bin).ceil().to(torch::kLong) + start).clamp(0, size);
      return std::make_pair(b0, b1);
    };
    const auto [h0, h1] = bins(1, PH, H);
    const auto [w0, w1] = bins(0, PW, W);
    const auto N = R * PH * PW;
    // Per bin [N]: window rows kh = h1-h0 and columns kw = w1-w0, top-left cell, image.
    const auto kh = (h1 - h0).unsqueeze(2).expand({R, PH, PW}).reshape(-1);
    const auto kw = (w1 - w0).unsqueeze(1).expand({R, PH, PW}).reshape(-1);
    const auto y0 = h0.unsqueeze(2).expand({R, PH, PW}).reshape(-1);
    const auto x0 = w0.unsqueeze(1).expand({R, PH, PW}).reshape(-1);
    const auto image = batch.view({R, 1}).expand({R, PH * PW}).reshape(-1);
    const auto empty = (kh <= 0) | (kw <= 0);
    const auto window = torch::where(empty, torch::zeros_like(kh), kh * (W + 1) + kw);
    argmax = torch::empty({N, C}, batch.options());  // every row is written below
    // A bin is the max over a kh x kw window at (y0, x0). For each window size in use, stride-1
    // max pooling of the whole map gives every window's maximum and its first position in
    // row-major order (torchvision's tie rule), separably: over kw columns, then over kh of those
    // row maxima (the topmost row holding the maximum, at its leftmost column). Row passes are
    // shared by the sizes of equal width. Channels-last maps pool an order of magnitude faster on
    // the CPU, and their [B,h,w,C] views are the channels-last tables gathered from below.
    const auto map = input.contiguous(torch::MemoryFormat::ChannelsLast);
    const auto channels_last = [&](const torch::Tensor& t) {  // [B,C,h,w] -> [B,h*w,C]
      return t.permute({0, 2, 3, 1}).reshape({B, -1, C});
    };
    std::map<int64_t, std::tuple<torch::Tensor, torch::Tensor>> rows;  // kw -> max, cell h*W+w
    const auto sizes = std::get<0>(torch::unique_consecutive(
                           std::get<0>(window.masked_select(~empty).sort())))
                           .cpu();
    const auto size_list = sizes.accessor<int64_t, 1>();
    for (int64_t i = 0; i < sizes.numel(); ++i) {
      const int64_t size = size_list[i], wh = size / (W + 1), ww = size % (W + 1);
      if (!rows.count(ww)) rows[ww] = torch::max_pool2d_with_indices(map, {1, ww}, {1, 1});
      const auto& [row_max, row_cell] = rows[ww];
      const auto window_row = std::get<1>(torch::max_pool2d_with_indices(row_max, {wh, 1}, {1, 1}));
      const int64_t ph = H - wh + 1, pw = W - ww + 1;
      // Cell (h*W+w) of each window's maximum: [B*ph*pw, C].
      const auto cell = channels_last(row_cell)
                            .gather(1, channels_last(window_row))
                            .reshape({B * ph * pw, C});
      const auto members = (window == size).nonzero().select(1, 0);
      const auto at = image.index_select(0, members) * (ph * pw) +
                      y0.index_select(0, members) * pw + x0.index_select(0, members);
      argmax.index_copy_(0, members, cell.index_select(0, at));
    }
    argmax += image.unsqueeze(1) * (H * W);  // rows of `features`
    argmax.index_fill_(0, empty.nonzero().select(1, 0), B * H * W);
  }
  // Gathering at the argmax gives the output its gradient: each bin's to its maximum's cell.
  const auto pooled = features.gather(0, argmax);
  return pooled.view({R, PH, PW, C}).permute({0, 3, 1, 2}).contiguous();
}

}  // namespace cspn::detect
