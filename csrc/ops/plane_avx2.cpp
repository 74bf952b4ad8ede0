// plane_avx2.cpp - the AVX2+FMA PlaneF32 table (compiled with -mavx2
// -mfma only here; everything but the table is in an anonymous namespace so
// no AVX2 code leaks into the portable paths). See plane.h for the
// contracts.
//
// rows: register tiles of 4 output rows x 16 columns (8 accumulators, so
// the FMA latency is hidden); each tap broadcasts its weight once per tile.
// Column tails are stored through a small temp (masked stores are slow on
// AMD cores); their loads stay inside the caller's
// buffer (it has a slack of kPlanePad floats), and lanes past n are dropped.
// wgrad: one accumulator per tap (up to 12 taps per pass), dy loaded once
// per vector and reused by every tap; tails load both operands masked, so a
// non-finite value past the row never meets a zero. Partial sums are folded
// into double every 8 rows, in a fixed order.
#include <immintrin.h>

#include <limits>
#include <type_traits>

#include "ops/plane.h"
#include "ops/simd_avx2.h"

namespace pyconv {
namespace {

using V = __m256;

inline __m256i tail_mask(i64 n) {  // lanes [0, n) set, 0 < n < 8
  alignas(32) static const int bits[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bits + 8 - n));
}

// One tile: RB rows x NV vectors at out (row pitch ldo), sources at
// src + off[t] (row pitch pitch). mask != nullptr: the last vector is a tail.
template <int RB, int NV>
inline void rows_tile(const float* src, i64 pitch, const i64* off, const float* w, int taps,
                      float bias, bool accumulate, float* out, i64 ldo, const __m256i* mask) {
  V acc[RB][NV];
  for (int r = 0; r < RB; ++r)
    for (int v = 0; v < NV; ++v) {
      float* o = out + r * ldo + 8 * v;
      if (!accumulate)
        acc[r][v] = _mm256_set1_ps(bias);
      else if (mask && v == NV - 1)
        acc[r][v] = _mm256_maskload_ps(o, *mask);
      else
        acc[r][v] = _mm256_loadu_ps(o);
    }
  for (int t = 0; t < taps; ++t) {
    const V wv = _mm256_broadcast_ss(w + t);
    const float* s = src + off[t];
    for (int r = 0; r < RB; ++r)
      for (int v = 0; v < NV; ++v)
        acc[r][v] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(s + r * pitch + 8 * v), acc[r][v]);
  }
  for (int r = 0; r < RB; ++r)
    for (int v = 0; v < NV; ++v) {
      float* o = out + r * ldo + 8 * v;
      if (mask && v == NV - 1) {  // masked stores are slow on AMD cores
        alignas(32) float tmp[8];
        alignas(32) int lanes[8];
        _mm256_store_ps(tmp, acc[r][v]);
        _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), *mask);
        for (int l = 0; l < 8 && lanes[l]; ++l) o[l] = tmp[l];
      } else {
        _mm256_storeu_ps(o, acc[r][v]);
      }
    }
}

template <int RB>
inline void rows_block(const float* src, i64 pitch, const i64* off, const float* w, int taps,
                       float bias, bool accumulate, float* out, i64 ldo, i64 n) {
  i64 c = 0;
  for (; c + 16 <= n; c += 16)
    rows_tile<RB, 2>(src + c, pitch, off, w, taps, bias, accumulate, out + c, ldo, nullptr);
  const i64 rest = n - c;
  if (rest == 0) return;
  if (rest > 8) {
    const __m256i m = tail_mask(rest - 8);
    rows_tile<RB, 2>(src + c, pitch, off, w, taps, bias, accumulate, out + c, ldo, &m);
  } else if (rest == 8) {
    rows_tile<RB, 1>(src + c, pitch, off, w, taps, bias, accumulate, out + c, ldo, nullptr);
  } else {
    const __m256i m = tail_mask(rest);
    rows_tile<RB, 1>(src + c, pitch, off, w, taps, bias, accumulate, out + c, ldo, &m);
  }
}

