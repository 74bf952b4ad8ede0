// conv2d.cpp - conv2d forward / backward-data / backward-weight as im2col +
// GEMM (Caffe's formulation), with a 1x1 shortcut that runs the GEMM straight
// on the NCHW rows.
//
// Scratch is bounded: the column buffer covers a band of output rows of at
// most kColCap elements (or one row if a single row is larger), so a large
// batch or image never allocates N x the column matrix.
//
// Threading: when one image is little work, images are processed in parallel
// (each thread with its own column buffer and a serial GEMM); otherwise images
// run in order and the GEMM / im2col parallelise inside. Backward-weight
// reduces over the batch in chunks whose boundaries depend only on the shape,
// folded in a fixed order, so results are bit-identical for any thread count.
#include "ops/conv2d.h"

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#else
inline int omp_get_thread_num() { return 0; }
#endif

#include "cpu/cpuinfo.h"
#include "cpu/parallel.h"
#include "gemm/gemm.h"
#include "ops/depthwise.h"
#include "ops/im2col.h"
#include "ops/plane.h"
#include "ops/stream_store.h"
#include "ops/winograd.h"

namespace pyconv {
namespace {

constexpr i64 kColCap = i64(1) << 22;  // column-buffer elements per band
// Below this many flops per image, parallelise over images instead.
constexpr double kPerImageSerial = 4.0e6;

struct Scratch {
  std::vector<AlignedBuffer> bufs;
  template <typename T>
  T* get(std::size_t idx, i64 elems) {
    if (bufs.size() <= idx) bufs.resize(idx + 1);
    return static_cast<T*>(bufs[idx].reserve(checked_bytes(elems, 1, sizeof(T))));
  }
};
thread_local Scratch t_scratch;  // owned by the calling (Python) thread
thread_local AlignedBuffer t_weights;  // transformed weights (backward-data)

i64 band_rows(const Conv2dParams& p) {
  const i64 per_row = p.C * p.KH * p.KW * p.OW;
  return std::max<i64>(1, std::min<i64>(p.OH, kColCap / std::max<i64>(per_row, 1)));
}

// y_n = W * im2col(x_n) for one image, with B packed straight from the image
// (implicit GEMM: no column buffer). gemm_threads is 1 inside a parallel
// loop over images. p may carry negative padding (backward-data uses it).
template <typename T>
void forward_image(const Conv2dParams& p, const T* xn, const T* w, T* yn, int gemm_threads) {
  const i64 K = p.K(), OCg = p.OCg(), OHW = p.OHW();
  const GemmKernel<T>& kern = active_gemm_kernel<T>();
  for (i64 g = 0; g < p.G; ++g) {
    const T* xg = xn + g * p.Cg() * p.H * p.W;
    const T* wg = w + g * OCg * K;
    T* yg = yn + g * OCg * OHW;
    if (p.is_pointwise()) {
      gemm<T>(kern, OCg, OHW, K, wg, K, 1, xg, OHW, 1, T(0), yg, OHW, gemm_threads);
    } else {
      const Im2colB<T> src{&p, xg};
      gemm_packed_b<T>(kern, OCg, OHW, K, wg, K, 1, BPacker<T>{&im2col_pack_b<T>, &src}, T(0), yg,
                       OHW, gemm_threads);
    }
  }
}

// dx_n = col2im(W^T * dy_n) for one image (dx_n fully overwritten).
template <typename T>
void backward_data_image(const Conv2dParams& p, const T* dyn, const T* w, T* dxn, T* col,
                         i64 rows, int gemm_threads, int col_threads) {
  const i64 K = p.K(), OCg = p.OCg(), OHW = p.OHW();
  if (p.is_pointwise()) {
    for (i64 g = 0; g < p.G; ++g)  // dx_g[K x HW] = W_g^T[K x OCg] * dy_g[OCg x HW]
      gemm<T>(K, OHW, OCg, w + g * OCg * K, 1, K, dyn + g * OCg * OHW, OHW, 1, T(0),
              dxn + g * K * OHW, OHW, gemm_threads);
    return;
  }
  std::fill(dxn, dxn + p.C * p.H * p.W, T(0));
  for (i64 oy0 = 0; oy0 < p.OH; oy0 += rows) {
    const i64 oy1 = std::min(p.OH, oy0 + rows), L = (oy1 - oy0) * p.OW;
    for (i64 g = 0; g < p.G; ++g)
      gemm<T>(K, L, OCg, w + g * OCg * K, 1, K, dyn + g * OCg * OHW + oy0 * p.OW, OHW, 1, T(0),
              col + g * K * L, L, gemm_threads);
    col2im_rows(p, col, L, oy0, oy1, dxn, col_threads);
  }
}

template <typename T>
void add_bias(const Conv2dParams& p, const T* b, T* y) {
  const i64 OHW = p.OHW(), planes = p.N * p.OC;
  const int nt = threads_for(double(planes) * OHW * sizeof(T), 1.0e6);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (i64 i = 0; i < planes; ++i) {
    const T bv = b[i % p.OC];
    T* yp = y + i * OHW;
    for (i64 j = 0; j < OHW; ++j) yp[j] += bv;
  }
}

// Runs fn(n, col, gemm_threads, col_threads) over images: in parallel across
// images when one image is little work, else in order with parallelism inside.
// `scratch_elems` is the column buffer each concurrently running image needs.
template <typename T, typename Fn>
void for_each_image(const Conv2dParams& p, double flops_per_image, i64 scratch_elems, Fn fn) {
  // Whole images per thread (one parallel region for the op, dynamic so a
  // thread that loses its core does not stall the rest) when one image is
  // little work or there are enough images to go round.
  const int nt_all = threads_for(flops_per_image * p.N, 4.0e5);
  const bool by_image = p.N >= 2 && (flops_per_image < kPerImageSerial || p.N >= 2 * nt_all);
  const int nt_img = by_image ? (int)std::min<i64>(p.N, nt_all) : 1;
  Scratch& s = t_scratch;
  if (nt_img <= 1) {
    T* col = scratch_elems ? s.get<T>(0, scratch_elems) : nullptr;
    for (i64 n = 0; n < p.N; ++n) fn(n, col, 0, 0);
    return;
  }
  std::vector<T*> cols(nt_img, nullptr);  // allocated outside the parallel region
  for (int t = 0; t < nt_img; ++t)
    if (scratch_elems) cols[t] = s.get<T>(t, scratch_elems);
  ExceptionCapture capture;
#pragma omp parallel num_threads(nt_img)
  {
    T* col = cols[omp_get_thread_num()];
#pragma omp for schedule(dynamic, 1)
    for (i64 n = 0; n < p.N; ++n) capture.run([&] { fn(n, col, 1, 1); });
  }
  capture.rethrow();
}

// ---- convolution over the shifted rows of padded (phase) planes -----------
// Stride 1: with the image padded to Hp x Wp (Hp = OH + DH*(KH-1), Wp = OW +
// DW*(KW-1)), the im2col row of tap (c, ky, kx) is the padded plane shifted
// by c*Hp*Wp + ky*DH*Wp + kx*DW, read over "wide" columns j = oy*Wp + ox.
// The GEMM reads those rows in place (no packing); the Wp - OW columns per
// row that wrap around are computed and dropped when the result is compacted.
// Stride S > 1: the padded image is split into SH x SW phase planes, phase
// (a, b) holding padded rows a, a + SH, ... and columns b, b + SW, ...; tap
// (ky, kx) then reads phase ((ky*DH) % SH, (kx*DW) % SW) shifted by
// ((ky*DH) / SH, (kx*DW) / SW), a plain stride-1 tap again (7x7 stride-2
// stem: 4 phases of 115 x 115 for a 112 x 112 output).
struct WideGeom {
  i64 SH, SW;            // phases per axis (the strides)
  i64 Hp, Wp, n, plane;  // one phase plane; n: wide columns (OH-1)*Wp + OW
  i64 phases() const { return SH * SW; }
};

inline WideGeom wide_geom(const Conv2dParams& p) {
  WideGeom g;
  g.SH = p.SH;
  g.SW = p.SW;
  g.Hp = p.OH + p.DH * (p.KH - 1) / p.SH;
  g.Wp = p.OW + p.DW * (p.KW - 1) / p.SW;
  g.n = (p.OH - 1) * g.Wp + p.OW;
  g.plane = g.Hp * g.Wp;
  return g;
}

// Where tap (ky, kx) starts within a channel's phase planes (phase_stride
// apart): its phase plane plus its shift.
inline i64 tap_offset(const Conv2dParams& p, const WideGeom& g, i64 ky, i64 kx, i64 phase_stride) {
  const i64 ry = ky * p.DH, rx = kx * p.DW;
  return ((ry % g.SH) * g.SW + rx % g.SW) * phase_stride + (ry / g.SH) * g.Wp + rx / g.SW;
}

// Offsets of all K = Cg*KH*KW taps (c, ky, kx): c * chan_stride plus
// tap_offset with the given phase stride.
inline std::vector<i64> tap_offsets(const Conv2dParams& p, const WideGeom& g, i64 chan_stride,
                                    i64 phase_stride) {
  std::vector<i64> off(p.K());
  for (i64 c = 0, q = 0; c < p.Cg(); ++c)
    for (i64 ky = 0; ky < p.KH; ++ky)
      for (i64 kx = 0; kx < p.KW; ++kx)
        off[q++] = c * chan_stride + tap_offset(p, g, ky, kx, phase_stride);
  return off;
}

// Every phase plane is read by some tap (else the split copies planes that
// nothing uses: a 1x1 stride-2 conv reads a quarter of the image).
inline bool phases_all_used(const Conv2dParams& p) {
  auto covers = [](i64 K, i64 D, i64 S) {
    if (K < S) return false;
    std::vector<bool> seen(S, false);
    for (i64 k = 0; k < K; ++k) seen[(k * D) % S] = true;
    return std::all_of(seen.begin(), seen.end(), [](bool b) { return b; });
  };
  return p.SH <= 8 && p.SW <= 8 && covers(p.KH, p.DH, p.SH) && covers(p.KW, p.DW, p.SW);
}

// The wide and padded-row paths allocate whole padded (phase) planes: only
// for geometries whose planes are sane (absurd paddings or dilations take the
// im2col paths, whose scratch is bounded, instead of overflowing Hp * Wp).
// The bound is on all C * SH * SW phase planes of one image.
inline bool wide_fits(const Conv2dParams& p) {
  constexpr i64 kSide = i64(1) << 20;
  const i64 hp = p.OH + p.DH * (p.KH - 1), wp = p.OW + p.DW * (p.KW - 1);
  if (!(p.OH < kSide && p.OW < kSide && p.DH < kSide && p.DW < kSide && p.KH < kSide &&
        p.KW < kSide && p.SH < kSide && p.SW < kSide && hp < kSide && wp < kSide && p.C < kSide))
    return false;
  const WideGeom g = wide_geom(p);
  return double(p.C) * double(g.phases()) * double(g.plane) < double(i64(1) << 34);
}

// Worth it when most wide columns are real outputs, and the reduction is
// long enough to amortise the compaction (for K < 32 the padded-row packer
// below wins).
inline bool use_wide(const Conv2dParams& p) {
  return wide_fits(p) && !p.is_pointwise() && phases_all_used(p) && p.K() >= 32 &&
         2 * p.OW >= wide_geom(p).Wp;
}

// y[oy][ox] = wide[oy*Wp + ox] + bias for one output plane.
template <typename T>
void compact_plane(const T* __restrict wide, i64 Wp, i64 OH, i64 OW, T bias, T* __restrict y) {
  for (i64 oy = 0; oy < OH; ++oy) {
    const T* s = wide + oy * Wp;
    T* d = y + oy * OW;
    for (i64 ox = 0; ox < OW; ++ox) d[ox] = s[ox] + bias;
  }
}

// Whether the forward GEMM stores its wide columns straight into the output
// planes (WideColumns) instead of into a wide buffer compacted afterwards.
// Register tiles that cross a row end take a slower edge path, about
// (NR + Wp - OW) / Wp of them: worth it on wide maps (the 7x7 stem's 112
// columns: ~15% faster), not on narrow ones (32 columns: ~3% slower).
// Tiled row by row (wide_row_panels: no tile crosses a row end), direct
// stores always pay.
inline bool wide_direct(const WideGeom& g, i64 OW, int NR) {
  return 4 * (NR + g.Wp - OW) <= g.Wp || wide_row_panels(WideColumns{g.Wp, OW}, g.n, NR);
}

constexpr i64 kWideSlack = 64;  // the kernels over-read up to one tile past n

// The first j >= 0 with j * S + off >= lo_bound, clamped to [0, n].
inline i64 first_at_least(i64 lo_bound, i64 off, i64 S, i64 n) {
  const i64 d = lo_bound - off;
  return std::min(n, d <= 0 ? i64(0) : (d + S - 1) / S);
}

// The phase planes of x[C][H][W]: plane (c, a, b) at pad + c * chan_stride +
// (a * SW + b) * phase_stride holds padded rows a + i*SH, columns b + j*SW.
// Padding may be negative (crop; stride 1 only, from backward-data).
// nthreads as for im2col (1: serial, inside an outer parallel loop). With
// rows >= 0, only phase-plane rows [row0, row0 + rows) are written (a band).
template <typename T>
void pad_image(const Conv2dParams& p, const WideGeom& g, const T* x, T* pad, i64 chan_stride,
               i64 phase_stride, int nthreads = 1, i64 row0 = 0, i64 rows = -1) {
  if (rows < 0) rows = g.Hp;
  const i64 planes = p.C * g.phases();
  const int nt = nthreads == 1 ? 1 : threads_for(double(planes) * rows * g.Wp * sizeof(T), 1.0e6);
  bool (*split2)(const T*, i64, T*, T*, bool) = nullptr;  // SIMD even / odd split
  if constexpr (std::is_same_v<T, float>)
    if (const PlaneF32* k = plane_f32()) split2 = k->split2;
  if (g.SW == 2 && split2) {
    // Phases (a, 0) and (a, 1) from one pass over each source row: the
    // phase whose columns start at an even ix takes the even elements.
    // ix = j * 2 + b - PL lies in [0, W) for j in [lo[b], hi[b]); its first
    // ix is 0 or 1 (PL >= 0 with stride 2), and the two phases' counts differ
    // by at most one, the even one's the larger: one run of their sum.
    i64 lo[2], hi[2];
    for (int b = 0; b < 2; ++b) {
      lo[b] = first_at_least(0, b - p.PL, 2, g.Wp);
      hi[b] = std::max(lo[b], first_at_least(p.W, b - p.PL, 2, g.Wp));
    }
    const int be = int(p.PL % 2);  // the phase of even ix
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (i64 q = 0; q < planes / 2; ++q) {
      const i64 c = q / g.SH, a = q % g.SH;
      T* pl[2];
      for (int b = 0; b < 2; ++b) pl[b] = pad + c * chan_stride + (a * 2 + b) * phase_stride;
      for (i64 i = 0; i < rows; ++i) {
        T* d[2] = {pl[0] + i * g.Wp, pl[1] + i * g.Wp};
        const i64 iy = (row0 + i) * g.SH + a - p.PT;
        if (iy < 0 || iy >= p.H) {
          for (int b = 0; b < 2; ++b) std::fill(d[b], d[b] + g.Wp, T(0));
          continue;
        }
        for (int b = 0; b < 2; ++b) {
          std::fill(d[b], d[b] + lo[b], T(0));
          std::fill(d[b] + hi[b], d[b] + g.Wp, T(0));
        }
        split2(x + (c * p.H + iy) * p.W, hi[0] - lo[0] + hi[1] - lo[1], d[be] + lo[be],
               d[1 - be] + lo[1 - be], false);
      }
    }
    return;
  }
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (i64 q = 0; q < planes; ++q) {
    const i64 c = q / g.phases(), a = q % g.phases() / g.SW, b = q % g.SW;
    T* plane = pad + c * chan_stride + (a * g.SW + b) * phase_stride;
    // ix = j*SW + b - PL lies in [0, W) for j in [lo, hi)
    const i64 lo = first_at_least(0, b - p.PL, g.SW, g.Wp);
    const i64 hi = std::max(lo, first_at_least(p.W, b - p.PL, g.SW, g.Wp));
    for (i64 i = 0; i < rows; ++i) {
      T* d = plane + i * g.Wp;
      const i64 iy = (row0 + i) * g.SH + a - p.PT;
      if (iy < 0 || iy >= p.H) {
        std::fill(d, d + g.Wp, T(0));
        continue;
      }
      const T* s = x + (c * p.H + iy) * p.W + b - p.PL;  // s[j * SW] = x[iy][ix]
      std::fill(d, d + lo, T(0));
      if (g.SW == 1)
        std::copy(s + lo, s + hi, d + lo);
      else
        for (i64 j = lo; j < hi; ++j) d[j] = s[j * g.SW];
      std::fill(d + hi, d + g.Wp, T(0));
    }
  }
}

// kern and direct (wide_direct) are the caller's, decided once per call: the
// scratch was sized for them (set_isa may switch the kernel meanwhile).
// wide: the wide buffer (OCg x OH*Wp), unused when direct.
template <typename T>
void forward_image_wide(const Conv2dParams& p, const WideGeom& g, const GemmKernel<T>& kern,
                        bool direct, const i64* boff, const T* xn, const T* w, const T* b, T* yn,
                        T* pad, T* wide, int gemm_threads) {
  const i64 K = p.K(), OCg = p.OCg(), Cg = p.Cg(), OHW = p.OHW(), ldw = p.OH * g.Wp;
  const i64 cs = g.phases() * g.plane;  // elements per channel
  pad_image(p, g, xn, pad, cs, g.plane, gemm_threads);
  std::fill(pad + p.C * cs, pad + p.C * cs + kWideSlack, T(0));
  if (direct) {
    if (b) {  // the products are added to the bias (beta = 1)
      const int nt = gemm_threads == 1 ? 1 : threads_for(double(p.OC) * OHW * sizeof(T), 1.0e6);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
      for (i64 oc = 0; oc < p.OC; ++oc) std::fill(yn + oc * OHW, yn + (oc + 1) * OHW, b[oc]);
    }
    const WideColumns wc{g.Wp, p.OW};
    for (i64 gi = 0; gi < p.G; ++gi)
      gemm_rows<T>(kern, OCg, g.n, K, w + gi * OCg * K, K, 1, pad + gi * Cg * cs, boff,
                   b ? T(1) : T(0), yn + gi * OCg * OHW, OHW, gemm_threads, &wc);
    return;
  }
  const int nt = gemm_threads == 1 ? 1 : threads_for(double(OCg) * ldw * 2 * sizeof(T), 1.0e6);
  for (i64 gi = 0; gi < p.G; ++gi) {
    gemm_rows<T>(kern, OCg, g.n, K, w + gi * OCg * K, K, 1, pad + gi * Cg * cs, boff, T(0),
                 wide, ldw, gemm_threads);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (i64 o = 0; o < OCg; ++o) {
      const i64 oc = gi * OCg + o;
      compact_plane(wide + o * ldw, g.Wp, p.OH, p.OW, b ? b[oc] : T(0), yn + oc * OHW);
    }
  }
}

// B packed from the padded (phase) planes of one image: column j is output
// (oy, ox) = (j / OW, j % OW), row q is tap boff[q], so B[q][j] =
// pad[boff[q] + oy * Wp + ox]. A panel's columns are one or a few runs
// along output rows, each a contiguous copy from a shifted plane row (no
// per-element index arithmetic, unlike the im2col packer).
template <typename T>
struct PaddedRowsB {
  const T* pad;
  const i64* boff;
  i64 Wp, OW;
  static void pack(const void* ctx, i64 p0, i64 kc, i64 j0, i64 nc, int NR, T* dst) {
    const PaddedRowsB& s = *static_cast<const PaddedRowsB*>(ctx);
    struct Run {
      i64 off, t, len;
    };
    Run runs[64];
    for (i64 jp = 0; jp < nc; jp += NR, dst += kc * NR) {
      const i64 nr = std::min<i64>(NR, nc - jp);
      int nruns = 0;
      for (i64 t = 0, j = j0 + jp; t < nr;) {
        const i64 oy = j / s.OW, ox = j - oy * s.OW, len = std::min(nr - t, s.OW - ox);
        runs[nruns++] = Run{oy * s.Wp + ox, t, len};
        t += len;
        j += len;
      }
      for (i64 q = 0; q < kc; ++q) {
        const T* src = s.pad + s.boff[p0 + q];
        T* d = dst + q * NR;
        if (nruns == 1 && nr == NR && NR == 16) {
          std::memcpy(d, src + runs[0].off, 16 * sizeof(T));
          continue;
        }
        for (int r = 0; r < nruns; ++r) std::memcpy(d + runs[r].t, src + runs[r].off, runs[r].len * sizeof(T));
        std::fill(d + nr, d + NR, T(0));
      }
    }
  }
};

// A short-reduction forward (1-3 input channels) writes far more than it
// reads or computes: with an output of kStreamOutputBytes or more, each
// image's product goes to a cache-resident stage and then to y by
// non-temporal stores (stream_store.h), which saves reading every output
// line before writing it (the 1-channel MNIST layer on 2 threads ran at the
// write bandwidth: +61%).
template <typename T>
inline bool stream_output(const Conv2dParams& p) {
  return double(p.N) * p.OC * p.OHW() * sizeof(T) >= kStreamOutputBytes;
}

// y_n = W * B for one image with B packed from its padded planes (the
// shapes the wide path declines: reductions under 32, such as 1- or
// 3-channel first layers, or maps where most wide columns would be dropped,
// such as large dilations); through `stage` when not null (see above).
template <typename T>
void forward_image_padded(const Conv2dParams& p, const WideGeom& g, const i64* boff, const T* xn,
                          const T* w, T* yn, T* pad, T* stage, int gemm_threads) {
  const i64 K = p.K(), OCg = p.OCg(), Cg = p.Cg(), OHW = p.OHW();
  const i64 cs = g.phases() * g.plane;
  const GemmKernel<T>& kern = active_gemm_kernel<T>();
  pad_image(p, g, xn, pad, cs, g.plane, gemm_threads);
  for (i64 gi = 0; gi < p.G; ++gi) {
    const PaddedRowsB<T> src{pad + gi * Cg * cs, boff, g.Wp, p.OW};
    T* out = stage ? stage : yn + gi * OCg * OHW;
    gemm_packed_b<T>(kern, OCg, OHW, K, w + gi * OCg * K, K, 1, BPacker<T>{&PaddedRowsB<T>::pack, &src},
                     T(0), out, OHW, gemm_threads);
    if (stage) stream_copy(stage, yn + gi * OCg * OHW, OCg * OHW);
  }
  if (stage) stream_fence();
}

// ---- small output planes: several images per GEMM -------------------------
// With few output positions per image, a per-image GEMM re-packs the whole
// weight matrix for little work (ResNet's 7x7 layers: 9.4 MB of weights per
// 49 columns). Here one GEMM covers a chunk of nb images side by side:
// forward packs B from the images directly, backward-data goes through
// col[Ktot][nb*OHW] and col2im.
// (One image too, except 1x1, whose plain GEMM on the rows needs no copies.)
inline bool use_batched(const Conv2dParams& p) {
  return p.OHW() < 100 && (p.N > 1 || !p.is_pointwise());
}

// Threads for the copies around a batched GEMM (im2col, col2im), sized by
// the GEMM's work: on their own the copies look too small to share.
inline int batched_copy_threads(const Conv2dParams& p, i64 K, i64 L) {
  return threads_for(2.0 * double(p.OC) * K * L, 2.0e5);
}

inline i64 batch_chunk(const Conv2dParams& p) {
  const i64 per_image = (p.C * p.KH * p.KW + p.OC) * p.OHW();
  return std::max<i64>(1, std::min<i64>(p.N, kColCap / std::max<i64>(per_image, 1)));
}

template <typename T>
void forward_batched(const Conv2dParams& p, const T* x, const T* w, const T* b, T* y) {
  const i64 nb = batch_chunk(p), OHW = p.OHW(), K = p.K(), OCg = p.OCg();
  const i64 xs = p.C * p.H * p.W;
  T* out = t_scratch.get<T>(1, p.OC * nb * OHW);
  const GemmKernel<T>& kern = active_gemm_kernel<T>();
  for (i64 n0 = 0; n0 < p.N; n0 += nb) {
    const i64 cnt = std::min(nb, p.N - n0), L = cnt * OHW;
    const int nt = threads_for(double(p.OC) * L * sizeof(T), 1.0e6);
    if (gemm_swaps(kern.mr, kern.nr, OCg, L, K)) {
      // Few columns (one 7x7 map): gemm() computes y^T = col^T W^T, which
      // wastes far less of its register tiles; it needs col materialised.
      T* col = t_scratch.get<T>(0, p.C * p.KH * p.KW * L);
      const int ct = batched_copy_threads(p, K, L);
      for (i64 i = 0; i < cnt; ++i) im2col_rows(p, x + (n0 + i) * xs, 0, p.OH, col + i * OHW, L, ct);
      for (i64 g = 0; g < p.G; ++g)
        gemm<T>(kern, OCg, L, K, w + g * OCg * K, K, 1, col + g * K * L, L, 1, T(0),
                out + g * OCg * L, L);
    } else {
      for (i64 g = 0; g < p.G; ++g) {  // B packed straight from the chunk's images
        const Im2colB<T> src{&p, x + n0 * xs + g * p.Cg() * p.H * p.W, xs};
        gemm_packed_b<T>(kern, OCg, L, K, w + g * OCg * K, K, 1,
                         BPacker<T>{&im2col_pack_b<T>, &src}, T(0), out + g * OCg * L, L);
      }
    }
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (i64 r = 0; r < cnt * p.OC; ++r) {
      const i64 i = r / p.OC, oc = r % p.OC;
      const T bv = b ? b[oc] : T(0);
      const T* s = out + oc * L + i * OHW;
      T* d = y + ((n0 + i) * p.OC + oc) * OHW;
      for (i64 j = 0; j < OHW; ++j) d[j] = s[j] + bv;
    }
  }
}

template <typename T>
void backward_data_batched(const Conv2dParams& p, const T* dy, const T* w, T* dx) {
  const i64 nb = batch_chunk(p), OHW = p.OHW(), K = p.K(), OCg = p.OCg();
  const i64 Ktot = p.C * p.KH * p.KW, xs = p.C * p.H * p.W;
  T* col = t_scratch.get<T>(0, Ktot * nb * OHW);
  T* dyc = t_scratch.get<T>(1, p.OC * nb * OHW);
  const GemmKernel<T>& kern = active_gemm_kernel<T>();
  for (i64 n0 = 0; n0 < p.N; n0 += nb) {
    const i64 cnt = std::min(nb, p.N - n0), L = cnt * OHW;
    const int nt = threads_for(double(Ktot) * L * sizeof(T), 1.0e6);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (i64 r = 0; r < cnt * p.OC; ++r) {
      const i64 i = r / p.OC, oc = r % p.OC;
      const T* s = dy + ((n0 + i) * p.OC + oc) * OHW;
      std::copy(s, s + OHW, dyc + oc * L + i * OHW);
    }
    for (i64 g = 0; g < p.G; ++g)  // dcol_g[K x L] = W_g^T[K x OCg] * dy_g[OCg x L]
      gemm<T>(kern, K, L, OCg, w + g * OCg * K, 1, K, dyc + g * OCg * L, L, 1, T(0), col + g * K * L,
              L);
    // Images in parallel, or, with fewer images than threads (one 7x7 map at
    // batch 1), each image's channels.
    // (Not one region with an if clause: a region nested in even an inactive
    // one gets a fresh thread team per call.)
    const int ct = batched_copy_threads(p, K, L);
    auto scatter = [&](i64 i, int threads) {
      T* dxn = dx + (n0 + i) * xs;
      std::fill(dxn, dxn + xs, T(0));
      col2im_rows(p, col + i * OHW, L, 0, p.OH, dxn, threads);
    };
    if (cnt >= ct) {
#pragma omp parallel for num_threads(ct) schedule(static) if (ct > 1)
      for (i64 i = 0; i < cnt; ++i) scatter(i, 1);
    } else {
      for (i64 i = 0; i < cnt; ++i) scatter(i, ct);
    }
  }
}

// Forward over the batch (b may be null). p may carry negative padding.
template <typename T>
void forward_all(const Conv2dParams& p, const T* x, const T* w, const T* b, T* y) {
  if (use_batched(p) && p.PT >= 0 && p.PL >= 0) return forward_batched(p, x, w, b, y);
  const double flops = 2.0 * p.OC * p.K() * p.OHW();
  const i64 xs = p.C * p.H * p.W, ys = p.OC * p.OHW();
  if (use_wide(p)) {
    const WideGeom g = wide_geom(p);
    const i64 cs = g.phases() * g.plane;
    const std::vector<i64> boff = tap_offsets(p, g, cs, g.plane);
    const i64 pad_elems = p.C * cs + kWideSlack;
    const i64 pad_alloc = (pad_elems + 15) & ~i64(15);
    const GemmKernel<T>& kern = active_gemm_kernel<T>();
    const bool direct = wide_direct(g, p.OW, kern.nr);
    const i64 wide_elems = direct ? 0 : p.OCg() * p.OH * g.Wp;
    for_each_image<T>(p, flops, pad_alloc + wide_elems, [&](i64 n, T* buf, int gt, int) {
      forward_image_wide(p, g, kern, direct, boff.data(), x + n * xs, w, b, y + n * ys, buf,
                         buf + pad_alloc, gt);
    });
    return;
  }
  if (!p.is_pointwise() && p.PT >= 0 && p.PL >= 0 && wide_fits(p) && phases_all_used(p)) {
    const WideGeom g = wide_geom(p);
    const i64 cs = g.phases() * g.plane;
    const std::vector<i64> boff = tap_offsets(p, g, cs, g.plane);
    // Staged only while images run on parallel threads (gt == 1), which
    // share the write bandwidth: one thread alone is bound by the GEMM's
    // stores, not the bandwidth, and the extra copy cost it 6-21%.
    const i64 pad_elems = (p.C * cs + 15) / 16 * 16;
    const i64 stage_elems = stream_output<T>(p) ? p.OCg() * p.OHW() : 0;
    for_each_image<T>(p, flops, pad_elems + stage_elems, [&](i64 n, T* buf, int gt, int) {
      T* stage = stage_elems && gt == 1 ? buf + pad_elems : nullptr;
      forward_image_padded(p, g, boff.data(), x + n * xs, w, y + n * ys, buf, stage, gt);
    });
  } else {
    for_each_image<T>(p, flops, 0, [&](i64 n, T*, int gt, int) {
      forward_image(p, x + n * xs, w, y + n * ys, gt);
    });
  }
  if (b) add_bias(p, b, y);
}

}  // namespace

namespace {

thread_local AlignedBuffer t_phase_a, t_phase_b;  // dilated Winograd: split planes

// a [N][C][H][W] <-> s [N][D][D][C][H/D][W/D]: s[n][by][bx][c][i][j] =
// a[n][c][i*D + by][j*D + bx]. split copies a -> s, merge s -> a.
void phase_copy(bool split, i64 N, i64 C, i64 H, i64 W, i64 D, const float* src, float* dst) {
  const i64 h = H / D, w = W / D;
  const int nt = threads_for(double(N) * C * H * W * 4, 1.0e6);
#pragma omp parallel for num_threads(nt) schedule(static) collapse(2) if (nt > 1)
  for (i64 n = 0; n < N; ++n)
    for (i64 c = 0; c < C; ++c)
      for (i64 by = 0; by < D; ++by)
        for (i64 bx = 0; bx < D; ++bx) {
          const i64 plane = ((n * D + by) * D + bx) * C + c;
          for (i64 i = 0; i < h; ++i) {
            const i64 arow = ((n * C + c) * H + i * D + by) * W + bx, srow = (plane * h + i) * w;
            if (split)
              for (i64 j = 0; j < w; ++j) dst[srow + j] = src[arow + j * D];
            else
              for (i64 j = 0; j < w; ++j) dst[arow + j * D] = src[srow + j];
          }
        }
}

// Winograd's kernels need AVX2+FMA (and an active ISA other than 'ref').
bool winograd_isa() {
#if defined(PYCONV_X86)
  return active_isa() != Isa::ref && cpu_supports(Isa::avx2);
#else
  return false;
#endif
}

}  // namespace

#if defined(PYCONV_X86)
bool winograd_forward_f32(const Conv2dParams& p, const float* x, const float* w, const float* b,
                          float* y, bool w_flipped) {
  if (!winograd_isa()) return false;
  if (winograd_shape(p)) return winograd_forward_f32_avx2(p, x, w, b, y, w_flipped);
  const Conv2dParams s = winograd_phase_problem(p);
  const i64 D = p.DH;
  float* xs = static_cast<float*>(t_phase_a.reserve(checked_bytes(p.N * p.C, p.H * p.W, 4)));
  float* ys = static_cast<float*>(t_phase_b.reserve(checked_bytes(p.N * p.OC, p.OH * p.OW, 4)));
  phase_copy(true, p.N, p.C, p.H, p.W, D, x, xs);
  if (!winograd_forward_f32_avx2(s, xs, w, b, ys, w_flipped)) return false;
  phase_copy(false, p.N, p.OC, p.OH, p.OW, D, ys, y);
  return true;
}

bool winograd_backward_weight_f32(const Conv2dParams& p, const float* dy, const float* x,
                                  float* dw) {
  if (!winograd_isa()) return false;
  if (winograd_shape(p)) return winograd_backward_weight_f32_avx2(p, dy, x, dw);
  const Conv2dParams s = winograd_phase_problem(p);
  const i64 D = p.DH;
  float* xs = static_cast<float*>(t_phase_a.reserve(checked_bytes(p.N * p.C, p.H * p.W, 4)));
  float* dys = static_cast<float*>(t_phase_b.reserve(checked_bytes(p.N * p.OC, p.OH * p.OW, 4)));
  phase_copy(true, p.N, p.C, p.H, p.W, D, x, xs);
  phase_copy(true, p.N, p.OC, p.OH, p.OW, D, dy, dys);
  return winograd_backward_weight_f32_avx2(s, dys, xs, dw);
}
#else
bool winograd_forward_f32(const Conv2dParams&, const float*, const float*, const float*, float*,
                          bool) {
  return false;
}
bool winograd_backward_weight_f32(const Conv2dParams&, const float*, const float*, float*) {
  return false;
}
#endif

namespace {
// Direct loops for tiny problems (g_conv_direct_max). Taps in the padding
// multiply an explicit zero, so an inf or NaN weight there gives NaN as on
// every other path (and in PyTorch); the bias is added last, as elsewhere.
template <typename T>
void forward_direct(const Conv2dParams& p, const T* x, const T* w, const T* b, T* y) {
  const i64 Cg = p.Cg(), OCg = p.OCg(), KK = p.KH * p.KW;
  for (i64 n = 0; n < p.N; ++n)
    for (i64 oc = 0; oc < p.OC; ++oc) {
      const T* xg = x + (n * p.C + oc / OCg * Cg) * p.H * p.W;
      const T* wo = w + oc * Cg * KK;
      T* yo = y + (n * p.OC + oc) * p.OHW();
      for (i64 oy = 0; oy < p.OH; ++oy)
        for (i64 ox = 0; ox < p.OW; ++ox) {
          T acc = 0;
          for (i64 c = 0; c < Cg; ++c)
            for (i64 ky = 0; ky < p.KH; ++ky) {
              const i64 iy = oy * p.SH - p.PT + ky * p.DH;
              const bool row_in = iy >= 0 && iy < p.H;
              for (i64 kx = 0; kx < p.KW; ++kx) {
                const i64 ix = ox * p.SW - p.PL + kx * p.DW;
                const T v = row_in && ix >= 0 && ix < p.W ? xg[(c * p.H + iy) * p.W + ix] : T(0);
                acc += v * wo[c * KK + ky * p.KW + kx];
              }
            }
          yo[oy * p.OW + ox] = b ? acc + b[oc] : acc;
        }
    }
}
}  // namespace

template <typename T>
void conv2d_forward(const Conv2dParams& p, const T* x, const T* w, const T* b, T* y) {
  p.validate();
  if (double(p.N) * p.OC * p.OHW() * p.K() <=
      double(g_conv_direct_max.load(std::memory_order_relaxed)))
    return forward_direct(p, x, w, b, y);
  if (is_depthwise(p)) return depthwise_forward(p, x, w, b, y);
  if constexpr (std::is_same_v<T, float>)
    if (g_winograd_enabled.load(std::memory_order_relaxed) && winograd_any(p) &&
        winograd_forward_f32(p, x, w, b, y))
      return;
  forward_all(p, x, w, b, y);
}

// The flipped, group-transposed weights of backward-data as a forward
// convolution: wt[g][c][o][KK-1-t] = w[g][o][c][t].
template <typename T>
const T* transposed_weights(const Conv2dParams& p, const T* w) {
  const i64 Cg = p.Cg(), OCg = p.OCg(), KK = p.KH * p.KW;
  // Kept between calls (page faults on a fresh 9 MB buffer cost more than
  // the transpose); not zero-filled: every element is written below.
  T* wt = static_cast<T*>(t_weights.reserve(checked_bytes(p.OC * Cg, KK, sizeof(T))));
  // Blocks of 64 x 8 (c, o) filters: each o reads a 64-filter run of w
  // (prefetched a block ahead), each c writes an 8-filter run of wt (either
  // loop order alone strides through all of one array). A plain copy:
  // threads split it.
  constexpr i64 BC = 64, BO = 8;
  const i64 cb = (Cg + BC - 1) / BC, ob = (OCg + BO - 1) / BO;
  const int nt = threads_for(double(p.OC) * Cg * KK * sizeof(T), 1.0e6);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (i64 blk = 0; blk < p.G * cb * ob; ++blk) {
    const i64 g = blk / (cb * ob), c0 = (blk / ob) % cb * BC, o0 = blk % ob * BO;
    const i64 c1 = std::min(Cg, c0 + BC), o1 = std::min(OCg, o0 + BO);
    if (o1 + BO <= OCg)  // the next block's rows of w
      for (i64 o = o1; o < o1 + BO; ++o) {
        const char* r = reinterpret_cast<const char*>(w + ((g * OCg + o) * Cg + c0) * KK);
        for (i64 b = 0; b < (c1 - c0) * KK * i64(sizeof(T)); b += 64) __builtin_prefetch(r + b);
      }
    for (i64 c = c0; c < c1; ++c) {
      T* d = wt + ((g * Cg + c) * OCg + o0) * KK;
      for (i64 o = o0; o < o1; ++o, d += KK) {
        const T* src = w + ((g * OCg + o) * Cg + c) * KK;
        for (i64 t = 0; t < KK; ++t) d[t] = src[KK - 1 - t];
      }
    }
  }
  return wt;
}

template <typename T>
void conv2d_backward_data(const Conv2dParams& p, const T* dy, const T* w, T* dx) {
  p.validate();
  if (is_depthwise(p)) return depthwise_backward_data(p, dy, w, dx);
  // Stride 1: dx is a forward convolution of dy with the flipped,
  // group-transposed weights and padding d*(k-1) - pad (which may be
  // negative): no col2im scatter. (With few input channels per group the
  // GEMM's m = C/G would waste most of each register tile; col2im over
  // m = C/G*KH*KW is better there.)
  const bool as_forward = p.SH == 1 && p.SW == 1 && !p.is_pointwise() && p.Cg() >= 8;
  Conv2dParams q = p;
  q.C = p.OC; q.H = p.OH; q.W = p.OW;
  q.OC = p.C; q.OH = p.H; q.OW = p.W;
  q.PT = p.DH * (p.KH - 1) - p.PT;
  q.PL = p.DW * (p.KW - 1) - p.PL;
  if constexpr (std::is_same_v<T, float>)
    if (as_forward && g_winograd_enabled.load(std::memory_order_relaxed) && winograd_any(q) &&
        winograd_forward_f32(q, dy, w, nullptr, dx, /*w_flipped=*/true))
      return;
  if (use_batched(p)) return backward_data_batched(p, dy, w, dx);
  if (as_forward) {
    forward_all<T>(q, dy, transposed_weights(p, w), static_cast<const T*>(nullptr), dx);
    return;
  }
  const i64 rows = band_rows(p);
  const i64 col_elems = p.is_pointwise() ? 0 : p.C * p.KH * p.KW * rows * p.OW;
  const double flops = 2.0 * p.OC * p.K() * p.OHW();
  const i64 xs = p.C * p.H * p.W, ys = p.OC * p.OHW();
  for_each_image<T>(p, flops, col_elems, [&](i64 n, T* col, int gt, int ct) {
    backward_data_image(p, dy + n * ys, w, dx + n * xs, col, rows, gt, ct);
  });
}

template <typename T>
void conv2d_backward_bias(const Conv2dParams& p, const T* dy, T* db) {
  const i64 OHW = p.OHW();
  const int nt = threads_for(double(p.N) * p.OC * OHW * sizeof(T), 1.0e6);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (i64 oc = 0; oc < p.OC; ++oc) {
    double acc = 0;
    for (i64 n = 0; n < p.N; ++n) {
      const T* d = dy + (n * p.OC + oc) * OHW;
      for (i64 j = 0; j < OHW; ++j) acc += d[j];
    }
    db[oc] = T(acc);
  }
}

namespace {

// ---- backward-weight ----------------------------------------------------
// dw[g] = dY_g * B_g^T summed over the batch, where B is the im2col matrix.
// The reduction (over images and output positions) is cut into chunks whose
// boundaries depend only on the shape. Two chunk kinds:
//  * rows: chunk = a range of flattened output rows r = n*OH + oy; the chunk
//    builds col[Ktot][L] explicitly and gathers dy into dyc[OC][L];
//  * wide (any stride whose phases are all read): chunk = a range of images;
//    their padded phase planes are laid out as P[C][phase][nb][Hp][Wp] so tap
//    (c, ky, kx) is one contiguous run of L = nb*Hp*Wp values at c*SH*SW*L +
//    tap_offset(ky, kx, L), and dy is spread into the same wide layout with
//    zeros at the positions that are not outputs.
// A wide chunk with few images in the batch is a band of output rows of one
// image instead (bands > 1): one image would be a single chunk, so split mode
// would have nothing to run in parallel, and the GEMM's own threads would
// each pack the long A or B again.
struct WeightChunks {
  bool wide;
  i64 per_chunk;  // rows (rows kind) or images (wide kind) per chunk; 1 with bands
  i64 total;      // rows, images, or image bands in all
  i64 bands = 1, band_rows = 0;  // wide kind: bands per image and their rows
  i64 count() const { return (total + per_chunk - 1) / per_chunk; }
};

template <typename T>
struct ColOffsetsB {  // B[j][col] = base[coff[col] + j]: each column contiguous in j
  const T* base;
  const i64* coff;
  // Reads NR column streams side by side and writes each panel row whole.
  static void pack(const void* ctx, i64 p0, i64 kc, i64 j0, i64 nc, int NR, T* dst) {
    const ColOffsetsB& s = *static_cast<const ColOffsetsB*>(ctx);
    const T* src[64];
    for (i64 jp = 0; jp < nc; jp += NR, dst += kc * NR) {
      const i64 nr = std::min<i64>(NR, nc - jp);
      for (i64 t = 0; t < nr; ++t) src[t] = s.base + s.coff[j0 + jp + t] + p0;
      pack_stream_panel(src, nr, kc, NR, dst);
    }
  }
};

// Wide geometry for backward-weight: padded planes of the forward input.
inline bool use_wide_weight(const Conv2dParams& p) {
  if (p.is_pointwise() || !wide_fits(p) || !phases_all_used(p)) return false;
  const WideGeom g = wide_geom(p);
  return 4 * p.OHW() >= 3 * g.plane;  // at least 75% of wide columns are outputs
}

// True when every x is finite. The wide kind multiplies the wrapped-around
// columns by exact zeros of dy; an inf or NaN there would turn 0 into NaN in
// weights PyTorch leaves finite, so non-finite inputs take the rows kind.
template <typename T>
bool all_finite(const T* x, i64 n) {
  // x * 0 is NaN exactly when x is inf or NaN; 16 independent sums (one
  // serial chain of adds ran at a fraction of the memory speed).
  constexpr int kLanes = 16;
  T acc[kLanes] = {};
  i64 i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int k = 0; k < kLanes; ++k) acc[k] += x[i + k] * T(0);
  for (; i < n; ++i) acc[0] += x[i] * T(0);
  T all = 0;
  for (int k = 0; k < kLanes; ++k) all += acc[k];
  return all == T(0);
}

WeightChunks weight_chunks(const Conv2dParams& p, bool split, bool finite) {
  WeightChunks ch;
  ch.wide = finite && use_wide_weight(p);
  const i64 Ktot = p.C * p.KH * p.KW;
  if (ch.wide) {
    const WideGeom g = wide_geom(p);
    const i64 per_image = (p.C * g.phases() + p.OC) * g.plane;
    const i64 cap = split ? 8192 * (p.C + p.OC) : kColCap;
    ch.total = p.N;
    ch.per_chunk = std::max<i64>(1, std::min<i64>(p.N, cap / std::max<i64>(per_image, 1)));
  } else {
    const i64 cols = split ? std::min<i64>(8192, kColCap / std::max<i64>(Ktot, 1)) : kColCap / std::max<i64>(Ktot, 1);
    ch.total = p.N * p.OH;
    ch.per_chunk = std::max<i64>(1, std::min<i64>(ch.total, cols / std::max<i64>(p.OW, 1)));
  }
  // Split mode runs chunks on parallel threads: at least kMinChunks of them, so
  // 2..8 threads stay evenly loaded (3 chunks on 2 threads would idle one a
  // third of the time). Depends on the shape only, as the fold order must.
  if (split) {
    constexpr i64 kMinChunks = 8;
    if (ch.wide && p.N < kMinChunks && p.OH >= 2) {
      const i64 want = std::min(p.OH, (kMinChunks + p.N - 1) / p.N);
      ch.band_rows = (p.OH + want - 1) / want;
      ch.bands = (p.OH + ch.band_rows - 1) / ch.band_rows;
      ch.total = p.N * ch.bands;
      ch.per_chunk = 1;
    }
    ch.per_chunk = std::max<i64>(1, std::min(ch.per_chunk, (ch.total + kMinChunks - 1) / kMinChunks));
  }
  return ch;
}

// Wide kind: elements of a chunk's phase planes (the dy spread follows them
// in the chunk's scratch, 16-aligned, after zero slack for the last runs).
i64 chunk_planes_elems(const Conv2dParams& p, const WeightChunks& ch) {
  const WideGeom g = wide_geom(p);
  const i64 per_image = ch.bands > 1 ? (ch.band_rows + g.Hp - p.OH) * g.Wp : g.plane;
  return (p.C * g.phases() * ch.per_chunk * per_image + g.plane + kWideSlack + 15) / 16 * 16;
}

// Scratch elements one chunk needs (B source + dy).
i64 chunk_elems(const Conv2dParams& p, const WeightChunks& ch) {
  if (ch.wide) {
    const WideGeom g = wide_geom(p);
    const i64 L = ch.bands > 1 ? ch.band_rows * g.Wp : ch.per_chunk * g.plane;
    return chunk_planes_elems(p, ch) + p.OC * L;
  }
  const i64 L = ch.per_chunk * p.OW;
  return (p.C * p.KH * p.KW * L + 15) / 16 * 16 + p.OC * L;
}

// What a thread's chunk buffer holds from its previous chunk of the same
// call: the wide kind's dy spread layout (L, dw), whose zero columns the
// next chunk of the same layout need not write again. (-1: nothing known.)
struct SpreadMemo {
  i64 L = -1, dw = -1;
};

// Builds chunk c in buf and accumulates its product into out (beta 0 or 1).
// memo: this buffer's SpreadMemo within the call.
template <typename T>
void weight_chunk(const Conv2dParams& p, const WeightChunks& ch, i64 c, const T* dy, const T* x,
                  T* buf, T beta, T* out, int nthreads, SpreadMemo* memo) {
  const GemmKernel<T>& kern = active_gemm_kernel<T>();
  const i64 K = p.K(), OCg = p.OCg(), Cg = p.Cg(), OHW = p.OHW();
  const i64 u0 = c * ch.per_chunk, u1 = std::min(ch.total, u0 + ch.per_chunk);
  if (ch.wide) {
    const WideGeom g = wide_geom(p);
    // Images n0 .. n0+nb-1, output rows [oy0, oy1) of each. Per image: pl
    // elements of each phase plane (Hb of its rows) and dw wide columns of
    // dy; the GEMM reduces over L columns. A band reads only its own rows'
    // columns (plus the rows below them that its taps reach).
    i64 n0 = u0, nb = u1 - u0, oy0 = 0, oy1 = p.OH, Hb = g.Hp;
    if (ch.bands > 1) {
      n0 = c / ch.bands;
      nb = 1;
      oy0 = c % ch.bands * ch.band_rows;
      oy1 = std::min(p.OH, oy0 + ch.band_rows);
      Hb = oy1 - oy0 + g.Hp - p.OH;
    }
    const i64 pl = Hb * g.Wp, dw = ch.bands > 1 ? (oy1 - oy0) * g.Wp : pl, L = nb * dw;
    const i64 ps = nb * pl, cs = g.phases() * ps;  // phase and channel strides
    T* P = buf;
    T* dyw = buf + chunk_planes_elems(p, ch);
    // P[c][phase][i] = phase plane rows of image n0+i; dyw[oc][i] = dy spread
    // to wide columns (zeros at the columns that are not outputs).
    const int nt = nthreads == 1 ? 1 : threads_for(double(p.OC) * dw * sizeof(T), 1.0e6);
    // In a serial chunk with a dot-product kernel, the rows are read in
    // place: dw = dyw * taps^T has a long reduction (L) and a small m x n
    // (OC x taps), so packing each element for its few uses cost a large
    // share of the time. With a 2-D dot kernel and output rows of a multiple
    // of 8, dy is read in place too, row by row against the taps' wider
    // rows, image by image: no spread copy.
    const bool dot = kern.dot_rows && nthreads == 1 && L >= 512 && OCg * K <= 32768;
    const bool dot2d = dot && kern.dot_rows_2d && p.OW % 8 == 0;
    // The zeros between and after the rows: already in place when this
    // buffer's previous chunk had the same layout (the copies below only
    // ever write the output columns).
    const bool zeros_in_place = memo->L == L && memo->dw == dw;
    for (i64 i = 0; i < nb; ++i) {
      pad_image(p, g, x + (n0 + i) * p.C * p.H * p.W, P + i * pl, cs, ps, nthreads, oy0, Hb);
      if (dot2d) continue;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
      for (i64 oc = 0; oc < p.OC; ++oc) {
        T* d = dyw + oc * L + i * dw;
        const T* s = dy + ((n0 + i) * p.OC + oc) * OHW;
        if (!zeros_in_place) std::fill(d, d + dw, T(0));
        for (i64 oy = oy0; oy < oy1; ++oy)
          std::copy(s + oy * p.OW, s + (oy + 1) * p.OW, d + (oy - oy0) * g.Wp);
      }
    }
    if (!dot2d) {
      memo->L = L;
      memo->dw = dw;
    }
    std::fill(P + p.C * cs, P + p.C * cs + g.plane + kWideSlack, T(0));
    const std::vector<i64> coff = tap_offsets(p, g, cs, ps);
    std::vector<const T*> rows_a(dot ? OCg : 0), rows_b(dot ? K : 0);
    for (i64 gi = 0; gi < p.G; ++gi) {
      if (dot2d) {
        for (i64 i = 0; i < nb; ++i) {
          for (i64 o = 0; o < OCg; ++o) rows_a[o] = dy + ((n0 + i) * p.OC + gi * OCg + o) * OHW + oy0 * p.OW;
          for (i64 t = 0; t < K; ++t) rows_b[t] = P + gi * Cg * cs + coff[t] + i * pl;
          kern.dot_rows_2d(OCg, K, oy1 - oy0, p.OW, rows_a.data(), p.OW, rows_b.data(), g.Wp,
                           i == 0 ? beta : T(1), out + gi * OCg * K, K);
        }
        continue;
      }
      if (dot) {
        for (i64 o = 0; o < OCg; ++o) rows_a[o] = dyw + (gi * OCg + o) * L;
        for (i64 t = 0; t < K; ++t) rows_b[t] = P + gi * Cg * cs + coff[t];
        kern.dot_rows(OCg, K, L, rows_a.data(), rows_b.data(), beta, out + gi * OCg * K, K);
        continue;
      }
      const ColOffsetsB<T> src{P + gi * Cg * cs, coff.data()};
      gemm_packed_b<T>(kern, OCg, K, L, dyw + gi * OCg * L, L, 1,
                       BPacker<T>{&ColOffsetsB<T>::pack, &src}, beta, out + gi * OCg * K, K, nthreads);
    }
    return;
  }
  if (p.is_pointwise()) {
    // 1x1: A = the dy rows and B^T = the x rows of each image's segment, read
    // in place (B's columns are x's channel rows: SIMD stream packing); the
    // segments accumulate in order.
    const i64 HW = p.H * p.W;
    // dW_g [OCg x Cg] (+)= dy_g [OCg x k] x_g^T [k x Cg], the rows of dy_g and
    // x_g rd and rx apart. When the transposed product would read its A (the
    // x rows) in place and this one would not (few output channels, OCg <=
    // 4 NR, against more input channels or OCg < MR: ResNet-50's 256 -> 64),
    // as dW_g^T = x_g dy_g^T instead: the in-place-A GEMM reads the x rows
    // where they are rather than packing them, into scratch added back
    // transposed.
    const bool swap = gemm_reads_a_in_place(kern, Cg, OCg, kern.kc, i64(1)) &&
                      !gemm_reads_a_in_place(kern, OCg, Cg, kern.kc, i64(1));
    std::vector<i64> offs(std::max(Cg, OCg));
    std::vector<T> ct(swap ? Cg * OCg : 0);
    auto product = [&](const T* dyg, i64 rd, const T* xg, i64 rx, i64 k, T be, T* o) {
      if (!swap) {
        for (i64 c = 0; c < Cg; ++c) offs[c] = c * rx;
        const ColOffsetsB<T> src{xg, offs.data()};
        return gemm_packed_b<T>(kern, OCg, K, k, dyg, rd, 1, BPacker<T>{&ColOffsetsB<T>::pack, &src}, be,
                                o, K, nthreads);
      }
      for (i64 oc = 0; oc < OCg; ++oc) offs[oc] = oc * rd;
      const ColOffsetsB<T> src{dyg, offs.data()};
      gemm_packed_b<T>(kern, Cg, OCg, k, xg, rx, 1, BPacker<T>{&ColOffsetsB<T>::pack, &src}, T(0),
                       ct.data(), OCg, nthreads);
      for (i64 oc = 0; oc < OCg; ++oc)
        for (i64 c = 0; c < Cg; ++c)
          o[oc * K + c] = be == T(0) ? ct[c * OCg + oc] : o[oc * K + c] + ct[c * OCg + oc];
    };
    // Segments shorter than a k block (7x7 maps: 49 columns an image) would
    // each pass over all of C for a few k steps: the chunk's segments are
    // gathered into [C][L] and [OC][L] instead (a copy of about (C + OC) * L
    // elements against (segments - 1) passes over OC x C) and multiplied once.
    const i64 L = (u1 - u0) * p.OW;
    if (L > p.OHW() && p.OHW() < kern.kc) {
      T* xc = buf;
      T* dyc = buf + (p.C * L + 15) / 16 * 16;
      const int nt = nthreads == 1 ? 1 : threads_for(double(p.C + p.OC) * L * 2 * sizeof(T), 1.0e6);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
      for (i64 q = 0; q < p.C + p.OC; ++q) {  // x's channel rows, then dy's
        const bool is_x = q < p.C;
        const i64 ch_n = is_x ? p.C : p.OC, c = is_x ? q : q - p.C;
        const T* s = is_x ? x : dy;
        T* d = (is_x ? xc : dyc) + c * L;
        for (i64 r = u0; r < u1;) {
          const i64 n = r / p.OH, oy0 = r % p.OH, oy1 = std::min(p.OH, oy0 + (u1 - r));
          const T* sr = s + (n * ch_n + c) * HW + oy0 * p.OW;
          d = std::copy(sr, sr + (oy1 - oy0) * p.OW, d);
          r += oy1 - oy0;
        }
      }
      for (i64 gi = 0; gi < p.G; ++gi)
        product(dyc + gi * OCg * L, L, xc + gi * Cg * L, L, L, beta, out + gi * OCg * K);
      return;
    }
    T beta_eff = beta;
    for (i64 r = u0; r < u1;) {
      const i64 n = r / p.OH, oy0 = r % p.OH, oy1 = std::min(p.OH, oy0 + (u1 - r));
      const i64 hw0 = oy0 * p.OW, seg = (oy1 - oy0) * p.OW;
      for (i64 gi = 0; gi < p.G; ++gi)
        product(dy + (n * p.OC + gi * OCg) * HW + hw0, HW, x + (n * p.C + gi * Cg) * HW + hw0, HW, seg,
                beta_eff, out + gi * OCg * K);
      beta_eff = T(1);
      r += oy1 - oy0;
    }
    return;
  }
  const i64 L = (u1 - u0) * p.OW;
  T* col = buf;
  T* dyc = buf + (p.C * p.KH * p.KW * ch.per_chunk * p.OW + 15) / 16 * 16;
  i64 off = 0;
  for (i64 r = u0; r < u1;) {
    const i64 n = r / p.OH, oy0 = r % p.OH, oy1 = std::min(p.OH, oy0 + (u1 - r));
    const i64 seg = (oy1 - oy0) * p.OW;
    im2col_rows(p, x + n * p.C * p.H * p.W, oy0, oy1, col + off, L, nthreads);
    for (i64 oc = 0; oc < p.OC; ++oc) {
      const T* s = dy + (n * p.OC + oc) * OHW + oy0 * p.OW;
      std::copy(s, s + seg, dyc + oc * L + off);
    }
    off += seg;
    r += oy1 - oy0;
  }
  for (i64 gi = 0; gi < p.G; ++gi)  // [OCg x K] (+)= [OCg x L] * [L x K]
    gemm<T>(kern, OCg, K, L, dyc + gi * OCg * L, L, 1, col + gi * K * L, 1, L, beta,
            out + gi * OCg * K, K, nthreads);
}

}  // namespace

