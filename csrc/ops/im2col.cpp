// im2col.cpp - im2col / col2im over a band of output rows. Parallel over
// channels (im2col: independent rows; col2im: each channel writes only its
// own input plane, so there is no race and the sum order is fixed).
#include "ops/im2col.h"

#include <type_traits>

#include <algorithm>
#include <cstring>

#include "cpu/parallel.h"
#include "ops/vmath.h"

namespace pyconv {
namespace {

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

namespace {

// One row of the implicit column matrix: out[j - j0] for j in [j0, j1).
template <typename T>
void im2col_row(const Conv2dParams& p, const T* xc, i64 ky, i64 kx, i64 j0, i64 j1, T* out) {
  // Stride 2 (float32): a SIMD gather of every other element, when there is one.
  void (*every_other)(const T*, i64, T*) = nullptr;
  if constexpr (std::is_same_v<T, float>)
    if (const VMathF32* vm = vmath_f32()) every_other = vm->every_other;
  const i64 xoff = kx * p.DW - p.PL;
  i64 lo, hi;
  valid_range(p.W, p.OW, p.SW, xoff, &lo, &hi);
  i64 oy = j0 / p.OW, ox0 = j0 - oy * p.OW;
  for (i64 j = j0; j < j1; ++oy, ox0 = 0) {
    const i64 ox1 = std::min<i64>(p.OW, ox0 + (j1 - j));
    T* d = out + (j - j0) - ox0;  // d[ox] is column (oy, ox)
    const i64 iy = oy * p.SH - p.PT + ky * p.DH;
    if (iy < 0 || iy >= p.H) {
      for (i64 ox = ox0; ox < ox1; ++ox) d[ox] = T(0);
    } else {
      const T* row = xc + iy * p.W;
      const i64 a = std::max(ox0, lo), b = std::min(ox1, hi);
      i64 ox = ox0;
      for (; ox < a && ox < ox1; ++ox) d[ox] = T(0);
      if (p.SW == 1) {
        for (; ox < b; ++ox) d[ox] = row[ox + xoff];
      } else if (every_other && p.SW == 2 && ox < b) {
        every_other(row + ox * 2 + xoff, b - ox, d + ox);
        ox = b;
      } else {
        for (; ox < b; ++ox) d[ox] = row[ox * p.SW + xoff];
      }
      for (; ox < ox1; ++ox) d[ox] = T(0);
    }
    j += ox1 - ox0;
  }
}

template <int NR, typename T>
inline void scatter_panels(i64 panels, const T* s, T* d, i64 panel_stride) {
  for (i64 jp = 0; jp < panels; ++jp) std::memcpy(d + jp * panel_stride, s + jp * NR, sizeof(T) * NR);
}

}  // namespace

template <typename T>
void im2col_pack_b(const void* ctx, i64 p0, i64 kc, i64 j0, i64 nc, int NR, T* dst) {
  const Im2colB<T>& B = *static_cast<const Im2colB<T>*>(ctx);
  const Conv2dParams& p = *B.p;
  constexpr i64 kChunk = 2048;  // columns per pass: the row buffer stays in L1
  alignas(64) T row[kChunk];
  const i64 panel = kc * NR, OHW = p.OH * p.OW;
  for (i64 jc = 0; jc < nc; jc += kChunk) {  // jc is a multiple of NR
    const i64 n = std::min(kChunk, nc - jc);
    T* dchunk = dst + (jc / NR) * panel;
    i64 c = p0 / (p.KH * p.KW), r = p0 % (p.KH * p.KW);
    i64 ky = r / p.KW, kx = r % p.KW;
    for (i64 q = 0; q < kc; ++q) {
      // Build the row image by image (a chunk may span several).
      for (i64 j = j0 + jc, end = j0 + jc + n; j < end;) {
        const i64 img = j / OHW, jl = j - img * OHW, e = std::min(end, (img + 1) * OHW);
        im2col_row(p, B.x + img * B.img_stride + c * p.H * p.W, ky, kx, jl, jl + (e - j),
                   row + (j - j0 - jc));
        j = e;
      }
      T* d = dchunk + q * NR;
      const i64 full = n / NR;
      switch (NR) {  // constant-size copies become inline vector moves
        case 8: scatter_panels<8>(full, row, d, panel); break;
        case 16: scatter_panels<16>(full, row, d, panel); break;
        case 32: scatter_panels<32>(full, row, d, panel); break;
        default:
          for (i64 jp = 0; jp < full; ++jp)
            for (int t = 0; t < NR; ++t) d[jp * panel + t] = row[jp * NR + t];
      }
      i64 j = full * NR;
      d += full * panel;
      if (j < n) {
        int t = 0;
        for (; t < n - j; ++t) d[t] = row[j + t];
        for (; t < NR; ++t) d[t] = T(0);
      }
      if (++kx == p.KW) { kx = 0; if (++ky == p.KH) { ky = 0; ++c; } }
    }
  }
}

template void im2col_pack_b<float>(const void*, i64, i64, i64, i64, int, float*);
template void im2col_pack_b<double>(const void*, i64, i64, i64, i64, int, double*);
template void im2col_rows<float>(const Conv2dParams&, const float*, i64, i64, float*, i64, int);
template void im2col_rows<double>(const Conv2dParams&, const double*, i64, i64, double*, i64, int);
template void col2im_rows<float>(const Conv2dParams&, const float*, i64, i64, i64, float*, int);
template void col2im_rows<double>(const Conv2dParams&, const double*, i64, i64, i64, double*, int);

}  // namespace pyconv