// ---- 3x3 taps on a unit grid: src + dy * pitch + dx, dy, dx < 3 ----------
// (stride-1 undilated depthwise forward and backward-data.) Each loaded
// vector of an input row serves every output row of the tile it reaches
// (up to three), where the general tile loads once per tap: 18 loads per
// 36 FMAs for 4 rows x 8 columns, the 9 weights held in registers (4 + 9 +
// 1 of the 16 ymm). ws is in spatial order (ws[dy * 3 + dx]); each output
// adds its taps in that order to one accumulator.
template <int RB>
inline void dw3_band(const float* s, i64 pitch, const V* ws, float bias, bool accumulate, float* out,
                     i64 ldo, i64 n) {
  // One base pointer per input and output row and one column index: the
  // tile's addresses then need no spilled offsets.
  const float* rp[RB + 2];
  float* op[RB];
#pragma GCC unroll 6
  for (int i = 0; i < RB + 2; ++i) rp[i] = s + i * pitch;
#pragma GCC unroll 4
  for (int r = 0; r < RB; ++r) op[r] = out + r * ldo;
  const i64 full = n & ~i64(7);
  const __m256i m = tail_mask(n > full ? n - full : 1);
  for (i64 c = 0; c < n; c += 8) {
    const bool tail = c == full;  // the last, partial vector
    V acc[RB];
#pragma GCC unroll 4
    for (int r = 0; r < RB; ++r)
      acc[r] = !accumulate ? _mm256_set1_ps(bias)
               : tail      ? _mm256_maskload_ps(op[r] + c, m)
                           : _mm256_loadu_ps(op[r] + c);
#pragma GCC unroll 6
    for (int i = 0; i < RB + 2; ++i)
#pragma GCC unroll 3
      for (int dx = 0; dx < 3; ++dx) {
        const V v = _mm256_loadu_ps(rp[i] + c + dx);
#pragma GCC unroll 4
        for (int r = 0; r < RB; ++r)
          if (i - r >= 0 && i - r < 3) acc[r] = _mm256_fmadd_ps(ws[(i - r) * 3 + dx], v, acc[r]);
      }
    if (!tail) {
#pragma GCC unroll 4
      for (int r = 0; r < RB; ++r) _mm256_storeu_ps(op[r] + c, acc[r]);
    } else {  // masked stores are slow on AMD cores
#pragma GCC unroll 4
      for (int r = 0; r < RB; ++r) {
        alignas(32) float tmp[8];
        _mm256_store_ps(tmp, acc[r]);
        for (i64 l = 0; l < n - full; ++l) op[r][c + l] = tmp[l];
      }
    }
  }
}

void dw3_rows(const float* s, i64 pitch, const float* w9, float bias, bool accumulate, float* out,
              i64 ldo, i64 R, i64 n) {
  V ws[9];
  for (int t = 0; t < 9; ++t) ws[t] = _mm256_broadcast_ss(w9 + t);
  i64 r = 0;
  for (; r + 4 <= R; r += 4) dw3_band<4>(s + r * pitch, pitch, ws, bias, accumulate, out + r * ldo, ldo, n);
  for (; r < R; ++r) dw3_band<1>(s + r * pitch, pitch, ws, bias, accumulate, out + r * ldo, ldo, n);
}

// Whether off[0..9) is the 3x3 unit grid, in spatial order (+1) or reversed
// (-1, backward-data's flipped taps), else 0.
int unit_grid3(const i64* off, int taps, i64 pitch) {
  if (taps != 9) return 0;
  bool fwd = true, rev = true;
  for (int t = 0; t < 9; ++t) {
    const i64 d = (t / 3) * pitch + t % 3;
    fwd &= off[t] == off[0] + d;
    rev &= off[8 - t] == off[8] + d;
  }
  return fwd ? 1 : rev ? -1 : 0;
}

