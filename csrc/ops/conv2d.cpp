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
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#else
inline int omp_get_thread_num() { return 0; }
#endif

#include "cpu/parallel.h"
#include "gemm/gemm.h"
#include "ops/im2col.h"

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
  const int nt_img = p.N >= 2 && flops_per_image < kPerImageSerial
                         ? (int)std::min<i64>(p.N, threads_for(flops_per_image * p.N, 4.0e5))
                         : 1;
  Scratch& s = t_scratch;
  if (nt_img <= 1) {
    T* col = scratch_elems ? s.get<T>(0, scratch_elems) : nullptr;
    for (i64 n = 0; n < p.N; ++n) fn(n, col, 0, 0);
    return;
  }
  std::vector<T*> cols(nt_img, nullptr);  // allocated outside the parallel region
  for (int t = 0; t < nt_img; ++t)
    if (scratch_elems) cols[t] = s.get<T>(t, scratch_elems);
#pragma omp parallel num_threads(nt_img)
  {
    T* col = cols[omp_get_thread_num()];
#pragma omp for schedule(static)
    for (i64 n = 0; n < p.N; ++n) fn(n, col, 1, 1);
  }
}

// ---- stride-1 convolution over the shifted rows of a padded image --------
// With the image padded to Hp x Wp (Hp = OH + DH*(KH-1), Wp = OW + DW*(KW-1)),
// the im2col row of tap (c, ky, kx) is the padded plane shifted by
// c*Hp*Wp + ky*DH*Wp + kx*DW, read over "wide" columns j = oy*Wp + ox. The
// GEMM reads those rows in place (no packing); the Wp - OW columns per row
// that wrap around are computed and dropped when the result is compacted.
struct WideGeom {
  i64 Hp, Wp, n, plane;  // n: wide columns (OH-1)*Wp + OW
};

inline WideGeom wide_geom(const Conv2dParams& p) {
  WideGeom g;
  g.Hp = p.OH + p.DH * (p.KH - 1);
  g.Wp = p.OW + p.DW * (p.KW - 1);
  g.n = (p.OH - 1) * g.Wp + p.OW;
  g.plane = g.Hp * g.Wp;
  return g;
}

// Worth it when most wide columns are real outputs, and the reduction is
// long enough to amortise the compaction (for K < 32 packing B is cheap and
// the packed path wins).
inline bool use_wide(const Conv2dParams& p) {
  return p.SH == 1 && p.SW == 1 && !p.is_pointwise() && p.K() >= 32 &&
         2 * p.OW >= p.OW + p.DW * (p.KW - 1);
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

constexpr i64 kWideSlack = 64;  // the kernels over-read up to one tile past n

// pad[C][Hp][Wp] (+ slack) from x[C][H][W]; padding may be negative (crop).
template <typename T>
void pad_image(const Conv2dParams& p, const WideGeom& g, const T* x, T* pad) {
  for (i64 c = 0; c < p.C; ++c)
    for (i64 py = 0; py < g.Hp; ++py) {
      T* d = pad + c * g.plane + py * g.Wp;
      const i64 iy = py - p.PT;
      if (iy < 0 || iy >= p.H) {
        std::fill(d, d + g.Wp, T(0));
        continue;
      }
      const T* s = x + (c * p.H + iy) * p.W;
      const i64 lo = std::min(g.Wp, std::max<i64>(0, p.PL));           // first px with ix >= 0
      const i64 hi = std::max(lo, std::min(g.Wp, p.W + p.PL));         // px with ix < W
      std::fill(d, d + lo, T(0));
      std::copy(s + (lo - p.PL), s + (hi - p.PL), d + lo);
      std::fill(d + hi, d + g.Wp, T(0));
    }
  std::fill(pad + p.C * g.plane, pad + p.C * g.plane + kWideSlack, T(0));
}

template <typename T>
void forward_image_wide(const Conv2dParams& p, const WideGeom& g, const i64* boff, const T* xn,
                        const T* w, const T* b, T* yn, T* pad, T* wide, int gemm_threads) {
  const i64 K = p.K(), OCg = p.OCg(), Cg = p.Cg(), ldw = p.OH * g.Wp;
  const GemmKernel<T>& kern = active_gemm_kernel<T>();
  pad_image(p, g, xn, pad);
  for (i64 gi = 0; gi < p.G; ++gi) {
    gemm_rows<T>(kern, OCg, g.n, K, w + gi * OCg * K, K, 1, pad + gi * Cg * g.plane, boff, T(0),
                 wide, ldw, gemm_threads);
    for (i64 o = 0; o < OCg; ++o) {
      const i64 oc = gi * OCg + o;
      compact_plane(wide + o * ldw, g.Wp, p.OH, p.OW, b ? b[oc] : T(0), yn + oc * p.OHW());
    }
  }
}

// Forward over the batch (b may be null). p may carry negative padding.
template <typename T>
void forward_all(const Conv2dParams& p, const T* x, const T* w, const T* b, T* y) {
  const double flops = 2.0 * p.OC * p.K() * p.OHW();
  const i64 xs = p.C * p.H * p.W, ys = p.OC * p.OHW();
  if (use_wide(p)) {
    const WideGeom g = wide_geom(p);
    std::vector<i64> boff(p.K());
    for (i64 c = 0, q = 0; c < p.Cg(); ++c)
      for (i64 ky = 0; ky < p.KH; ++ky)
        for (i64 kx = 0; kx < p.KW; ++kx) boff[q++] = c * g.plane + ky * p.DH * g.Wp + kx * p.DW;
    const i64 pad_elems = p.C * g.plane + kWideSlack;
    const i64 pad_alloc = (pad_elems + 15) & ~i64(15);
    const i64 wide_elems = p.OCg() * p.OH * g.Wp;
    for_each_image<T>(p, flops, pad_alloc + wide_elems, [&](i64 n, T* buf, int gt, int) {
      forward_image_wide(p, g, boff.data(), x + n * xs, w, b, y + n * ys, buf, buf + pad_alloc, gt);
    });
    return;
  }
  for_each_image<T>(p, flops, 0, [&](i64 n, T*, int gt, int) {
    forward_image(p, x + n * xs, w, y + n * ys, gt);
  });
  if (b) add_bias(p, b, y);
}

}  // namespace

