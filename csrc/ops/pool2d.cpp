// pool2d.cpp - see pool2d.h.
#include "ops/pool2d.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "cpu/parallel.h"
#include "ops/plane.h"
#include "ops/vmath.h"

namespace pyconv {
namespace {

inline int plane_threads(const Pool2dParams& p, double per_plane_work) {
  return (int)std::min<i64>(std::max<i64>(p.planes(), 1),
                            threads_for(per_plane_work * double(p.planes()), 2.0e5));
}

// Max over x[iy][ix] for iy in [h0, h1) step dh, ix in [w0, w1) step dw,
// with h0 / w0 already moved to the first in-range tap.
template <typename T>
inline void window_max(const T* xp, i64 W, i64 h0, i64 h1, i64 dh, i64 w0, i64 w1, i64 dw,
                       T* out, std::int64_t* out_idx) {
  std::int64_t best = h0 * W + w0;
  T m = -std::numeric_limits<T>::infinity();
  for (i64 ih = h0; ih < h1; ih += dh)
    for (i64 iw = w0; iw < w1; iw += dw) {
      const T v = xp[ih * W + iw];
      if (v > m || std::isnan(v)) {
        m = v;
        best = ih * W + iw;
      }
    }
  *out = m;
  if (out_idx) *out_idx = best;
}

inline i64 bin_start(i64 i, i64 in, i64 out) { return (i * in) / out; }
inline i64 bin_end(i64 i, i64 in, i64 out) { return ((i + 1) * in + out - 1) / out; }

}  // namespace

namespace {
// The common 2x2, stride-2, unpadded case with every window inside the
// input: the same first-maximum / NaN-wins rule as window_max, written as
// selects over the four taps so the loop has no data-dependent branches.
template <typename T>
void max_pool_2x2(const Pool2dParams& p, const T* xp, T* yp, std::int64_t* ip) {
  if constexpr (std::is_same_v<T, float>) {
    const VMathF32* vm = p.W < (i64(1) << 30) ? vmath_f32() : nullptr;  // (int32 tap offsets)
    if (vm) {  // the same rule, 8 outputs at a time
      for (i64 oy = 0; oy < p.OH; ++oy)
        vm->max_pool2x2_row(xp + 2 * oy * p.W, xp + (2 * oy + 1) * p.W, p.OW, yp + oy * p.OW,
                            ip ? ip + oy * p.OW : nullptr, 2 * oy * p.W, p.W);
      return;
    }
  }
  for (i64 oy = 0; oy < p.OH; ++oy) {
    const T* __restrict r0 = xp + 2 * oy * p.W;
    const T* __restrict r1 = r0 + p.W;
    T* __restrict yr = yp + oy * p.OW;
    const i64 base = 2 * oy * p.W;
    for (i64 ox = 0; ox < p.OW; ++ox) {
      const T a = r0[2 * ox], b = r0[2 * ox + 1], c = r1[2 * ox], d = r1[2 * ox + 1];
      // Non-short-circuit | keeps these as selects, not branches (random
      // data mispredicts half of them).
      T m = a;
      std::int64_t k = 0;
      bool t = (b > m) | (b != b);
      m = t ? b : m;
      k = t ? 1 : k;
      t = (c > m) | (c != c);
      m = t ? c : m;
      k = t ? p.W : k;
      t = (d > m) | (d != d);
      m = t ? d : m;
      k = t ? p.W + 1 : k;
      yr[ox] = m;
      if (ip) ip[oy * p.OW + ox] = base + 2 * ox + k;
    }
  }
}
}  // namespace

namespace {
// Any other float32 max pooling: each plane is laid out with -inf padding
// and its stride phases split (plane.h), the window maximum runs as one
// flat SIMD pass over the taps, and the winning tap becomes the index. A
// window whose in-input taps are all -inf keeps the first in-input tap's
// index, as in window_max.
bool max_pool_simd(const Pool2dParams& q, const float* x, float* y, std::int64_t* idx) {
  const PlaneF32* k = plane_f32();
  if (!k) return false;
  Conv2dParams p{};
  p.N = q.N; p.C = q.C; p.H = q.H; p.W = q.W; p.OC = q.C; p.G = q.C;
  p.KH = q.KH; p.KW = q.KW; p.SH = q.SH; p.SW = q.SW; p.PT = q.PH; p.PL = q.PW;
  p.DH = q.DH; p.DW = q.DW; p.OH = q.OH; p.OW = q.OW;
  const PhaseLayout L(p);
  const i64 KK = q.KH * q.KW;
  if (!L.ok || KK >= (i64(1) << 30)) return false;
  const i64 HW = q.H * q.W, OHW = q.OH * q.OW;
  // Per tap, its offset from the window origin; per output row / column,
  // the window origin and the first in-input tap.
  std::vector<i64> tap(KK), row0(q.OH), col0(q.OW), hfirst(q.OH), wfirst(q.OW);
  for (i64 ky = 0; ky < q.KH; ++ky)
    for (i64 kx = 0; kx < q.KW; ++kx) tap[ky * q.KW + kx] = ky * q.DH * q.W + kx * q.DW;
  for (i64 oy = 0; oy < q.OH; ++oy) {
    i64 h0 = oy * q.SH - q.PH;
    row0[oy] = h0 * q.W;
    if (h0 < 0) h0 += (-h0 + q.DH - 1) / q.DH * q.DH;
    hfirst[oy] = h0 * q.W;
  }
  for (i64 ox = 0; ox < q.OW; ++ox) {
    i64 w0 = ox * q.SW - q.PW;
    col0[ox] = w0;
    if (w0 < 0) w0 += (-w0 + q.DW - 1) / q.DW * q.DW;
    wfirst[ox] = w0;
  }
  const int nt = plane_threads(q, double(OHW) * KK);
  ThreadBuffers tb(nt, L.size + L.L + kPlanePad, -std::numeric_limits<float>::infinity());
  std::vector<std::int32_t> args(std::size_t(nt) * (L.L + kPlanePad));
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    float* buf = tb.mine();
    float* out = buf + L.size;
#ifdef _OPENMP
    std::int32_t* arg = args.data() + std::size_t(omp_get_thread_num()) * (L.L + kPlanePad);
#else
    std::int32_t* arg = args.data();
#endif
#pragma omp for schedule(static)
    for (i64 pl = 0; pl < q.planes(); ++pl) {
      L.fill(p, k, x + pl * HW, buf, false);
      k->max_flat(buf, L.off.data(), (int)KK, out, arg, L.L);
      float* yp = y + pl * OHW;
      k->copy2d(out, L.pitch, yp, q.OW, q.OH, q.OW, false);
      if (!idx) continue;
      const i64* __restrict tp = tap.data();
      const i64* __restrict c0 = col0.data();
      const i64* __restrict wf = wfirst.data();
      const i64 OW = q.OW;  // (locals: the int64 stores could alias q's fields)
      for (i64 oy = 0; oy < q.OH; ++oy) {
        const std::int32_t* __restrict ar = arg + oy * L.pitch;
        std::int64_t* __restrict ip = idx + pl * OHW + oy * OW;
        const i64 r0 = row0[oy], hf = hfirst[oy];
        for (i64 ox = 0; ox < OW; ++ox) {
          const std::int32_t t = ar[ox];
          ip[ox] = t >= 0 ? r0 + c0[ox] + tp[t] : hf + wf[ox];
        }
      }
    }
  }
  return true;
}
}  // namespace

