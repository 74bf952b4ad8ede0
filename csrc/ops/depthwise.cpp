// depthwise.cpp - see depthwise.h. Parallel over planes; every output element
// is written by one thread in a fixed order, so results do not depend on the
// thread count.
#include "ops/depthwise.h"

#include <algorithm>

#include "cpu/parallel.h"
#include "ops/im2col.h"

namespace pyconv {

template <typename T>
void depthwise_forward(const Conv2dParams& p, const T* x, const T* w, const T* b, T* y) {
  const i64 mult = p.OC / p.C, OHW = p.OHW(), KK = p.KH * p.KW;
  const i64 planes = p.N * p.OC;
  const int nt = threads_for(2.0 * planes * OHW * KK);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (i64 i = 0; i < planes; ++i) {
    const i64 n = i / p.OC, oc = i % p.OC, c = oc / mult;
    const T* xc = x + (n * p.C + c) * p.H * p.W;
    const T* wk = w + oc * KK;
    T* yp = y + i * OHW;
    std::fill(yp, yp + OHW, b ? b[oc] : T(0));
    for (i64 ky = 0; ky < p.KH; ++ky)
      for (i64 kx = 0; kx < p.KW; ++kx) {
        const T wv = wk[ky * p.KW + kx];
        const i64 xoff = kx * p.DW - p.PL;
        i64 lo, hi;
        valid_range(p.W, p.OW, p.SW, xoff, &lo, &hi);
        for (i64 oy = 0; oy < p.OH; ++oy) {
          const i64 iy = oy * p.SH - p.PT + ky * p.DH;
          if (iy < 0 || iy >= p.H) continue;
          const T* __restrict xr = xc + iy * p.W;
          T* __restrict yr = yp + oy * p.OW;
          if (p.SW == 1)
            for (i64 ox = lo; ox < hi; ++ox) yr[ox] += wv * xr[ox + xoff];
          else
            for (i64 ox = lo; ox < hi; ++ox) yr[ox] += wv * xr[ox * p.SW + xoff];
        }
      }
  }
}

template <typename T>
void depthwise_backward_data(const Conv2dParams& p, const T* dy, const T* w, T* dx) {
  const i64 mult = p.OC / p.C, OHW = p.OHW(), KK = p.KH * p.KW, HW = p.H * p.W;
  const i64 planes = p.N * p.C;
  const int nt = threads_for(2.0 * p.N * p.OC * OHW * KK);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (i64 i = 0; i < planes; ++i) {
    const i64 n = i / p.C, c = i % p.C;
    T* dxp = dx + i * HW;
    std::fill(dxp, dxp + HW, T(0));
    for (i64 m = 0; m < mult; ++m) {
      const i64 oc = c * mult + m;
      const T* dyp = dy + (n * p.OC + oc) * OHW;
      const T* wk = w + oc * KK;
      for (i64 ky = 0; ky < p.KH; ++ky)
        for (i64 kx = 0; kx < p.KW; ++kx) {
          const T wv = wk[ky * p.KW + kx];
          const i64 xoff = kx * p.DW - p.PL;
          i64 lo, hi;
          valid_range(p.W, p.OW, p.SW, xoff, &lo, &hi);
          for (i64 oy = 0; oy < p.OH; ++oy) {
            const i64 iy = oy * p.SH - p.PT + ky * p.DH;
            if (iy < 0 || iy >= p.H) continue;
            T* __restrict xr = dxp + iy * p.W;
            const T* __restrict dr = dyp + oy * p.OW;
            if (p.SW == 1)
              for (i64 ox = lo; ox < hi; ++ox) xr[ox + xoff] += wv * dr[ox];
            else
              for (i64 ox = lo; ox < hi; ++ox) xr[ox * p.SW + xoff] += wv * dr[ox];
          }
        }
    }
  }
}

template <typename T>
void depthwise_backward_weight(const Conv2dParams& p, const T* dy, const T* x, T* dw) {
  const i64 mult = p.OC / p.C, OHW = p.OHW(), KK = p.KH * p.KW;
  const int nt = threads_for(2.0 * p.N * p.OC * OHW * KK);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (i64 oc = 0; oc < p.OC; ++oc) {
    const i64 c = oc / mult;
    for (i64 ky = 0; ky < p.KH; ++ky)
      for (i64 kx = 0; kx < p.KW; ++kx) {
        const i64 xoff = kx * p.DW - p.PL;
        i64 lo, hi;
        valid_range(p.W, p.OW, p.SW, xoff, &lo, &hi);
        double acc = 0;  // rows summed in T, rows folded in double
        for (i64 n = 0; n < p.N; ++n) {
          const T* xc = x + (n * p.C + c) * p.H * p.W;
          const T* dyp = dy + (n * p.OC + oc) * OHW;
          for (i64 oy = 0; oy < p.OH; ++oy) {
            const i64 iy = oy * p.SH - p.PT + ky * p.DH;
            if (iy < 0 || iy >= p.H) continue;
            const T* xr = xc + iy * p.W;
            const T* dr = dyp + oy * p.OW;
            T s = 0;
            if (p.SW == 1)
              for (i64 ox = lo; ox < hi; ++ox) s += dr[ox] * xr[ox + xoff];
            else
              for (i64 ox = lo; ox < hi; ++ox) s += dr[ox] * xr[ox * p.SW + xoff];
            acc += s;
          }
        }
        dw[oc * KK + ky * p.KW + kx] = T(acc);
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