void rows_f32(const float* src, i64 pitch, const i64* off, const float* w, int taps, float bias,
              bool accumulate, float* out, i64 ldo, i64 R, i64 n) {
  if (const int g = unit_grid3(off, taps, pitch)) {
    float w9[9];
    for (int t = 0; t < 9; ++t) w9[t] = g > 0 ? w[t] : w[8 - t];
    return dw3_rows(src + (g > 0 ? off[0] : off[8]), pitch, w9, bias, accumulate, out, ldo, R, n);
  }
  i64 r = 0;
  for (; r + 4 <= R; r += 4)
    rows_block<4>(src + r * pitch, pitch, off, w, taps, bias, accumulate, out + r * ldo, ldo, n);
  for (; r < R; ++r)
    rows_block<1>(src + r * pitch, pitch, off, w, taps, bias, accumulate, out + r * ldo, ldo, n);
}

// Sum of the 8 lanes in double, lanes 0..7 in a fixed tree.
inline double hsum_pd(V v) {
  const __m256d a = _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)),
                                  _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
  __m128d s = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
  s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
  return _mm_cvtsd_f64(s);
}

template <int TC>
void wgrad_taps(const float* src, i64 pitch, const i64* off, const float* dy, i64 ldd, i64 R,
                i64 n, double* g) {
  const i64 nfull = n & ~i64(7);
  const __m256i m = tail_mask(n - nfull > 0 ? n - nfull : 1);
  for (i64 r0 = 0; r0 < R; r0 += 8) {
    const i64 r1 = r0 + 8 < R ? r0 + 8 : R;
    V acc[TC];
    for (int t = 0; t < TC; ++t) acc[t] = _mm256_setzero_ps();
    for (i64 r = r0; r < r1; ++r) {
      const float* d = dy + r * ldd;
      const float* s = src + r * pitch;
      for (i64 c = 0; c < nfull; c += 8) {
        const V dv = _mm256_loadu_ps(d + c);
        for (int t = 0; t < TC; ++t)
          acc[t] = _mm256_fmadd_ps(dv, _mm256_loadu_ps(s + off[t] + c), acc[t]);
      }
      if (nfull < n) {
        const V dv = _mm256_maskload_ps(d + nfull, m);
        for (int t = 0; t < TC; ++t)
          acc[t] = _mm256_fmadd_ps(dv, _mm256_maskload_ps(s + off[t] + nfull, m), acc[t]);
      }
    }
    for (int t = 0; t < TC; ++t) g[t] += hsum_pd(acc[t]);
  }
}

// Calls f(std::integral_constant<int, TC>{}, t) over the taps in chunks of
// TC: 12 at a time (one accumulator per tap), then the 1..11 left.
template <int K = 1, typename F>
inline void rest_chunk(int rest, F& f, int t) {
  if constexpr (K <= 11) {
    if (rest == K) return f(std::integral_constant<int, K>{}, t);
    rest_chunk<K + 1>(rest, f, t);
  }
}
template <typename F>
inline void for_tap_chunks(int taps, F f) {
  int t = 0;
  for (; t + 12 <= taps; t += 12) f(std::integral_constant<int, 12>{}, t);
  rest_chunk(taps - t, f, t);
}

// The 3x3 unit grid (taps at s + dy * pitch + dx): source row i of a band
// feeds taps (ky, kx) through dy rows i - ky, so each of its three shifted
// vectors is loaded once for up to three FMAs (6 loads per 9 FMAs, against
// 10 with a load per tap). K0..K2: which of rows i, i - 1, i - 2 are in the
// band. Tails load both operands masked, as wgrad_taps.
template <bool K0, bool K1, bool K2>
inline void wgrad3_row(const float* s, const float* d0, const float* d1, const float* d2, i64 nfull,
                       i64 n, const __m256i& m, V* acc) {
  auto step = [&](i64 c, bool tail) {
    auto ld = [&](const float* p) { return tail ? _mm256_maskload_ps(p + c, m) : _mm256_loadu_ps(p + c); };
    const V v0 = ld(s), v1 = ld(s + 1), v2 = ld(s + 2);
    if (K0) {
      const V dv = ld(d0);
      acc[0] = _mm256_fmadd_ps(dv, v0, acc[0]);
      acc[1] = _mm256_fmadd_ps(dv, v1, acc[1]);
      acc[2] = _mm256_fmadd_ps(dv, v2, acc[2]);
    }
    if (K1) {
      const V dv = ld(d1);
      acc[3] = _mm256_fmadd_ps(dv, v0, acc[3]);
      acc[4] = _mm256_fmadd_ps(dv, v1, acc[4]);
      acc[5] = _mm256_fmadd_ps(dv, v2, acc[5]);
    }
    if (K2) {
      const V dv = ld(d2);
      acc[6] = _mm256_fmadd_ps(dv, v0, acc[6]);
      acc[7] = _mm256_fmadd_ps(dv, v1, acc[7]);
      acc[8] = _mm256_fmadd_ps(dv, v2, acc[8]);
    }
  };
  for (i64 c = 0; c < nfull; c += 8) step(c, false);
  if (nfull < n) step(nfull, true);
}