template <typename T>
void max_pool2d_forward(const Pool2dParams& p, const T* x, T* y, std::int64_t* idx) {
  const i64 HW = p.H * p.W, OHW = p.OH * p.OW;
  const int nt = plane_threads(p, double(OHW) * p.KH * p.KW);
  if (p.KH == 2 && p.KW == 2 && p.SH == 2 && p.SW == 2 && p.PH == 0 && p.PW == 0 && p.DH == 1 &&
      p.DW == 1 && 2 * p.OH <= p.H && 2 * p.OW <= p.W) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (i64 pl = 0; pl < p.planes(); ++pl)
      max_pool_2x2(p, x + pl * HW, y + pl * OHW, idx ? idx + pl * OHW : nullptr);
    return;
  }
  if constexpr (std::is_same_v<T, float>) {
    const PlaneF32* k = plane_f32();
    if (k && p.KH == 3 && p.KW == 3 && p.SH == 2 && p.SW == 2 && p.DH == 1 && p.DW == 1 &&
        p.PH <= 1 && p.PW <= 1 && p.OW >= 8 && HW < (i64(1) << 31)) {  // (ResNet's stem pool)
      ThreadBuffers tb(nt, max_pool3s2_scratch(p.H, p.OW));
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
      for (i64 pl = 0; pl < p.planes(); ++pl)
        k->max_pool3s2(x + pl * HW, p.H, p.W, p.PH, p.PW, p.OH, p.OW, y + pl * OHW,
                       idx ? idx + pl * OHW : nullptr, tb.mine());
      return;
    }
    if (max_pool_simd(p, x, y, idx)) return;
  }
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (i64 pl = 0; pl < p.planes(); ++pl) {
    const T* xp = x + pl * HW;
    for (i64 oy = 0; oy < p.OH; ++oy) {
      i64 h0 = oy * p.SH - p.PH;
      const i64 h1 = std::min(h0 + (p.KH - 1) * p.DH + 1, p.H);
      if (h0 < 0) h0 += (-h0 + p.DH - 1) / p.DH * p.DH;  // first in-range tap
      for (i64 ox = 0; ox < p.OW; ++ox) {
        i64 w0 = ox * p.SW - p.PW;
        const i64 w1 = std::min(w0 + (p.KW - 1) * p.DW + 1, p.W);
        if (w0 < 0) w0 += (-w0 + p.DW - 1) / p.DW * p.DW;
        const i64 o = pl * OHW + oy * p.OW + ox;
        window_max(xp, p.W, h0, h1, p.DH, w0, w1, p.DW, y + o, idx ? idx + o : nullptr);
      }
    }
  }
}