template <typename T>
void conv2d_forward(const Conv2dParams& p, const T* x, const T* w, const T* b, T* y) {
  p.validate();
  forward_all(p, x, w, b, y);
}

template <typename T>
void conv2d_backward_data(const Conv2dParams& p, const T* dy, const T* w, T* dx) {
  p.validate();
  // (With few input channels per group the GEMM's m = C/G would waste most
  // of each register tile; col2im over m = C/G*KH*KW is better there.)
  if (p.SH == 1 && p.SW == 1 && !p.is_pointwise() && p.Cg() >= 8) {
    // Stride 1: dx is a forward convolution of dy with the flipped,
    // group-transposed weights and padding d*(k-1) - pad (which may be
    // negative): no col2im scatter.
    const i64 Cg = p.Cg(), OCg = p.OCg(), KK = p.KH * p.KW;
    std::vector<T> wt_buf(p.OC * Cg * KK);
    T* wt = wt_buf.data();
    for (i64 g = 0; g < p.G; ++g)
      for (i64 o = 0; o < OCg; ++o)
        for (i64 c = 0; c < Cg; ++c) {
          const T* src = w + ((g * OCg + o) * Cg + c) * KK;
          T* d = wt + ((g * Cg + c) * OCg + o) * KK;
          for (i64 t = 0; t < KK; ++t) d[t] = src[KK - 1 - t];
        }
    Conv2dParams q = p;
    q.C = p.OC; q.H = p.OH; q.W = p.OW;
    q.OC = p.C; q.OH = p.H; q.OW = p.W;
    q.PT = p.DH * (p.KH - 1) - p.PT;
    q.PL = p.DW * (p.KW - 1) - p.PL;
    forward_all<T>(q, dy, wt, static_cast<const T*>(nullptr), dx);
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

// The batch's output rows, flattened as r = n*OH + oy, are cut into chunks
// of `rows_per_chunk`. For chunk [r0, r1) this builds
//   col[Ktot][L] (im2col of every covered row) and dyc[OC][L] (the matching
//   dy columns), L = (r1 - r0) * OW.
template <typename T>
void gather_chunk(const Conv2dParams& p, const T* dy, const T* x, i64 r0, i64 r1, T* col,
                  T* dyc, int nthreads) {
  const i64 L = (r1 - r0) * p.OW, OHW = p.OHW();
  i64 off = 0;
  for (i64 r = r0; r < r1;) {
    const i64 n = r / p.OH, oy0 = r % p.OH, oy1 = std::min(p.OH, oy0 + (r1 - r));
    const i64 seg = (oy1 - oy0) * p.OW;
    im2col_rows(p, x + n * p.C * p.H * p.W, oy0, oy1, col + off, L, nthreads);
    for (i64 oc = 0; oc < p.OC; ++oc) {
      const T* s = dy + (n * p.OC + oc) * OHW + oy0 * p.OW;
      std::copy(s, s + seg, dyc + oc * L + off);
    }
    off += seg;
    r += oy1 - oy0;
  }
}

// dw (+)= dyc * col^T for each group: [OCg x K] = [OCg x L] * [L x K].
template <typename T>
void weight_gemm(const Conv2dParams& p, const T* dyc, const T* col, i64 L, T beta, T* dw,
                 int nthreads) {
  const i64 K = p.K(), OCg = p.OCg();
  for (i64 g = 0; g < p.G; ++g)
    gemm<T>(OCg, K, L, dyc + g * OCg * L, L, 1, col + g * K * L, 1, L, beta, dw + g * OCg * K, K,
            nthreads);
}

}  // namespace

template <typename T>
void conv2d_backward_weight(const Conv2dParams& p, const T* dy, const T* x, T* dw, T* db) {
  p.validate();
  const i64 Ktot = p.C * p.KH * p.KW, K = p.K(), dw_elems = p.OC * K;
  const i64 total_rows = p.N * p.OH;
  if (db) conv2d_backward_bias(p, dy, db);
  if (total_rows == 0) {
    std::fill(dw, dw + dw_elems, T(0));
    return;
  }
  Scratch& s = t_scratch;
  // A small dw cannot keep threads busy with output tiles: split the
  // reduction into shape-determined chunks, run them in parallel into
  // partial sums, and fold those in chunk order.
  const bool split = dw_elems <= 65536 && total_rows >= 2;
  if (!split) {
    const i64 rc = std::max<i64>(1, std::min<i64>(total_rows, kColCap / std::max<i64>(Ktot * p.OW, 1)));
    for (i64 r0 = 0; r0 < total_rows; r0 += rc) {
      const i64 r1 = std::min(total_rows, r0 + rc), L = (r1 - r0) * p.OW;
      T* col = s.get<T>(0, Ktot * L);
      T* dyc = s.get<T>(1, p.OC * L);
      gather_chunk(p, dy, x, r0, r1, col, dyc, 0);
      weight_gemm(p, dyc, col, L, r0 == 0 ? T(0) : T(1), dw, 0);
    }
    return;
  }
  // Chunks of ~8192 columns (at least one output row), fixed by the shape.
  // Chunk c accumulates into slot c % nslots; slots run in parallel, each
  // over its chunks in order, and are then folded in slot order.
  const i64 cols_per_chunk = std::max<i64>(1, std::min<i64>(8192, kColCap / std::max<i64>(Ktot, 1)));
  const i64 rc = std::max<i64>(1, std::min<i64>(total_rows, cols_per_chunk / std::max<i64>(p.OW, 1)));
  const i64 nchunks = (total_rows + rc - 1) / rc;
  const i64 nslots = std::min<i64>(nchunks, 32);
  const double flops = 2.0 * dw_elems * double(total_rows) * p.OW;
  const int nt = (int)std::min<i64>(nslots, threads_for(flops, 4.0e5));
  const i64 Lmax = rc * p.OW;
  T* partial = nslots > 1 ? s.get<T>(0, nslots * dw_elems) : dw;
  std::vector<T*> cols(nt), dycs(nt);
  for (int t = 0; t < nt; ++t) {
    cols[t] = s.get<T>(1 + 2 * t, Ktot * Lmax);
    dycs[t] = s.get<T>(2 + 2 * t, p.OC * Lmax);
  }
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    const int t = omp_get_thread_num();
#pragma omp for schedule(static)
    for (i64 sl = 0; sl < nslots; ++sl)
      for (i64 c = sl; c < nchunks; c += nslots) {
        const i64 r0 = c * rc, r1 = std::min(total_rows, r0 + rc), L = (r1 - r0) * p.OW;
        gather_chunk(p, dy, x, r0, r1, cols[t], dycs[t], 1);
        weight_gemm(p, dycs[t], cols[t], L, c == sl ? T(0) : T(1), partial + sl * dw_elems, 1);
      }
  }
  if (nslots > 1) {
    const int ntr = threads_for(double(dw_elems) * nslots * sizeof(T), 1.0e6);
#pragma omp parallel for num_threads(ntr) schedule(static) if (ntr > 1)
    for (i64 i = 0; i < dw_elems; ++i) {
      T acc = partial[i];
      for (i64 sl = 1; sl < nslots; ++sl) acc += partial[sl * dw_elems + i];
      dw[i] = acc;
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