// g[ky * 3 + kx] += sum dy[r][c] * s[(r + ky) * pitch + c + kx], in bands of
// 8 dy rows as wgrad_taps (float within a band, then double).
void wgrad3(const float* s, i64 pitch, const float* dy, i64 ldd, i64 R, i64 n, double* g) {
  const i64 nfull = n & ~i64(7);
  const __m256i m = tail_mask(n - nfull > 0 ? n - nfull : 1);
  for (i64 r0 = 0; r0 < R; r0 += 8) {
    const i64 r1 = r0 + 8 < R ? r0 + 8 : R;
    V acc[9];
    for (int t = 0; t < 9; ++t) acc[t] = _mm256_setzero_ps();
    for (i64 i = r0; i < r1 + 2; ++i) {  // source rows of the band
      const float* si = s + i * pitch;
      const bool k0 = i < r1, k1 = i - 1 >= r0 && i - 1 < r1, k2 = i - 2 >= r0;
      // (rows outside the band are never formed: they may lie outside dy)
      const float* d0 = dy + (k0 ? i : r0) * ldd;
      const float* d1 = dy + (k1 ? i - 1 : r0) * ldd;
      const float* d2 = dy + (k2 ? i - 2 : r0) * ldd;
      if (k0 && k1 && k2) wgrad3_row<true, true, true>(si, d0, d1, d2, nfull, n, m, acc);
      else if (k0 && k1) wgrad3_row<true, true, false>(si, d0, d1, d2, nfull, n, m, acc);
      else if (k0 && k2) wgrad3_row<true, false, true>(si, d0, d1, d2, nfull, n, m, acc);
      else if (k1 && k2) wgrad3_row<false, true, true>(si, d0, d1, d2, nfull, n, m, acc);
      else if (k0) wgrad3_row<true, false, false>(si, d0, d1, d2, nfull, n, m, acc);
      else if (k1) wgrad3_row<false, true, false>(si, d0, d1, d2, nfull, n, m, acc);
      else if (k2) wgrad3_row<false, false, true>(si, d0, d1, d2, nfull, n, m, acc);
    }
    for (int t = 0; t < 9; ++t) g[t] += hsum_pd(acc[t]);
  }
}

void wgrad_f32(const float* src, i64 pitch, const i64* off, int taps, const float* dy, i64 ldd,
               i64 R, i64 n, double* g) {
  if (unit_grid3(off, taps, pitch) > 0) return wgrad3(src + off[0], pitch, dy, ldd, R, n, g);
  for_tap_chunks(taps, [&](auto tc, int t) {
    wgrad_taps<decltype(tc)::value>(src, pitch, off + t, dy, ldd, R, n, g + t);
  });
}


// ---- flat kernels: one long row over a whole plane (see plane.h) ----