template <typename T>
bool max_pool2d_backward(const Pool2dParams& p, const T* dy, const std::int64_t* idx, T* dx) {
  const i64 HW = p.H * p.W, OHW = p.OH * p.OW;
  std::atomic<bool> ok{true};
  const int nt = plane_threads(p, double(OHW + HW));
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (i64 pl = 0; pl < p.planes(); ++pl) {
    T* dxp = dx + pl * HW;
    std::fill(dxp, dxp + HW, T(0));
    const T* g = dy + pl * OHW;
    const std::int64_t* ip = idx + pl * OHW;
    for (i64 o = 0; o < OHW; ++o) {
      const std::int64_t i = ip[o];
      if (i < 0 || i >= HW) {
        ok.store(false, std::memory_order_relaxed);
        continue;
      }
      dxp[i] += g[o];
    }
  }
  return ok.load();
}

namespace {
// PyTorch's average-pool window: the divisor is computed on the window clipped
// to the padded input, the sum on the window clipped to the input.
struct AvgWindow {
  i64 h0, h1, w0, w1, div;
};
inline AvgWindow avg_window(const Pool2dParams& p, bool cip, i64 dov, i64 oy, i64 ox) {
  AvgWindow a;
  a.h0 = oy * p.SH - p.PH;
  a.w0 = ox * p.SW - p.PW;
  a.h1 = std::min(a.h0 + p.KH, p.H + p.PH);
  a.w1 = std::min(a.w0 + p.KW, p.W + p.PW);
  const i64 pool_size = (a.h1 - a.h0) * (a.w1 - a.w0);
  a.h0 = std::max<i64>(a.h0, 0);
  a.w0 = std::max<i64>(a.w0, 0);
  a.h1 = std::min(a.h1, p.H);
  a.w1 = std::min(a.w1, p.W);
  a.div = dov > 0 ? dov : (cip ? pool_size : (a.h1 - a.h0) * (a.w1 - a.w0));
  return a;
}
}  // namespace

namespace {
// 2x2 windows, stride 2, no padding or dilation, all inside the input.
inline bool is_2x2_inside(const Pool2dParams& p) {
  return p.KH == 2 && p.KW == 2 && p.SH == 2 && p.SW == 2 && p.PH == 0 && p.PW == 0 &&
         p.DH == 1 && p.DW == 1 && 2 * p.OH <= p.H && 2 * p.OW <= p.W;
}
}  // namespace

