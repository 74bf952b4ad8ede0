// im2col.cpp - im2col / col2im over a band of output rows. Parallel over
// channels (im2col: independent rows; col2im: each channel writes only its
// own input plane, so there is no race and the sum order is fixed).
#include "ops/im2col.h"

#include <algorithm>
#include <cstring>

#include "cpu/parallel.h"

namespace pyconv {
namespace {

// The ox range whose tap ix = ox*SW - PL + kx*DW lies in [0, W).
inline void valid_range(i64 W, i64 OW, i64 SW, i64 off, i64* lo, i64* hi) {
  // ix = ox*SW + off >= 0  <=>  ox >= ceil(-off / SW)
  i64 l = off >= 0 ? 0 : (-off + SW - 1) / SW;
  // ix <= W-1  <=>  ox <= floor((W-1-off)/SW)
  i64 h = (W - 1 - off) < 0 ? -1 : (W - 1 - off) / SW;
  *lo = std::min<i64>(l, OW);
  *hi = std::max<i64>(*lo, std::min<i64>(h + 1, OW));
}

}  // namespace

template <typename T>
void im2col_rows(const Conv2dParams& p, const T* x, i64 oy0, i64 oy1, T* col, i64 ldcol,
                 int nthreads) {
  const i64 KK = p.KH * p.KW;
  const i64 rows = oy1 - oy0;
  const int nt = nthreads > 0 ? nthreads
                              : threads_for(double(p.C) * KK * rows * p.OW * sizeof(T), 1.0e6);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (i64 c = 0; c < p.C; ++c) {
    const T* xc = x + c * p.H * p.W;
    for (i64 ky = 0; ky < p.KH; ++ky)
      for (i64 kx = 0; kx < p.KW; ++kx) {
        T* dst = col + ((c * p.KH + ky) * p.KW + kx) * ldcol;
        const i64 xoff = kx * p.DW - p.PL;
        i64 lo, hi;
        valid_range(p.W, p.OW, p.SW, xoff, &lo, &hi);
        for (i64 oy = oy0; oy < oy1; ++oy, dst += p.OW) {
          const i64 iy = oy * p.SH - p.PT + ky * p.DH;
          if (iy < 0 || iy >= p.H) {
            std::fill(dst, dst + p.OW, T(0));
            continue;
          }
          const T* row = xc + iy * p.W;  // tap of ox is row[ox*SW + xoff]
          std::fill(dst, dst + lo, T(0));
          if (p.SW == 1) {
            if (hi > lo) std::memcpy(dst + lo, row + lo + xoff, sizeof(T) * (hi - lo));
          } else {
            for (i64 ox = lo; ox < hi; ++ox) dst[ox] = row[ox * p.SW + xoff];
          }
          std::fill(dst + hi, dst + p.OW, T(0));
        }
      }
  }
}

template <typename T>
void col2im_rows(const Conv2dParams& p, const T* col, i64 ldcol, i64 oy0, i64 oy1, T* dx,
                 int nthreads) {
  const i64 rows = oy1 - oy0;
  const int nt = nthreads > 0 ? nthreads
                              : threads_for(double(p.C) * p.KH * p.KW * rows * p.OW * sizeof(T), 1.0e6);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (i64 c = 0; c < p.C; ++c) {
    T* dxc = dx + c * p.H * p.W;
    for (i64 ky = 0; ky < p.KH; ++ky)
      for (i64 kx = 0; kx < p.KW; ++kx) {
        const T* src = col + ((c * p.KH + ky) * p.KW + kx) * ldcol;
        const i64 xoff = kx * p.DW - p.PL;
        i64 lo, hi;
        valid_range(p.W, p.OW, p.SW, xoff, &lo, &hi);
        for (i64 oy = oy0; oy < oy1; ++oy, src += p.OW) {
          const i64 iy = oy * p.SH - p.PT + ky * p.DH;
          if (iy < 0 || iy >= p.H) continue;
          T* row = dxc + iy * p.W;
          if (p.SW == 1) {
            for (i64 ox = lo; ox < hi; ++ox) row[ox + xoff] += src[ox];
          } else {
            for (i64 ox = lo; ox < hi; ++ox) row[ox * p.SW + xoff] += src[ox];
          }
        }
      }
  }
}

template void im2col_rows<float>(const Conv2dParams&, const float*, i64, i64, float*, i64, int);
template void im2col_rows<double>(const Conv2dParams&, const double*, i64, i64, double*, i64, int);
template void col2im_rows<float>(const Conv2dParams&, const float*, i64, i64, i64, float*, int);
template void col2im_rows<double>(const Conv2dParams&, const double*, i64, i64, i64, double*, int);

}  // namespace pyconv