template <int NV>
inline void flat_tile(const float* src, const i64* off, const float* w, int taps, float bias,
                      bool accumulate, float* out) {
  V acc[NV];
  for (int v = 0; v < NV; ++v)
    acc[v] = accumulate ? _mm256_loadu_ps(out + 8 * v) : _mm256_set1_ps(bias);
  for (int t = 0; t < taps; ++t) {
    const V wv = _mm256_broadcast_ss(w + t);
    const float* s = src + off[t];
    for (int v = 0; v < NV; ++v) acc[v] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(s + 8 * v), acc[v]);
  }
  for (int v = 0; v < NV; ++v) _mm256_storeu_ps(out + 8 * v, acc[v]);
}

void flat_f32(const float* src, const i64* off, const float* w, int taps, float bias,
              bool accumulate, float* out, i64 L) {
  i64 j = 0;
  for (; j + 64 <= L; j += 64) flat_tile<8>(src + j, off, w, taps, bias, accumulate, out + j);
  for (; j + 32 <= L; j += 32) flat_tile<4>(src + j, off, w, taps, bias, accumulate, out + j);
  for (; j < L; j += 8) flat_tile<1>(src + j, off, w, taps, bias, accumulate, out + j);
}

template <int TC>
void flat_wgrad_taps(const float* src, const i64* off, const float* d, i64 L, double* g) {
  for (i64 j0 = 0; j0 < L; j0 += 1024) {
    const i64 j1 = j0 + 1024 < L ? j0 + 1024 : L;
    V acc[TC];
    for (int t = 0; t < TC; ++t) acc[t] = _mm256_setzero_ps();
    for (i64 j = j0; j < j1; j += 8) {
      const V dv = _mm256_loadu_ps(d + j);
      for (int t = 0; t < TC; ++t)
        acc[t] = _mm256_fmadd_ps(dv, _mm256_loadu_ps(src + off[t] + j), acc[t]);
    }
    for (int t = 0; t < TC; ++t) g[t] += hsum_pd(acc[t]);
  }
}

void flat_wgrad_f32(const float* src, const i64* off, int taps, const float* d, i64 L, double* g) {
  for_tap_chunks(taps, [&](auto tc, int t) {
    flat_wgrad_taps<decltype(tc)::value>(src, off + t, d, L, g + t);
  });
}


// ---- data movement --------------------------------------------------------

inline V nonfinite(V v) { return outside(v, _mm256_set1_ps(__builtin_inff())); }

// Masked stores are slow on AMD cores, so a row's tail is one more full
// vector ending at the row's end (rewriting a few equal values), or scalars
// when the row is shorter than a vector.
template <bool Check>
bool copy2d_impl(const float* src, i64 sp, float* dst, i64 dp, i64 R, i64 n) {
  V bad = _mm256_setzero_ps();
  bool ok = true;
  for (i64 r = 0; r < R; ++r) {
    const float* s = src + r * sp;
    float* d = dst + r * dp;
    if (n < 8) {
      for (i64 c = 0; c < n; ++c) {
        d[c] = s[c];
        if (Check && !(s[c] - s[c] == 0.0f)) ok = false;
      }
      continue;
    }
    for (i64 c = 0;; c += 8) {
      if (c > n - 8) c = n - 8;
      const V v = _mm256_loadu_ps(s + c);
      if (Check) bad = _mm256_or_ps(bad, nonfinite(v));
      _mm256_storeu_ps(d + c, v);
      if (c == n - 8) break;
    }
  }
  return ok && _mm256_movemask_ps(bad) == 0;
}

bool copy2d_f32(const float* src, i64 sp, float* dst, i64 dp, i64 R, i64 n, bool check) {
  return check ? copy2d_impl<true>(src, sp, dst, dp, R, n) : copy2d_impl<false>(src, sp, dst, dp, R, n);
}

bool split2_f32(const float* src, i64 n, float* even, float* odd, bool check) {
  return split2_avx2(src, n, even, odd, check, __builtin_inff());
}

// ---- max pooling --------------------------------------------------------