template <typename T>
void avg_pool2d_forward(const Pool2dParams& p, bool cip, i64 dov, const T* x, T* y) {
  const i64 HW = p.H * p.W, OHW = p.OH * p.OW;
  const int nt = plane_threads(p, double(OHW) * p.KH * p.KW);
  if (is_2x2_inside(p)) {  // same sums in the same order as below, without the window logic
    const T div = T(dov ? dov : 4);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (i64 pl = 0; pl < p.planes(); ++pl)
      for (i64 oy = 0; oy < p.OH; ++oy) {
        const T* __restrict r0 = x + pl * HW + 2 * oy * p.W;
        const T* __restrict r1 = r0 + p.W;
        T* __restrict yr = y + pl * OHW + oy * p.OW;
        for (i64 ox = 0; ox < p.OW; ++ox)
          yr[ox] = (((r0[2 * ox] + r0[2 * ox + 1]) + r1[2 * ox]) + r1[2 * ox + 1]) / div;
      }
    return;
  }
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (i64 pl = 0; pl < p.planes(); ++pl) {
    const T* xp = x + pl * HW;
    T* yp = y + pl * OHW;
    for (i64 oy = 0; oy < p.OH; ++oy)
      for (i64 ox = 0; ox < p.OW; ++ox) {
        const AvgWindow a = avg_window(p, cip, dov, oy, ox);
        if (a.h0 >= a.h1 || a.w0 >= a.w1) {
          yp[oy * p.OW + ox] = T(0);
          continue;
        }
        T s = 0;
        for (i64 ih = a.h0; ih < a.h1; ++ih)
          for (i64 iw = a.w0; iw < a.w1; ++iw) s += xp[ih * p.W + iw];
        yp[oy * p.OW + ox] = s / T(a.div);
      }
  }
}

template <typename T>
void avg_pool2d_backward(const Pool2dParams& p, bool cip, i64 dov, const T* dy, T* dx) {
  const i64 HW = p.H * p.W, OHW = p.OH * p.OW;
  const int nt = plane_threads(p, double(OHW) * p.KH * p.KW + HW);
  if (is_2x2_inside(p)) {  // disjoint windows: every covered pixel gets g / div once
    const T div = T(dov ? dov : 4);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (i64 pl = 0; pl < p.planes(); ++pl) {
      T* dxp = dx + pl * HW;
      const T* g = dy + pl * OHW;
      if (2 * p.OH != p.H || 2 * p.OW != p.W) std::fill(dxp, dxp + HW, T(0));
      for (i64 oy = 0; oy < p.OH; ++oy) {
        T* __restrict d0 = dxp + 2 * oy * p.W;
        T* __restrict d1 = d0 + p.W;
        const T* __restrict gr = g + oy * p.OW;
        for (i64 ox = 0; ox < p.OW; ++ox) {
          const T v = gr[ox] / div;
          d0[2 * ox] = v;
          d0[2 * ox + 1] = v;
          d1[2 * ox] = v;
          d1[2 * ox + 1] = v;
        }
      }
    }
    return;
  }
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (i64 pl = 0; pl < p.planes(); ++pl) {
    T* dxp = dx + pl * HW;
    const T* g = dy + pl * OHW;
    std::fill(dxp, dxp + HW, T(0));
    for (i64 oy = 0; oy < p.OH; ++oy)
      for (i64 ox = 0; ox < p.OW; ++ox) {
        const AvgWindow a = avg_window(p, cip, dov, oy, ox);
        if (a.h0 >= a.h1 || a.w0 >= a.w1) continue;
        const T v = g[oy * p.OW + ox] / T(a.div);
        for (i64 ih = a.h0; ih < a.h1; ++ih)
          for (i64 iw = a.w0; iw < a.w1; ++iw) dxp[ih * p.W + iw] += v;
      }
  }
}

namespace {
// Calls body(plane, o, h0, h1, w0, w1) for every output bin, parallel over planes.
template <typename Body>
void adaptive_bins(const Pool2dParams& p, Body body) {
  const i64 OHW = p.OH * p.OW;
  const int nt = plane_threads(p, double(p.H * p.W) + OHW);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (i64 pl = 0; pl < p.planes(); ++pl)
    for (i64 oy = 0; oy < p.OH; ++oy) {
      const i64 h0 = bin_start(oy, p.H, p.OH), h1 = bin_end(oy, p.H, p.OH);
      for (i64 ox = 0; ox < p.OW; ++ox)
        body(pl, pl * OHW + oy * p.OW + ox, h0, h1, bin_start(ox, p.W, p.OW), bin_end(ox, p.W, p.OW));
    }
}
}  // namespace