template <typename T>
void conv2d_backward_weight(const Conv2dParams& p, const T* dy, const T* x, T* dw, T* db) {
  p.validate();
  const i64 dw_elems = p.OC * p.K();
  if (db) conv2d_backward_bias(p, dy, db);
  if (p.N == 0) {
    std::fill(dw, dw + dw_elems, T(0));
    return;
  }
  if (is_depthwise(p)) return depthwise_backward_weight(p, dy, x, dw);
  if constexpr (std::is_same_v<T, float>)
    if (g_winograd_enabled.load(std::memory_order_relaxed) && winograd_any(p) &&
        winograd_backward_weight_f32(p, dy, x, dw))
      return;
  Scratch& s = t_scratch;
  // A small dw cannot keep threads busy with output tiles: run the chunks in
  // parallel instead. Chunk c accumulates into slot c % nslots (each slot
  // walks its chunks in order), and the slots are folded in slot order. All
  // of this depends on the shape only, never on the thread count.
  const bool split = dw_elems <= 262144 && p.N * p.OH >= 2;
  const bool finite = !use_wide_weight(p) || all_finite(x, p.N * p.C * p.H * p.W);
  const WeightChunks ch = weight_chunks(p, split, finite);
  const i64 nchunks = ch.count(), per = chunk_elems(p, ch);
  if (!split || nchunks == 1) {
    T* buf = s.get<T>(0, per);
    SpreadMemo memo;
    for (i64 c = 0; c < nchunks; ++c)
      weight_chunk(p, ch, c, dy, x, buf, c == 0 ? T(0) : T(1), dw, 0, &memo);
    return;
  }
  const i64 nslots = std::min<i64>(nchunks, 32);
  const double flops = 2.0 * dw_elems * double(p.N) * p.OHW();
  const int nt = (int)std::min<i64>(nslots, threads_for(flops, 4.0e5));
  T* partial = s.get<T>(0, nslots * dw_elems);
  std::vector<T*> bufs(nt);
  for (int t = 0; t < nt; ++t) bufs[t] = s.get<T>(1 + t, per);
  ExceptionCapture capture;
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    T* buf = bufs[omp_get_thread_num()];
    SpreadMemo memo;  // this thread's buffer
#pragma omp for schedule(dynamic, 1)
    for (i64 sl = 0; sl < nslots; ++sl)
      capture.run([&] {
        for (i64 c = sl; c < nchunks; c += nslots)
          weight_chunk(p, ch, c, dy, x, buf, c == sl ? T(0) : T(1), partial + sl * dw_elems, 1, &memo);
      });
  }
  capture.rethrow();
  // dw[i] = ((partial_0[i] + partial_1[i]) + partial_2[i]) + ... in blocks of
  // 512: each slot's block is added as one vector loop (slot by slot per
  // element, a chain of dependent scalar adds, took 14% of a 2 ms call).
  constexpr i64 kFold = 512;
  const int ntr = threads_for(double(dw_elems) * nslots * sizeof(T), 1.0e6);
#pragma omp parallel for num_threads(ntr) schedule(static) if (ntr > 1)
  for (i64 i0 = 0; i0 < dw_elems; i0 += kFold) {
    const i64 len = std::min(kFold, dw_elems - i0);
    T* __restrict d = dw + i0;
    std::copy(partial + i0, partial + i0 + len, d);
    for (i64 sl = 1; sl < nslots; ++sl) {
      const T* __restrict src = partial + sl * dw_elems + i0;
      for (i64 i = 0; i < len; ++i) d[i] += src[i];
    }
  }
}

#define PYCONV_INSTANTIATE(T)                                                              \
  template void conv2d_forward<T>(const Conv2dParams&, const T*, const T*, const T*, T*);  \
  template void conv2d_backward_data<T>(const Conv2dParams&, const T*, const T*, T*);      \
  template void conv2d_backward_weight<T>(const Conv2dParams&, const T*, const T*, T*, T*); \
  template void conv2d_backward_bias<T>(const Conv2dParams&, const T*, T*);
PYCONV_INSTANTIATE(float)
PYCONV_INSTANTIATE(double)

}  // namespace pyconv