template <int NV>
inline void max_tile(const float* src, const i64* off, int taps, float* out, std::int32_t* arg) {
  V m[NV];
  __m256i k[NV];
  for (int v = 0; v < NV; ++v) {
    m[v] = _mm256_set1_ps(-__builtin_inff());
    k[v] = _mm256_set1_epi32(-1);
  }
  for (int t = 0; t < taps; ++t) {
    const float* s = src + off[t];
    const __m256i tv = _mm256_set1_epi32(t);
    for (int v = 0; v < NV; ++v) {
      const V x = _mm256_loadu_ps(s + 8 * v);
      const V take = _mm256_or_ps(_mm256_cmp_ps(x, m[v], _CMP_GT_OQ), _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
      m[v] = _mm256_blendv_ps(m[v], x, take);
      k[v] = _mm256_castps_si256(
          _mm256_blendv_ps(_mm256_castsi256_ps(k[v]), _mm256_castsi256_ps(tv), take));
    }
  }
  for (int v = 0; v < NV; ++v) {
    _mm256_storeu_ps(out + 8 * v, m[v]);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(arg + 8 * v), k[v]);
  }
}

void max_flat_f32(const float* src, const i64* off, int taps, float* out, std::int32_t* arg, i64 L) {
  i64 j = 0;
  for (; j + 32 <= L; j += 32) max_tile<4>(src + j, off, taps, out + j, arg + j);
  for (; j < L; j += 8) max_tile<1>(src + j, off, taps, out + j, arg + j);
}

}  // namespace

// 3x3 stride-2 max pooling (ResNet's stem pool; see PlaneF32::max_pool3s2).
// Each input row is split once into its even and odd columns (E[j] =
// x[2j], O[j] = x[2j + 1], j from -1, -inf outside the row), so the window
// column 2 ox + kx - pw is E or O at ox plus a shift of 0 or -1 / +1, and
// each tap of 8 outputs is one load. The winner's code ky * W + kx rides in
// an integer vector beside the maximum.
namespace {

// The output rows of max_pool3s2_f32 from the split rows (see there). NaN:
// whether the plane holds one; without, a tap wins by v > m alone.
template <bool NaN>
void max_pool3s2_rows(const float* scratch, i64 P, i64 H, i64 W, i64 ph, i64 pw, i64 OH, i64 OW,
                      float* y, std::int64_t* idx) {
  // Blocks of 8 outputs per row (the last overlapping its neighbour), four
  // at a time with every tap step written for the four in turn: one block's
  // compare-and-blend chain through nine taps is ~50 cycles, and blocks
  // taken one after another barely overlapped (2 us a 28x28 plane).
  const float ninf = -std::numeric_limits<float>::infinity();
  const i64 nblk = (OW + 7) / 8;
  const __m256i lane2 = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
  for (i64 oy = 0; oy < OH; ++oy) {
    const i64 h0 = 2 * oy - ph;
    const int ky0 = h0 < 0 ? int(-h0) : 0, ky1 = h0 + 3 > H ? int(H - h0) : 3;
    for (i64 b0 = 0; b0 < nblk; b0 += 4) {
      constexpr int U = 4;
      i64 oxs[U];
      for (int u = 0; u < U; ++u) {  // past the last block: the last again (the same stores)
        const i64 bi = b0 + u < nblk ? b0 + u : nblk - 1;
        oxs[u] = bi * 8 > OW - 8 ? OW - 8 : bi * 8;
      }
      V m[U];
      __m256i code[U];
      for (int u = 0; u < U; ++u) {
        m[u] = _mm256_set1_ps(ninf);
        // A window with no winner reports its first in-input tap: row ky0,
        // and column 1 for the window at column -1 (ox = 0 with pw = 1).
        code[u] = _mm256_set1_epi32(int(ky0 * W));
        if (oxs[u] == 0 && pw > 0) code[u] = _mm256_add_epi32(code[u], _mm256_setr_epi32(1, 0, 0, 0, 0, 0, 0, 0));
      }
      for (int ky = ky0; ky < ky1; ++ky) {
        const float* e = scratch + (h0 + ky) * 2 * P + 1;
        for (int kx = 0; kx < 3; ++kx) {
          const i64 d = kx - pw;  // column 2 (ox + s) + parity
          const float* src = ((d & 1) ? e + P : e) + (d >> 1);
          const __m256 tc = _mm256_castsi256_ps(_mm256_set1_epi32(int(ky * W + kx)));
          for (int u = 0; u < U; ++u) {
            const V v = _mm256_loadu_ps(src + oxs[u]);
            V win = _mm256_cmp_ps(v, m[u], _CMP_GT_OQ);  // v > m (or v NaN): take v
            if (NaN) win = _mm256_or_ps(win, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
            m[u] = _mm256_blendv_ps(m[u], v, win);
            code[u] = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(code[u]), tc, win));
          }
        }
      }
      for (int u = 0; u < U; ++u) {
        const i64 ox = oxs[u];
        _mm256_storeu_ps(y + oy * OW + ox, m[u]);
        if (!idx) continue;
        // flat index = h0 * W + (2 (ox + lane) - pw) + code, in int32 (H * W < 2^31)
        const __m256i base = _mm256_add_epi32(_mm256_set1_epi32(int(h0 * W + 2 * ox - pw)), lane2);
        const __m256i f = _mm256_add_epi32(base, code[u]);
        std::int64_t* ip = idx + oy * OW + ox;
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(ip), _mm256_cvtepi32_epi64(_mm256_castsi256_si128(f)));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(ip + 4), _mm256_cvtepi32_epi64(_mm256_extracti128_si256(f, 1)));
      }
    }
  }
}

}  // namespace