namespace {
// Sum of a contiguous run with eight independent partial sums (one serial
// chain is add-latency bound: 3 GB/s), folded in a fixed order.
template <typename T>
inline T sum_run(const T* __restrict a, i64 n) {
  T s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  i64 i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) s[k] += a[i + k];
  T t = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
  for (; i < n; ++i) t += a[i];
  return t;
}
}  // namespace

template <typename T>
void adaptive_avg_pool2d_forward(const Pool2dParams& p, const T* x, T* y) {
  const VMathF32* vm = std::is_same_v<T, float> ? vmath_f32() : nullptr;
  adaptive_bins(p, [&](i64 pl, i64 o, i64 h0, i64 h1, i64 w0, i64 w1) {
    const T* xp = x + pl * p.H * p.W;
    T s = 0;
    if (w0 == 0 && w1 == p.W) {  // whole rows: one contiguous run
      if constexpr (std::is_same_v<T, float>)
        if (vm) {  // (32 float lanes in four vectors: a different fixed order)
          s = vm->sum(xp + h0 * p.W, (h1 - h0) * p.W);
          y[o] = s / T((h1 - h0) * (w1 - w0));
          return;
        }
      s = sum_run(xp + h0 * p.W, (h1 - h0) * p.W);
    } else {
      for (i64 ih = h0; ih < h1; ++ih) s += sum_run(xp + ih * p.W + w0, w1 - w0);
    }
    y[o] = s / T((h1 - h0) * (w1 - w0));
  });
}

template <typename T>
void adaptive_avg_pool2d_backward(const Pool2dParams& p, const T* dy, T* dx) {
  const i64 HW = p.H * p.W;
  // Sizes that divide evenly tile the plane with disjoint bins (global
  // pooling among them): each dx element is written once, no zero fill.
  const bool disjoint = p.H % p.OH == 0 && p.W % p.OW == 0;
  adaptive_bins(p, [&](i64 pl, i64 o, i64 h0, i64 h1, i64 w0, i64 w1) {
    T* dxp = dx + pl * HW;
    const T v = dy[o] / T((h1 - h0) * (w1 - w0));
    if (disjoint) {
      for (i64 ih = h0; ih < h1; ++ih) std::fill(dxp + ih * p.W + w0, dxp + ih * p.W + w1, v);
      return;
    }
    if (o == pl * p.OH * p.OW) std::fill(dxp, dxp + HW, T(0));  // first bin of the plane
    for (i64 ih = h0; ih < h1; ++ih)
      for (i64 iw = w0; iw < w1; ++iw) dxp[ih * p.W + iw] += v;
  });
}

template <typename T>
void adaptive_max_pool2d_forward(const Pool2dParams& p, const T* x, T* y, std::int64_t* idx) {
  adaptive_bins(p, [&](i64 pl, i64 o, i64 h0, i64 h1, i64 w0, i64 w1) {
    window_max(x + pl * p.H * p.W, p.W, h0, h1, 1, w0, w1, 1, y + o, idx ? idx + o : nullptr);
  });
}

#define PYCONV_POOL_INSTANTIATE(T)                                                                 \
  template void max_pool2d_forward<T>(const Pool2dParams&, const T*, T*, std::int64_t*);           \
  template bool max_pool2d_backward<T>(const Pool2dParams&, const T*, const std::int64_t*, T*);    \
  template void avg_pool2d_forward<T>(const Pool2dParams&, bool, i64, const T*, T*);              \
  template void avg_pool2d_backward<T>(const Pool2dParams&, bool, i64, const T*, T*);             \
  template void adaptive_avg_pool2d_forward<T>(const Pool2dParams&, const T*, T*);                \
  template void adaptive_avg_pool2d_backward<T>(const Pool2dParams&, const T*, T*);               \
  template void adaptive_max_pool2d_forward<T>(const Pool2dParams&, const T*, T*, std::int64_t*);
PYCONV_POOL_INSTANTIATE(float)
PYCONV_POOL_INSTANTIATE(double)

}  // namespace pyconv
