// depthwise.cpp - see depthwise.h. Parallel over planes; every output element
// is written by one thread in a fixed order, so results do not depend on the
// thread count.
#include "ops/depthwise.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu/cpuinfo.h"
#include "cpu/parallel.h"
#include "ops/im2col.h"
#include "ops/plane.h"

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

namespace {

// Loops run output row by output row with all taps inside, so the output
// (or dx) row being updated stays in L1; the innermost loops are
// element-wise axpys the compiler vectorises.

template <typename T>
void forward_portable(const Conv2dParams& p, const T* x, const T* w, const T* b, T* y) {
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
void backward_data_portable(const Conv2dParams& p, const T* dy, const T* w, T* dx) {
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
void backward_weight_portable(const Conv2dParams& p, const T* dy, const T* x, T* dw) {
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

// ---- SIMD float32 path -------------------------------------------------
// Each plane is laid out in a per-thread buffer with a row pitch of its own
// so that every tap is a shifted slice, and the whole plane is then one flat
// kernel call (PlaneF32::flat): output index j = row * pitch + col. The
// columns col >= the row width are computed on garbage and dropped when the
// rows are copied out. Buffers larger than kPlaneMaxBuffer floats (huge padding
// or dilation) take the portable loops instead.
// dy dilated by the stride and zero-padded for backward-data:
// buf[OY0 + oy*SH][OX0 + ox*SW] = dy[oy][ox], zero elsewhere. Then
// dx[iy][ix] = sum_t w[t] * buf[off[t] + iy*pitch + ix] with
// off[(ky, kx)] = (OY0 + PT - ky*DH)*pitch + OX0 + PL - kx*DW >= 0.
struct DilatedLayout {
  i64 OY0, OX0, rows, pitch, size, L;
  std::vector<i64> off;
  bool ok;
  explicit DilatedLayout(const Conv2dParams& p) {
    OY0 = std::max<i64>(0, (p.KH - 1) * p.DH - p.PT);
    OX0 = std::max<i64>(0, (p.KW - 1) * p.DW - p.PL);
    rows = OY0 + p.PT + p.H;
    pitch = OX0 + p.PL + p.W;
    const double dsize = double(rows) * pitch + pitch + kPlanePad;  // (see PhaseLayout)
    ok = p.PT >= 0 && p.PL >= 0 && dsize <= kPlaneMaxBuffer &&
         double(p.H) * pitch + 8 <= kPlaneMaxBuffer && double(p.KH) * p.KW <= kPlaneMaxBuffer;
    size = L = 0;
    if (!ok) return;
    L = (p.H * pitch + 7) & ~i64(7);
    size = rows * pitch + pitch + kPlanePad;
    off.resize(p.KH * p.KW);
    for (i64 ky = 0; ky < p.KH; ++ky)
      for (i64 kx = 0; kx < p.KW; ++kx)
        off[ky * p.KW + kx] = (OY0 + p.PT - ky * p.DH) * pitch + OX0 + p.PL - kx * p.DW;
  }
  void fill(const Conv2dParams& p, const PlaneF32* k, const float* dyp, float* buf) const {
    // Columns at or past pitch are never read (and would wrap into the next row).
    const i64 ox1 = std::min(p.OW, (pitch - OX0 + p.SW - 1) / p.SW);
    const i64 oy1 = std::min(p.OH, (rows - OY0 + p.SH - 1) / p.SH);
    if (p.SW == 1) {
      k->copy2d(dyp, p.OW, buf + OY0 * pitch + OX0, p.SH * pitch, oy1, ox1, false);
      return;
    }
    for (i64 oy = 0; oy < oy1; ++oy) {
      const float* __restrict dr = dyp + oy * p.OW;
      float* __restrict row = buf + (OY0 + oy * p.SH) * pitch + OX0;
      for (i64 ox = 0; ox < ox1; ++ox) row[ox * p.SW] = dr[ox];
    }
  }
};

// Stride-1 undilated 3x3 on rows of 32 or more: the rows kernel has a
// register-blocked path for its taps (a 3x3 unit grid); on narrow maps its
// partial last vector costs more than the flat kernel's dropped columns.
bool unit3x3_wide(const Conv2dParams& p) {
  return p.KH == 3 && p.KW == 3 && p.SH == 1 && p.SW == 1 && p.DH == 1 && p.DW == 1 && p.W >= 32;
}

// unit3x3_wide's rows kernel runs over bands of kBand rows of its output:
// each band's kBand + 2 source rows are copied into a buffer of L1 size
// just before the kernel reads them, rather than the whole padded plane
// into one of L2 size first (MobileNet's 112 x 112 maps at batch 8: +41% on
// 1 thread, +46% on 2; batch 1 +3%, where 16-row bands lost 4% to copying
// halo rows and 8-row bands won).
constexpr i64 kBand = 8;

// Floats of a band buffer: kBand + 2 rows of pitch, and the kernels' slack.
inline i64 band_buffer(i64 pitch) { return (kBand + 2) * pitch + kPlanePad; }

// A layout's tap offsets moved up by `row0` rows: relative to a band's
// first row instead of the plane's.
inline std::vector<i64> band_offsets(const std::vector<i64>& off, i64 row0, i64 pitch) {
  std::vector<i64> o(off);
  for (i64& v : o) v -= row0 * pitch;
  return o;
}

// Walks R_total output rows in bands of kBand: for each, copies the band's
// kBand + 2 source rows of a plane (S x Ws) into buf (band row j holding
// source row r0 + j - top at columns [left, left + x1); zero rows outside
// the source) and calls body(r0, R) to run the kernel on them. buf:
// band_buffer(pitch) floats whose columns outside [left, left + x1) are
// zero (never written here).
template <typename Body>
void for_each_band(const PlaneF32* k, const float* src, i64 S, i64 Ws, i64 top, i64 left, i64 pitch,
                   i64 R_total, float* buf, Body body) {
  const i64 x1 = std::min(Ws, pitch - left);
  for (i64 r0 = 0; r0 < R_total; r0 += kBand) {
    const i64 R = std::min(kBand, R_total - r0);
    const i64 j0 = std::clamp<i64>(top - r0, 0, R + 2), j1 = std::clamp<i64>(S + top - r0, j0, R + 2);
    for (i64 j = 0; j < R + 2; ++j)
      if (j < j0 || j >= j1) std::fill(buf + j * pitch + left, buf + j * pitch + left + x1, 0.0f);
    if (j1 > j0) k->copy2d(src + (r0 + j0 - top) * Ws, Ws, buf + j0 * pitch + left, pitch, j1 - j0, x1, false);
    body(r0, R);
  }
}

// 3x3 stride-1 undilated depthwise (multiplier 1) on maps narrower than
// the rows path's 32 columns: 8 channels per vector (dw3c8_*; MobileNet's
// 14x14 and 7x7 layers), buffers of at most 4096 pixels.
bool dw3c8_shape(const Conv2dParams& p) {
  return p.KH == 3 && p.KW == 3 && p.SH == 1 && p.SW == 1 && p.DH == 1 && p.DW == 1 &&
         p.OC == p.C && p.W < 32 && p.OW < 32 && (p.OH + 2) * (p.OW + 2) <= 4096 &&
         (p.H + 2) * (p.W + 2) <= 4096;
}

// The weights of channels c0.. (nc of them) as dw3c8's [9][8] vectors,
// zero lanes past nc; flipped (tap t from 8 - t) for backward-data.
void dw3c8_weights(const float* w, i64 c0, int nc, bool flip, float* wt) {
  for (int t = 0; t < 9; ++t)
    for (int ch = 0; ch < 8; ++ch) wt[t * 8 + ch] = ch < nc ? w[(c0 + ch) * 9 + (flip ? 8 - t : t)] : 0.0f;
}

int simd_threads(const Conv2dParams& p, i64 units) {
  const double work = 2.0 * p.N * p.OC * p.OHW() * p.KH * p.KW;
  return (int)std::clamp<i64>(threads_for(work), 1, std::max<i64>(units, 1));
}

bool forward_simd(const Conv2dParams& p, const float* x, const float* w, const float* b,
                  float* y) {
  const PlaneF32* k = plane_f32();
  if (!k) return false;
#if defined(PYCONV_X86)
  if (dw3c8_shape(p)) {
    const i64 blocks = (p.C + 7) / 8, units = p.N * blocks;
    for_each_unit(simd_threads(p, units), dw3c8_buffer(p.OH, p.OW, p.H, p.W), units, [&](i64 u, float* buf) {
      const i64 n = u / blocks, c0 = u % blocks * 8;
      const int nc = (int)std::min<i64>(8, p.C - c0);
      alignas(32) float wt[72], bs[8];
      dw3c8_weights(w, c0, nc, false, wt);
      for (int ch = 0; ch < 8; ++ch) bs[ch] = b && ch < nc ? b[c0 + ch] : 0.0f;
      dw3c8_conv_avx2(x + (n * p.C + c0) * p.H * p.W, p.H * p.W, nc, p.H, p.W, p.PT, p.PL, wt, bs,
                      y + (n * p.OC + c0) * p.OHW(), p.OHW(), p.OH, p.OW, buf);
    });
    return true;
  }
#endif
  const PhaseLayout L(p);
  if (!L.ok) return false;
  const i64 mult = p.OC / p.C, OHW = p.OHW(), KK = p.KH * p.KW, planes = p.N * p.C;
  if (unit3x3_wide(p)) {  // each band copied once for all mult output channels
    for_each_unit(simd_threads(p, planes), band_buffer(L.pitch), planes, [&](i64 i, float* buf) {
      const i64 n = i / p.C, c = i % p.C;
      for_each_band(k, x + i * p.H * p.W, p.H, p.W, p.PT, p.PL, L.pitch, p.OH, buf, [&](i64 r0, i64 R) {
        for (i64 m = 0; m < mult; ++m) {
          const i64 oc = c * mult + m;
          k->rows(buf, L.pitch, L.off.data(), w + oc * KK, (int)KK, b ? b[oc] : 0.0f, false,
                  y + (n * p.OC + oc) * OHW + r0 * p.OW, p.OW, R, p.OW);
        }
      });
    });
    return true;
  }
  for_each_unit(simd_threads(p, planes), L.size + L.L + kPlanePad, planes, [&](i64 i, float* buf) {
    float* out = buf + L.size;
    const i64 n = i / p.C, c = i % p.C;
    L.fill(p, k, x + i * p.H * p.W, buf, false);
    for (i64 m = 0; m < mult; ++m) {
      const i64 oc = c * mult + m;
      const float bias = b ? b[oc] : 0.0f;
      float* yp = y + (n * p.OC + oc) * OHW;
      if (p.OW >= 32) {
        k->rows(buf, L.pitch, L.off.data(), w + oc * KK, (int)KK, bias, false, yp, p.OW, p.OH, p.OW);
      } else {
        k->flat(buf, L.off.data(), w + oc * KK, (int)KK, bias, false, out, L.L);
        k->copy2d(out, L.pitch, yp, p.OW, p.OH, p.OW, false);
      }
    }
  });
  return true;
}

bool backward_data_simd(const Conv2dParams& p, const float* dy, const float* w, float* dx) {
  const PlaneF32* k = plane_f32();
  if (!k) return false;
  const DilatedLayout L(p);
  if (!L.ok) return false;
  const i64 mult = p.OC / p.C, OHW = p.OHW(), KK = p.KH * p.KW, planes = p.N * p.C;
  // A zero-padded dy turns an inf/NaN weight into NaN where the direct
  // scatter adds nothing; such weights take the portable loops.
  for (i64 i = 0; i < p.OC * KK; ++i)
    if (!std::isfinite(w[i])) return false;
#if defined(PYCONV_X86)
  if (dw3c8_shape(p)) {  // the forward kernel on dy with flipped taps
    const i64 blocks = (p.C + 7) / 8, units = p.N * blocks, HW = p.H * p.W;
    for_each_unit(simd_threads(p, units), dw3c8_buffer(p.H, p.W, p.OH, p.OW), units, [&](i64 u, float* buf) {
      const i64 n = u / blocks, c0 = u % blocks * 8;
      const int nc = (int)std::min<i64>(8, p.C - c0);
      alignas(32) float wt[72];
      alignas(32) const float zero[8] = {};
      dw3c8_weights(w, c0, nc, true, wt);
      dw3c8_conv_avx2(dy + (n * p.OC + c0) * OHW, OHW, nc, p.OH, p.OW, 2 - p.PT, 2 - p.PL, wt, zero,
                      dx + (n * p.C + c0) * HW, HW, p.H, p.W, buf);
    });
    return true;
  }
#endif
  if (unit3x3_wide(p)) {  // straight into dx's rows; dx row iy reads dy rows iy + PT - 2 ..
    const std::vector<i64> off = band_offsets(L.off, L.OY0 + p.PT - 2, L.pitch);
    for_each_unit(simd_threads(p, planes), band_buffer(L.pitch), planes, [&](i64 i, float* buf) {
      const i64 n = i / p.C, c = i % p.C;
      for (i64 m = 0; m < mult; ++m) {  // each output channel's dy rows, accumulated
        const i64 oc = c * mult + m;
        float* dxp = dx + i * p.H * p.W;
        for_each_band(k, dy + (n * p.OC + oc) * OHW, p.OH, p.OW, 2 - p.PT, L.OX0, L.pitch, p.H, buf,
                      [&](i64 r0, i64 R) {
                        k->rows(buf, L.pitch, off.data(), w + oc * KK, (int)KK, 0.0f, m > 0,
                                dxp + r0 * p.W, p.W, R, p.W);
                      });
      }
    });
    return true;
  }
  for_each_unit(simd_threads(p, planes), L.size + L.L + kPlanePad, planes, [&](i64 i, float* buf) {
    float* out = buf + L.size;
    const i64 n = i / p.C, c = i % p.C;
    for (i64 m = 0; m < mult; ++m) {
      const i64 oc = c * mult + m;
      L.fill(p, k, dy + (n * p.OC + oc) * OHW, buf);
      k->flat(buf, L.off.data(), w + oc * KK, (int)KK, 0.0f, m > 0, out, L.L);
    }
    k->copy2d(out, L.pitch, dx + i * p.H * p.W, p.W, p.H, p.W, false);
  });
  return true;
}

// dy rows are spread to the phase pitch (zeros between them), so the flat
// dot products pair each dy with its taps; the dropped columns multiply
// zeros by x values, which is only exact while x is finite: a plane with an
// inf or NaN takes the row kernel, whose tails are masked.
bool backward_weight_simd(const Conv2dParams& p, const float* dy, const float* x, float* dw) {
  const PlaneF32* k = plane_f32();
  if (!k) return false;
  const PhaseLayout L(p);
  if (!L.ok) return false;
  const i64 mult = p.OC / p.C, OHW = p.OHW(), KK = p.KH * p.KW;
#if defined(PYCONV_X86)
  if (dw3c8_shape(p)) {  // threads own blocks of 8 channels, each over every image in turn
    const i64 blocks = (p.C + 7) / 8, HW = p.H * p.W;
    const int nt = simd_threads(p, blocks);
    ThreadBuffers tb(nt, dw3c8_buffer(p.OH, p.OW, p.H, p.W));
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (i64 cb = 0; cb < blocks; ++cb) {
      const i64 c0 = cb * 8;
      const int nc = (int)std::min<i64>(8, p.C - c0);
      double g[72] = {};
      for (i64 n = 0; n < p.N; ++n)
        dw3c8_wgrad_avx2(x + (n * p.C + c0) * HW, HW, nc, p.H, p.W, p.PT, p.PL, dy + (n * p.OC + c0) * OHW,
                         OHW, p.OH, p.OW, tb.mine(), g);
      for (int ch = 0; ch < nc; ++ch)
        for (int t = 0; t < 9; ++t) dw[(c0 + ch) * 9 + t] = float(g[t * 8 + ch]);
    }
    return true;
  }
#endif
  const int nt = simd_threads(p, p.OC);
  ThreadBuffers tb(nt, L.size + L.L + kPlanePad);
  std::vector<double> g_all(std::size_t(nt) * KK);  // (allocated outside the region)
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    float* buf = tb.mine();
    float* d = buf + L.size;
#ifdef _OPENMP
    double* g = g_all.data() + std::size_t(omp_get_thread_num()) * KK;
#else
    double* g = g_all.data();
#endif
#pragma omp for schedule(static)
    for (i64 oc = 0; oc < p.OC; ++oc) {
      const i64 c = oc / mult;
      std::fill(g, g + KK, 0.0);
      for (i64 n = 0; n < p.N; ++n) {
        const float* dyp = dy + (n * p.OC + oc) * OHW;
        if (unit3x3_wide(p)) {  // the row kernel's 3x3 path, on dy in place, band by band
          // (its float sums run over 8 dy rows at a time: the bands' rows)
          for_each_band(k, x + (n * p.C + c) * p.H * p.W, p.H, p.W, p.PT, p.PL, L.pitch, p.OH, buf,
                        [&](i64 r0, i64 R) {
                          k->wgrad(buf, L.pitch, L.off.data(), (int)KK, dyp + r0 * p.OW, p.OW, R, p.OW, g);
                        });
        } else if (L.fill(p, k, x + (n * p.C + c) * p.H * p.W, buf, true)) {
          k->copy2d(dyp, p.OW, d, L.pitch, p.OH, p.OW, false);
          k->flat_wgrad(buf, L.off.data(), (int)KK, d, L.L, g);
        } else {
          k->wgrad(buf, L.pitch, L.off.data(), (int)KK, dyp, p.OW, p.OH, p.OW, g);
        }
      }
      for (i64 t = 0; t < KK; ++t) dw[oc * KK + t] = float(g[t]);
    }
  }
  return true;
}

}  // namespace

const PlaneF32* plane_f32() {
#if defined(PYCONV_X86)
  if (active_isa() != Isa::ref && cpu_supports(Isa::avx2)) return &plane_f32_avx2;
#endif
  return nullptr;
}

template <typename T>
void depthwise_forward(const Conv2dParams& p, const T* x, const T* w, const T* b, T* y) {
  if constexpr (std::is_same_v<T, float>)
    if (forward_simd(p, x, w, b, y)) return;
  forward_portable(p, x, w, b, y);
}

template <typename T>
void depthwise_backward_data(const Conv2dParams& p, const T* dy, const T* w, T* dx) {
  if constexpr (std::is_same_v<T, float>)
    if (backward_data_simd(p, dy, w, dx)) return;
  backward_data_portable(p, dy, w, dx);
}

template <typename T>
void depthwise_backward_weight(const Conv2dParams& p, const T* dy, const T* x, T* dw) {
  if constexpr (std::is_same_v<T, float>)
    if (backward_weight_simd(p, dy, x, dw)) return;
  backward_weight_portable(p, dy, x, dw);
}

#define PYCONV_DW_INSTANTIATE(T)                                                              \
  template void depthwise_forward<T>(const Conv2dParams&, const T*, const T*, const T*, T*); \
  template void depthwise_backward_data<T>(const Conv2dParams&, const T*, const T*, T*);     \
  template void depthwise_backward_weight<T>(const Conv2dParams&, const T*, const T*, T*);
PYCONV_DW_INSTANTIATE(float)
PYCONV_DW_INSTANTIATE(double)

}  // namespace pyconv