// 3x3 stride-2 max pooling (ResNet's stem pool; see PlaneF32::max_pool3s2).
// Each input row is split once into its even and odd columns (E[j] =
// x[2j], O[j] = x[2j + 1], j from -1, -inf outside the row), so the window
// column 2 ox + kx - pw is E or O at ox plus a shift of 0 or -1 / +1, and
// each tap of 8 outputs is one load. The winner's code ky * W + kx rides in
// an integer vector beside the maximum.
void max_pool3s2_f32(const float* x, i64 H, i64 W, i64 ph, i64 pw, i64 OH, i64 OW, float* y,
                     std::int64_t* idx, float* scratch) {
  const i64 P = OW + 2;  // per row: E then O, each P floats, index j + 1
  const float ninf = -std::numeric_limits<float>::infinity();
  // The whole plane is split first (splitting each row just before its first
  // use measured 13% slower), noting whether it holds a NaN.
  V nan = _mm256_setzero_ps();
  bool any_nan = false;
  for (i64 r = 0; r < H; ++r) {
    float* e = scratch + r * 2 * P;
    float* o = e + P;
    const float* xr = x + r * W;
    e[0] = o[0] = ninf;
    i64 j = 0;
    for (; j + 8 <= OW + 1 && 2 * j + 16 <= W; j += 8) {
      const V a = _mm256_loadu_ps(xr + 2 * j), b = _mm256_loadu_ps(xr + 2 * j + 8);
      nan = _mm256_or_ps(nan, _mm256_cmp_ps(a, b, _CMP_UNORD_Q));
      const V ev = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
      const V ov = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
      _mm256_storeu_ps(e + 1 + j, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(ev), 0xD8)));
      _mm256_storeu_ps(o + 1 + j, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(ov), 0xD8)));
    }
    for (; j < P - 1; ++j) {
      e[1 + j] = 2 * j < W ? xr[2 * j] : ninf;
      o[1 + j] = 2 * j + 1 < W ? xr[2 * j + 1] : ninf;
      any_nan |= e[1 + j] != e[1 + j] || o[1 + j] != o[1 + j];
    }
  }
  if (any_nan || _mm256_movemask_ps(nan) != 0)
    max_pool3s2_rows<true>(scratch, P, H, W, ph, pw, OH, OW, y, idx);
  else
    max_pool3s2_rows<false>(scratch, P, H, W, ph, pw, OH, OW, y, idx);
}

const PlaneF32 plane_f32_avx2 = {"plane_f32__avx2", rows_f32, wgrad_f32, flat_f32, flat_wgrad_f32,
                                             copy2d_f32, split2_f32, max_flat_f32, max_pool3s2_f32};

}  // namespace pyconv
