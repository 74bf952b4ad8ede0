// plane.h - shared machinery of the float32 SIMD paths that lay each NCHW
// plane out in a padded buffer (depthwise convolution, max pooling): the
// kernel table, the stride-phase layout and per-thread scratch.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "common.h"

namespace pyconv {

// SIMD float32 kernels over padded planes (depthwise convolution, pooling).
// The ops lay each plane out in a padded buffer (stride phases split
// apart, or dy dilated for backward-data) so that every tap t is a plain shifted slice src + off[t]
// with unit column stride; the kernels then run branch-free.
struct PlaneF32 {
  const char* name;
  // out[r*ldo + c] = base + sum_{t < taps} w[t] * src[off[t] + r*pitch + c],
  // r < R, c < n; base = bias, or out's own value when accumulate. The taps
  // are added in order t = 0, 1, ... to one accumulator per output, except
  // for 9 taps on a 3x3 unit grid (off[t] = off[0] + (t/3)*pitch + t%3, or
  // that reversed), which have a register-blocked path and are added in
  // spatial order (for the reversed grid, t = 8, 7, ..., 0).
  void (*rows)(const float* src, i64 pitch, const i64* off, const float* w, int taps,
               float bias, bool accumulate, float* out, i64 ldo, i64 R, i64 n);
  // g[t] += sum_{r < R, c < n} dy[r*ldd + c] * src[off[t] + r*pitch + c], in
  // float over at most 8 rows at a time, then folded into double (fixed order;
  // a 3x3 unit grid, as for rows, has its own path and order).
  void (*wgrad)(const float* src, i64 pitch, const i64* off, int taps, const float* dy, i64 ldd,
                i64 R, i64 n, double* g);
  // The same over one flat index: out[j] = base + sum_t w[t] * src[off[t] + j]
  // for j < L rounded up to 8 (out and src must have room for that).
  void (*flat)(const float* src, const i64* off, const float* w, int taps, float bias,
               bool accumulate, float* out, i64 L);
  // g[t] += sum_{j < L} d[j] * src[off[t] + j], L a multiple of 8; float
  // partial sums over 1024 elements at a time, folded into double.
  void (*flat_wgrad)(const float* src, const i64* off, int taps, const float* d, i64 L,
                     double* g);
  // dst[r*dp + c] = src[r*sp + c] for r < R, c < n. With check, returns
  // false if any copied value is inf or NaN (else true).
  bool (*copy2d)(const float* src, i64 sp, float* dst, i64 dp, i64 R, i64 n, bool check);
  // even[c] = src[2c], odd[c] = src[2c + 1] for the n elements of src; the
  // same check as copy2d.
  bool (*split2)(const float* src, i64 n, float* even, float* odd, bool check);
  // Max pooling over the same slices: out[j] = max_t src[off[t] + j] and
  // arg[j] = the winning t, for j < L rounded up to 8. A tap wins when it is
  // > the running maximum (which starts at -inf) or NaN, as the scalar
  // loops; arg[j] = -1 if none did (every tap was -inf).
  void (*max_flat)(const float* src, const i64* off, int taps, float* out, std::int32_t* arg,
                   i64 L);
  // 3x3 stride-2 max pooling of one H x W plane, padding ph, pw in {0, 1},
  // OW >= 8, H * W < 2^31: y (OH x OW) and, if idx is non-null, the flat
  // index in the plane of each window's winner (the taps in (ky, kx) order,
  // the max_flat rule; a window with no winner gets its first in-input tap).
  // scratch: max_pool3s2_scratch(H, OW) floats.
  void (*max_pool3s2)(const float* x, i64 H, i64 W, i64 ph, i64 pw, i64 OH, i64 OW, float* y,
                      std::int64_t* idx, float* scratch);
};

// The row-phase buffer max_pool3s2 needs: every input row split into its
// even and odd columns, OW + 2 of each with -inf beyond the row.
inline i64 max_pool3s2_scratch(i64 H, i64 OW) { return H * 2 * (OW + 2) + 64; }

// The table for the active ISA, or nullptr when it is 'ref' (or the CPU has
// no AVX2+FMA): the ops then run their portable loops.
const PlaneF32* plane_f32();

#if defined(PYCONV_X86)
extern const PlaneF32 plane_f32_avx2;
#endif


// Buffers larger than this (huge padding or dilation) take the portable loops.
constexpr i64 kPlaneMaxBuffer = i64(1) << 22;  // floats per thread
constexpr i64 kPlanePad = 64;  // floats past every buffer's end that kernels may touch

// The padded input plane of forward / backward-weight, split into its
// SH x SW stride phases: phase (py, px) row r, column c holds the padded
// plane's element (r*SH + py, c*SW + px), i.e. x[r*SH + py - PT][c*SW + px - PL]
// or 0. Output (oy, ox) then reads tap (ky, kx) at phase
// ((ky*DH) % SH, (kx*DW) % SW), row oy + (ky*DH) / SH, column ox + (kx*DW) / SW.
// The padding positions are the same for every plane, so a buffer is filled
// with the padding value once (0 for convolution, -inf for max pooling) and
// only the data positions are rewritten.
struct PhaseLayout {
  i64 Hpad, Wpad, Rp, pitch, size, L;
  std::vector<i64> off;  // per tap, (ky, kx) row-major
  bool ok;
  explicit PhaseLayout(const Conv2dParams& p) {
    Hpad = (p.OH - 1) * p.SH + (p.KH - 1) * p.DH + 1;  // each term < 2^62 (sizes < 2^31)
    Wpad = (p.OW - 1) * p.SW + (p.KW - 1) * p.DW + 1;
    Rp = (Hpad + p.SH - 1) / p.SH;
    pitch = (Wpad + p.SW - 1) / p.SW;  // >= OW + (KW-1)*DW / SW
    // Decided in double first: the products below overflow for huge
    // strides / kernels, which then take the portable loops.
    const double dsize = double(p.SH) * p.SW * Rp * pitch + pitch + kPlanePad;
    const double dL = double(p.OH) * pitch + 8, taps = double(p.KH) * p.KW;
    ok = p.PT >= 0 && p.PL >= 0 && dsize <= kPlaneMaxBuffer && dL <= kPlaneMaxBuffer &&
         taps <= kPlaneMaxBuffer;
    size = L = 0;
    if (!ok) return;
    L = (p.OH * pitch + 7) & ~i64(7);
    size = p.SH * p.SW * Rp * pitch + pitch + kPlanePad;
    off.resize(p.KH * p.KW);
    for (i64 ky = 0; ky < p.KH; ++ky)
      for (i64 kx = 0; kx < p.KW; ++kx) {
        const i64 py = (ky * p.DH) % p.SH, px = (kx * p.DW) % p.SW;
        off[ky * p.KW + kx] =
            ((py * p.SW + px) * Rp + (ky * p.DH) / p.SH) * pitch + (kx * p.DW) / p.SW;
      }
  }
  // Copies plane xc in; with check, returns false if any value is inf or NaN.
  bool fill(const Conv2dParams& p, const PlaneF32* k, const float* xc, float* buf,
            bool check) const {
    const i64 x1 = std::min(p.W, Wpad - p.PL), y1 = std::min(p.H, Hpad - p.PT);
    if (p.SH == 1 && p.SW == 1)
      return k->copy2d(xc, p.W, buf + p.PT * pitch + p.PL, pitch, y1, x1, check);
    bool ok = true;
    std::uint32_t bad = 0;
    i64 py = p.PT % p.SH, r = p.PT / p.SH;  // phase row of iy = 0
    for (i64 iy = 0; iy < y1; ++iy) {
      const float* __restrict xr = xc + iy * p.W;
      float* __restrict row = buf + (py * p.SW * Rp + r) * pitch;
      if (p.SW == 1) {
        ok &= k->copy2d(xr, 0, row + p.PL, 0, 1, x1, check);
      } else if (p.SW == 2) {  // x[0::2] and x[1::2] go to the phases of PL and PL + 1
        float* ph0 = row + (p.PL % 2) * Rp * pitch + p.PL / 2;
        float* ph1 = row + ((p.PL + 1) % 2) * Rp * pitch + (p.PL + 1) / 2;
        ok &= k->split2(xr, x1, ph0, ph1, check);
      } else {
        for (i64 px = 0; px < p.SW; ++px) {  // columns pc = c*SW + px, pc = ix + PL
          float* __restrict ph = row + px * Rp * pitch;
          i64 ix = ((px - p.PL) % p.SW + p.SW) % p.SW;
          for (i64 c = (ix + p.PL) / p.SW; ix < x1; ix += p.SW, ++c) {
            ph[c] = xr[ix];
            if (check) bad |= nonfinite_bits(xr[ix]);
          }
        }
      }
      if (++py == p.SH) py = 0, ++r;
    }
    return ok && bad == 0;
  }
  static std::uint32_t nonfinite_bits(float v) {
    std::uint32_t u;
    std::memcpy(&u, &v, 4);
    return (u & 0x7f800000u) == 0x7f800000u;
  }
};

// Per-thread scratch of per_thread floats each, filled with `fill`.
struct ThreadBuffers {
  std::vector<float> all;
  i64 stride;
  ThreadBuffers(int nt, i64 per_thread, float fill = 0.0f)
      : all(std::size_t(nt) * per_thread, fill), stride(per_thread) {}
  float* mine() {
#ifdef _OPENMP
    return all.data() + std::size_t(omp_get_thread_num()) * stride;
#else
    return all.data();
#endif
  }
};

// Runs body(i, buf) for i < units on nt threads (static split), each thread
// with its own buffer of `floats` floats, filled with `fill` once.
template <typename Body>
void for_each_unit(int nt, i64 floats, i64 units, Body body, float fill = 0.0f) {
  ThreadBuffers tb(nt, floats, fill);
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    float* buf = tb.mine();
#pragma omp for schedule(static)
    for (i64 i = 0; i < units; ++i) body(i, buf);
  }
}

}  // namespace pyconv
