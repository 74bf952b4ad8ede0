// depthwise_c8_avx2.cpp - 3x3 stride-1 depthwise convolution on small maps
// with 8 channels per vector (AVX2+FMA; compiled with -mavx2 -mfma only
// here). See depthwise.h (dw3c8_*).
//
// The per-plane kernels lay out one plane at a time and run 8 outputs of a
// row per vector, so a 14x14 map pays a copy in, a copy out and a partial
// vector per row for 196 outputs (MobileNet's 512-channel layers ran at a
// third of the machine's peak). Here 8 channels of one image are laid out
// pixel-major ([row][col][8 channels], an in-register 8x8 transpose per 8
// pixels) in a zero-bordered buffer: every output pixel of the 8 channels is
// one vector, each tap one FMA with that tap's 8 weights held in a register,
// and no lane is wasted whatever the width.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "ops/depthwise.h"
#include "ops/simd_avx2.h"

namespace pyconv {
namespace {

using V = __m256;

// (No std:: templates in an ISA file: an inline instance could be the one the
// linker keeps for portable callers.)
inline i64 imax(i64 a, i64 b) { return a > b ? a : b; }
inline i64 imin(i64 a, i64 b) { return a < b ? a : b; }

// The buffer from its first 64-byte boundary (dw3c8_buffer leaves room):
// every pixel vector then sits in one cache line. A 16-byte-aligned buffer
// split half the loads across two lines, and whether malloc gave 16 or 32
// depended on the process: the same call ran at 0.28 or 0.38 ms.
inline float* align64(float* p) {
  return reinterpret_cast<float*>((reinterpret_cast<std::uintptr_t>(p) + 63) & ~std::uintptr_t(63));
}

// 8 values of each of 8 planes (src + ch * ps + q, zero planes past nc) as
// 8 pixel vectors: r[k][ch] = src[ch * ps + q + k].
inline void load_pixels8(const float* src, i64 ps, int nc, i64 q, V* r) {
  if (nc == 8) {
    for (int ch = 0; ch < 8; ++ch) r[ch] = _mm256_loadu_ps(src + ch * ps + q);
  } else {
    for (int ch = 0; ch < 8; ++ch) r[ch] = ch < nc ? _mm256_loadu_ps(src + ch * ps + q) : _mm256_setzero_ps();
  }
  transpose8(r);
}

// The pixel-major layout of planes is built and undone 8 pixels at a time
// (an 8x8 transpose in registers), the last block of a plane overlapping its
// neighbour (the same values written twice) rather than a scalar tail.

// t[q][ch] = src[ch * ps + q] for q < n, ch < 8 (0 for ch >= nc).
void planes_to_pixels(const float* src, i64 ps, int nc, i64 n, float* t) {
  if (n < 8) {
    for (i64 q = 0; q < n; ++q)
      for (int ch = 0; ch < 8; ++ch) t[q * 8 + ch] = ch < nc ? src[ch * ps + q] : 0.0f;
    return;
  }
  for (i64 q = 0;; q += 8) {
    if (q > n - 8) q = n - 8;
    V r[8];
    load_pixels8(src, ps, nc, q, r);
    for (int k = 0; k < 8; ++k) _mm256_storeu_ps(t + (q + k) * 8, r[k]);
    if (q + 8 >= n) break;
  }
}

// The inverse: dst[ch * ds + q] = t[q][ch] for q < n, ch < nc.
void pixels_to_planes(const float* t, i64 n, int nc, float* dst, i64 ds) {
  if (n < 8) {
    for (i64 q = 0; q < n; ++q)
      for (int ch = 0; ch < nc; ++ch) dst[ch * ds + q] = t[q * 8 + ch];
    return;
  }
  for (i64 q = 0;; q += 8) {
    if (q > n - 8) q = n - 8;
    V r[8];
    for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps(t + (q + k) * 8);
    transpose8(r);
    if (nc == 8) {
      for (int ch = 0; ch < 8; ++ch) _mm256_storeu_ps(dst + ch * ds + q, r[ch]);
    } else {
      for (int ch = 0; ch < nc; ++ch) _mm256_storeu_ps(dst + ch * ds + q, r[ch]);
    }
    if (q + 8 >= n) break;
  }
}

// buf[r][c][0..8) = src[ch][r - oy0][c - ox0] for ch < nc (plane ch at
// src + ch * ps, sh x sw), zero elsewhere (the border, and lanes >= nc).
// When whole source rows land in the buffer, their pixels are transposed
// in one flat pass over the planes (a 14-wide row alone is 8 + 6 pixels),
// each pixel stored at its buffer place; else row by row through tmp.
void fill_c8(const float* src, i64 ps, int nc, i64 sh, i64 sw, i64 oy0, i64 ox0, i64 rows,
             i64 cols, float* buf, float* tmp) {
  const i64 sy0 = imax(0, -oy0), sy1 = imin(sh, rows - oy0);
  const i64 sx0 = imax(0, -ox0), sx1 = imin(sw, cols - ox0);
  if (sy0 >= sy1 || sx0 >= sx1) {
    std::memset(buf, 0, sizeof(float) * std::size_t(rows * cols * 8));
    return;
  }
  const i64 r0 = sy0 + oy0, r1 = sy1 + oy0, c0 = sx0 + ox0, c1 = sx1 + ox0;
  // Zero what no source value lands on: rows above and below, columns either side.
  std::memset(buf, 0, sizeof(float) * std::size_t(r0 * cols * 8));
  std::memset(buf + r1 * cols * 8, 0, sizeof(float) * std::size_t((rows - r1) * cols * 8));
  for (i64 r = r0; r < r1; ++r) {
    std::memset(buf + r * cols * 8, 0, sizeof(float) * std::size_t(c0 * 8));
    std::memset(buf + (r * cols + c1) * 8, 0, sizeof(float) * std::size_t((cols - c1) * 8));
  }
  const i64 n = (sy1 - sy0) * sw;
  const float* s = src + sy0 * sw;
  if (sx0 > 0 || sx1 < sw || n < 8) {
    planes_to_pixels(s, ps, nc, n, tmp);
    for (i64 sy = sy0; sy < sy1; ++sy)
      std::memcpy(buf + ((sy + oy0) * cols + c0) * 8, tmp + ((sy - sy0) * sw + sx0) * 8,
                  sizeof(float) * std::size_t((c1 - c0) * 8));
    return;
  }
  float* base = buf + (r0 * cols + c0) * 8;  // source pixel (y, x) -> base + (y * cols + x) * 8
  for (i64 q = 0;; q += 8) {
    if (q > n - 8) q = n - 8;
    V r[8];
    load_pixels8(s, ps, nc, q, r);
    i64 y = q / sw, x = q - y * sw;
    for (int k = 0; k < 8; ++k) {
      _mm256_storeu_ps(base + (y * cols + x) * 8, r[k]);
      if (++x == sw) x = 0, ++y;
    }
    if (q + 8 >= n) break;
  }
}

}  // namespace

namespace {

// NP output pixels of one row from ox: per tap row ky, each of the NP + 2
// input pixels is loaded once and fed to the up-to-three outputs it
// reaches (kx = 0, 1, 2), so each accumulator still adds its taps in (ky,
// kx) order; NP = 8 accumulators hide the FMA latency (4 did not). 39
// loads per 72 FMAs, where a load per tap and output took 81.
template <int NP>
inline void conv_pixels(const float* r0, i64 cols, const float* w, V bias, float* pix) {
  // Keeps GCC from hoisting all 9 weight vectors out of the caller's loop
  // (with the accumulators they would not fit the 16 registers).
  __asm__("" : "+r"(w));
  V acc[NP];
  for (int u = 0; u < NP; ++u) acc[u] = bias;
  for (int ky = 0; ky < 3; ++ky) {
    const V w0 = _mm256_loadu_ps(w + ky * 24), w1 = _mm256_loadu_ps(w + ky * 24 + 8),
            w2 = _mm256_loadu_ps(w + ky * 24 + 16);
    const float* r = r0 + ky * cols * 8;
    for (int j = 0; j < NP + 2; ++j) {
      const V v = _mm256_loadu_ps(r + j * 8);
      if (j < NP) acc[j] = _mm256_fmadd_ps(w0, v, acc[j]);
      if (j >= 1 && j - 1 < NP) acc[j - 1] = _mm256_fmadd_ps(w1, v, acc[j - 1]);
      if (j >= 2) acc[j - 2] = _mm256_fmadd_ps(w2, v, acc[j - 2]);
    }
  }
  for (int u = 0; u < NP; ++u) _mm256_storeu_ps(pix + u * 8, acc[u]);
}

template <int NP>
inline void conv_row(const float* r0, i64 cols, i64 OW, const float* w, V bias, float* pix) {
  for (i64 ox = 0;; ox += NP) {  // the last block overlapping its neighbour
    if (ox > OW - NP) ox = OW - NP;
    conv_pixels<NP>(r0 + ox * 8, cols, w, bias, pix + ox * 8);
    if (ox + NP >= OW) break;
  }
}

}  // namespace

void dw3c8_conv_avx2(const float* src, i64 ps, int nc, i64 sh, i64 sw, i64 oy0, i64 ox0,
                     const float* w, const float* bias, float* dst, i64 ds, i64 OH, i64 OW,
                     float* buf) {
  const i64 rows = OH + 2, cols = OW + 2;
  buf = align64(buf);
  float* pix = buf + rows * cols * 8;  // the output, pixel-major (and fill_c8's tmp)
  fill_c8(src, ps, nc, sh, sw, oy0, ox0, rows, cols, buf, pix);
  const V bv = _mm256_loadu_ps(bias);
  for (i64 oy = 0; oy < OH; ++oy) {
    const float* r0 = buf + oy * cols * 8;
    float* prow = pix + oy * OW * 8;
    switch (OW < 8 ? OW : 8) {
      case 8: conv_row<8>(r0, cols, OW, w, bv, prow); break;
      case 7: conv_row<7>(r0, cols, OW, w, bv, prow); break;
      case 6: conv_row<6>(r0, cols, OW, w, bv, prow); break;
      case 5: conv_row<5>(r0, cols, OW, w, bv, prow); break;
      case 4: conv_row<4>(r0, cols, OW, w, bv, prow); break;
      case 3: conv_row<3>(r0, cols, OW, w, bv, prow); break;
      case 2: conv_row<2>(r0, cols, OW, w, bv, prow); break;
      default: conv_row<1>(r0, cols, OW, w, bv, prow); break;
    }
  }
  pixels_to_planes(pix, OH * OW, nc, dst, ds);
}

void dw3c8_wgrad_avx2(const float* x, i64 ps, int nc, i64 H, i64 W, i64 PT, i64 PL,
                      const float* dy, i64 ds, i64 OH, i64 OW, float* buf, double* g) {
  const i64 rows = OH + 2, cols = OW + 2;
  buf = align64(buf);
  float* d = buf + rows * cols * 8;  // dy pixel-major, [OH][OW][8] (and fill_c8's tmp first)
  fill_c8(x, ps, nc, H, W, PT, PL, rows, cols, buf, d);
  planes_to_pixels(dy, ds, nc, OH * OW, d);
  // Nine named accumulators: with an array (and GCC's unrolling of the
  // pixel loop) one was spilled, its store-to-load round trip joining its
  // FMA chain; this form runs 30% faster, the same operations in order.
  V acc[9];
  V a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0;
  const i64 c1 = cols * 8, c2 = 2 * cols * 8;
  for (i64 oy = 0; oy < OH; ++oy) {
    const float* dp = d + oy * OW * 8;
    const float* r = buf + oy * cols * 8;
    for (i64 ox = 0; ox < OW; ++ox, dp += 8, r += 8) {
      const V dv = _mm256_load_ps(dp);
      a0 = _mm256_fmadd_ps(dv, _mm256_load_ps(r), a0);
      a1 = _mm256_fmadd_ps(dv, _mm256_load_ps(r + 8), a1);
      a2 = _mm256_fmadd_ps(dv, _mm256_load_ps(r + 16), a2);
      a3 = _mm256_fmadd_ps(dv, _mm256_load_ps(r + c1), a3);
      a4 = _mm256_fmadd_ps(dv, _mm256_load_ps(r + c1 + 8), a4);
      a5 = _mm256_fmadd_ps(dv, _mm256_load_ps(r + c1 + 16), a5);
      a6 = _mm256_fmadd_ps(dv, _mm256_load_ps(r + c2), a6);
      a7 = _mm256_fmadd_ps(dv, _mm256_load_ps(r + c2 + 8), a7);
      a8 = _mm256_fmadd_ps(dv, _mm256_load_ps(r + c2 + 16), a8);
    }
  }
  acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3, acc[4] = a4, acc[5] = a5, acc[6] = a6, acc[7] = a7, acc[8] = a8;
  alignas(32) float lanes[8];
  for (int t = 0; t < 9; ++t) {
    _mm256_store_ps(lanes, acc[t]);
    for (int ch = 0; ch < 8; ++ch) g[t * 8 + ch] += double(lanes[ch]);
  }
}

}  // namespace pyconv
