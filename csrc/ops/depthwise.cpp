// depthwise.cpp - see depthwise.h. Parallel over planes; every output element
// is written by one thread in a fixed order, so results do not depend on the
// thread count.
#include "ops/depthwise.h"

#include <algorithm>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu/parallel.h"
#include "ops/im2col.h"

namespace pyconv {

namespace {
// Per kernel column kx: the tap offset and the valid output range [lo, hi).
struct TapCols {
  std::vector<i64> off, lo, hi;
  explicit TapCols(const Conv2dParams& p) : off(p.KW), lo(p.KW), hi(p.KW) {
    for (i64 kx = 0; kx < p.KW; ++kx) {
      off[kx] = kx * p.DW - p.PL;
      valid_range(p.W, p.OW, p.SW, off[kx], &lo[kx], &hi[kx]);
    }
  }
};
}  // namespace

// Loops run output row by output row with all taps inside, so the output
// (or dx) row being updated stays in L1; the innermost loops are
// element-wise axpys the compiler vectorises.

template <typename T>
void depthwise_forward(const Conv2dParams& p, const T* x, const T* w, const T* b, T* y) {
  const i64 mult = p.OC / p.C, OHW = p.OHW(), KK = p.KH * p.KW;
  const i64 planes = p.N * p.OC;
  const int nt = threads_for(2.0 * planes * OHW * KK);
  const TapCols tc(p);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (i64 i = 0; i < planes; ++i) {
    const i64 n = i / p.OC, oc = i % p.OC, c = oc / mult;
    const T* xc = x + (n * p.C + c) * p.H * p.W;
    const T* wk = w + oc * KK;
    const T bias = b ? b[oc] : T(0);
    for (i64 oy = 0; oy < p.OH; ++oy) {
      T* __restrict yr = y + i * OHW + oy * p.OW;
      for (i64 ox = 0; ox < p.OW; ++ox) yr[ox] = bias;
      for (i64 ky = 0; ky < p.KH; ++ky) {
        const i64 iy = oy * p.SH - p.PT + ky * p.DH;
        if (iy < 0 || iy >= p.H) {
          // A tap on padding adds w * 0: zero, or NaN for an inf/NaN weight.
          for (i64 kx = 0; kx < p.KW; ++kx) {
            const T wz = wk[ky * p.KW + kx] * T(0);
            if (wz != T(0))
              for (i64 ox = 0; ox < p.OW; ++ox) yr[ox] += wz;
          }
          continue;
        }
        const T* __restrict xr = xc + iy * p.W;
        for (i64 kx = 0; kx < p.KW; ++kx) {
          const T wv = wk[ky * p.KW + kx];
          const i64 xoff = tc.off[kx], lo = tc.lo[kx], hi = tc.hi[kx];
          if (wv * T(0) != T(0)) {
            for (i64 ox = 0; ox < lo; ++ox) yr[ox] += wv * T(0);
            for (i64 ox = hi; ox < p.OW; ++ox) yr[ox] += wv * T(0);
          }
          if (p.SW == 1)
            for (i64 ox = lo; ox < hi; ++ox) yr[ox] += wv * xr[ox + xoff];
          else
            for (i64 ox = lo; ox < hi; ++ox) yr[ox] += wv * xr[ox * p.SW + xoff];
        }
      }
    }
  }
}

template <typename T>
void depthwise_backward_data(const Conv2dParams& p, const T* dy, const T* w, T* dx) {
  const i64 mult = p.OC / p.C, OHW = p.OHW(), KK = p.KH * p.KW, HW = p.H * p.W;
  const i64 planes = p.N * p.C;
  const int nt = threads_for(2.0 * p.N * p.OC * OHW * KK);
  const TapCols tc(p);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (i64 i = 0; i < planes; ++i) {
    const i64 n = i / p.C, c = i % p.C;
    T* dxp = dx + i * HW;
    std::fill(dxp, dxp + HW, T(0));
    for (i64 m = 0; m < mult; ++m) {
      const i64 oc = c * mult + m;
      const T* dyp = dy + (n * p.OC + oc) * OHW;
      const T* wk = w + oc * KK;
      for (i64 oy = 0; oy < p.OH; ++oy) {
        const T* __restrict dr = dyp + oy * p.OW;
        for (i64 ky = 0; ky < p.KH; ++ky) {
          const i64 iy = oy * p.SH - p.PT + ky * p.DH;
          if (iy < 0 || iy >= p.H) continue;
          T* __restrict xr = dxp + iy * p.W;
          for (i64 kx = 0; kx < p.KW; ++kx) {
            const T wv = wk[ky * p.KW + kx];
            const i64 xoff = tc.off[kx], lo = tc.lo[kx], hi = tc.hi[kx];
            if (p.SW == 1)
              for (i64 ox = lo; ox < hi; ++ox) xr[ox + xoff] += wv * dr[ox];
            else
              for (i64 ox = lo; ox < hi; ++ox) xr[ox * p.SW + xoff] += wv * dr[ox];
          }
        }
      }
    }
  }
}

// Per output channel, each tap keeps a row of OW partial sums (element-wise
// FMAs, vectorised); the rows are folded in double at the end. The order is
// fixed by the shape, so the result does not depend on the thread count.
template <typename T>
void depthwise_backward_weight(const Conv2dParams& p, const T* dy, const T* x, T* dw) {
  const i64 mult = p.OC / p.C, OHW = p.OHW(), KK = p.KH * p.KW;
  const int nt = (int)std::min<i64>(p.OC, threads_for(2.0 * p.N * p.OC * OHW * KK));
  std::vector<T> acc_all(std::size_t(nt) * KK * p.OW);  // allocated outside the region
  const TapCols tc(p);
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
#ifdef _OPENMP
    T* acc = acc_all.data() + std::size_t(omp_get_thread_num()) * KK * p.OW;
#else
    T* acc = acc_all.data();
#endif
#pragma omp for schedule(static)
    for (i64 oc = 0; oc < p.OC; ++oc) {
      const i64 c = oc / mult;
      std::fill(acc, acc + KK * p.OW, T(0));
      for (i64 n = 0; n < p.N; ++n) {
        const T* xc = x + (n * p.C + c) * p.H * p.W;
        const T* dyp = dy + (n * p.OC + oc) * OHW;
        for (i64 oy = 0; oy < p.OH; ++oy) {
          const T* __restrict dr = dyp + oy * p.OW;
          // dy * 0 for taps on padding: NaN when dy is inf/NaN, as in PyTorch.
          T dz = 0;
          for (i64 ox = 0; ox < p.OW; ++ox) dz += dr[ox] * T(0);
          for (i64 ky = 0; ky < p.KH; ++ky) {
            const i64 iy = oy * p.SH - p.PT + ky * p.DH;
            if (iy < 0 || iy >= p.H) {
              if (dz != T(0))
                for (i64 kx = 0; kx < p.KW; ++kx) acc[(ky * p.KW + kx) * p.OW] += dz;
              continue;
            }
            const T* __restrict xr = xc + iy * p.W;
            for (i64 kx = 0; kx < p.KW; ++kx) {
              T* __restrict a = acc + (ky * p.KW + kx) * p.OW;
              const i64 xoff = tc.off[kx], lo = tc.lo[kx], hi = tc.hi[kx];
              if (dz != T(0)) {
                for (i64 ox = 0; ox < lo; ++ox) a[ox] += dr[ox] * T(0);
                for (i64 ox = hi; ox < p.OW; ++ox) a[ox] += dr[ox] * T(0);
              }
              if (p.SW == 1)
                for (i64 ox = lo; ox < hi; ++ox) a[ox] += dr[ox] * xr[ox + xoff];
              else
                for (i64 ox = lo; ox < hi; ++ox) a[ox] += dr[ox] * xr[ox * p.SW + xoff];
            }
          }
        }
      }
      for (i64 t = 0; t < KK; ++t) {
        double s = 0;
        for (i64 ox = 0; ox < p.OW; ++ox) s += acc[t * p.OW + ox];
        dw[oc * KK + t] = T(s);
      }
    }
  }
}

#define PYCONV_DW_INSTANTIATE(T)                                                              \
  template void depthwise_forward<T>(const Conv2dParams&, const T*, const T*, const T*, T*); \
  template void depthwise_backward_data<T>(const Conv2dParams&, const T*, const T*, T*);     \
  template void depthwise_backward_weight<T>(const Conv2dParams&, const T*, const T*, T*);
PYCONV_DW_INSTANTIATE(float)
PYCONV_DW_INSTANTIATE(double)

}  // namespace pyconv
