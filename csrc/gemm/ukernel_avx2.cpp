// ukernel_avx2.cpp - AVX2+FMA micro-kernels (compiled with -mavx2 -mfma only
// here). sgemm 6x16 and dgemm 6x8: 12 ymm accumulators, 2 B vectors and one
// broadcast A value per step (15 of 16 ymm registers).
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "gemm/gemm.h"
#include "ops/simd_avx2.h"

namespace pyconv {
namespace {

#include "gemm/ukernel_body.h"

struct VF {
  using reg = __m256;
  static constexpr int lanes = 8;
  static inline reg zero() { return _mm256_setzero_ps(); }
  static inline reg load(const float* p) { return _mm256_loadu_ps(p); }
  static inline void store(float* p, reg v) { _mm256_storeu_ps(p, v); }
  static inline reg bcast(const float* p) { return _mm256_broadcast_ss(p); }
  static inline reg fma(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static inline reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
  static inline reg set1(float x) { return _mm256_set1_ps(x); }
};

struct VD {
  using reg = __m256d;
  static constexpr int lanes = 4;
  static inline reg zero() { return _mm256_setzero_pd(); }
  static inline reg load(const double* p) { return _mm256_loadu_pd(p); }
  static inline void store(double* p, reg v) { _mm256_storeu_pd(p, v); }
  static inline reg bcast(const double* p) { return _mm256_broadcast_sd(p); }
  static inline reg fma(reg a, reg b, reg c) { return _mm256_fmadd_pd(a, b, c); }
  static inline reg add(reg a, reg b) { return _mm256_add_pd(a, b); }
  static inline reg set1(double x) { return _mm256_set1_pd(x); }
};

void sgemm_ukernel_6x16__avx2(i64 kc, const float* a, const float* b, float* c, i64 ldc, float beta) {
  ukernel_body<VF, 6, 2, false>(kc, a, b, nullptr, c, ldc, beta);
}
void sgemm_ukernel_rows_6x16__avx2(i64 kc, const float* a, const float* b, const i64* boff, float* c, i64 ldc,
    float beta) {
  ukernel_body<VF, 6, 2, true>(kc, a, b, boff, c, ldc, beta);
}
void sgemm_ukernel_arows_6x16__avx2(i64 kc, const float* a, i64 lda, const float* b, float* c, i64 ldc,
                                    float beta) {
  ukernel_body<VF, 6, 2, false, float, true>(kc, a, b, nullptr, c, ldc, beta, lda);
}
void sgemm_ukernel_arows_6x8__avx2(i64 kc, const float* a, i64 lda, const float* b, float* c, i64 ldc,
                                   float beta) {
  ukernel_body<VF, 6, 1, false, float, true>(kc, a, b, nullptr, c, ldc, beta, lda);
}
// Short row tiles from the same [kc][6] panels (a last tile of m % 6 rows):
// 4 rows and 2 rows, float32 and float64, packed and row-offset B. The
// 2-row kernel's four FMA chains cannot hide the FMA latency; two sets of
// accumulators over alternate k steps measured no faster (interleaved A/B)
// and would change the summation order.
template <class V, int MR, typename T>
void ukernel_short(i64 kc, const T* a, const T* b, T* c, i64 ldc, T beta) {
  ukernel_body<V, MR, 2, false, T, false, 6>(kc, a, b, nullptr, c, ldc, beta);
}
template <class V, int MR, typename T>
void ukernel_rows_short(i64 kc, const T* a, const T* b, const i64* boff, T* c, i64 ldc, T beta) {
  ukernel_body<V, MR, 2, true, T, false, 6>(kc, a, b, boff, c, ldc, beta);
}
void dgemm_ukernel_6x8__avx2(i64 kc, const double* a, const double* b, double* c, i64 ldc, double beta) {
  ukernel_body<VD, 6, 2, false>(kc, a, b, nullptr, c, ldc, beta);
}
void dgemm_ukernel_rows_6x8__avx2(i64 kc, const double* a, const double* b, const i64* boff, double* c, i64 ldc,
    double beta) {
  ukernel_body<VD, 6, 2, true>(kc, a, b, boff, c, ldc, beta);
}

}  // namespace

void spack_streams__avx2(const float* const* src, i64 kc, int nr, float* dst) {
  for (int g = 0; g < nr; g += 8) {
    const float* s[8];
    for (int t = 0; t < 8; ++t) s[t] = src[g + t];
    i64 q = 0;
    for (; q + 8 <= kc; q += 8) {
      __m256 r[8];
      for (int t = 0; t < 8; ++t) r[t] = _mm256_loadu_ps(s[t] + q);
      transpose8(r);
      for (int k = 0; k < 8; ++k) _mm256_storeu_ps(dst + (q + k) * nr + g, r[k]);
    }
    for (; q < kc; ++q)
      for (int t = 0; t < 8; ++t) dst[q * nr + g + t] = s[t][q];
  }
}

// Packs mr <= 6 rows of A, each contiguous along k (row i at a + i * rsa),
// into one [kc][6] micro-panel; rows mr..5 are zero. Blocks of 8 k are
// loaded as 6 (+2 zero) row vectors and transposed in registers.
void spack_a6__avx2(const float* a, i64 rsa, i64 mr, i64 kc, float* dst) {
  i64 q = 0;
  for (; q + 8 <= kc; q += 8) {
    __m256 v[8];
    for (int i = 0; i < 8; ++i) v[i] = i < mr ? _mm256_loadu_ps(a + i * rsa + q) : _mm256_setzero_ps();
    transpose8(v);  // v[l] = column q + l: rows 0..5, then two zeros
    float* d = dst + q * 6;
    // Each 8-float store spills two zeros into the next row, which its own
    // store then rewrites; the last row goes as 4 + 2 floats.
    for (int l = 0; l < 7; ++l) _mm256_storeu_ps(d + l * 6, v[l]);
    _mm_storeu_ps(d + 42, _mm256_castps256_ps128(v[7]));
    _mm_storel_pi(reinterpret_cast<__m64*>(d + 46), _mm256_extractf128_ps(v[7], 1));
  }
  for (; q < kc; ++q)
    for (i64 i = 0; i < 6; ++i) dst[q * 6 + i] = i < mr ? a[i * rsa + q] : 0.0f;
}

// C[i][j] := sum_p a[i][p] * b[j][p] + beta * C[i][j] in tiles of 4 x 3
// dot products, 8 lanes of p per step (12 accumulators, 7 loads per 12
// FMAs). The reduction is R rows of W values (W a multiple of 8; row r of
// operand a at a[i] + r * lda, of b at b[j] + r * ldb), taken in chunks of
// about 1024 values (whole rows), all tiles per chunk, so a chunk of the b
// rows stays in L2 while the a rows sweep it; the 8-lane partial sums wait
// in `part` between chunks. Each lane sums its values in order, the lanes
// are folded in a fixed tree and a flat tail (tail values at a[i] + toff)
// is added last: the result depends on the shape only. Edge tiles repeat a
// valid row and drop it. A flat reduction of k values is R = k / 8 rows of
// 8, lda = ldb = 8, and the k % 8 tail.
namespace {

// dot_rows in register blocks of U rows x V columns (edge blocks repeat
// their last row / column and drop the copies).
template <int U, int V>
void dot_rows_blocks(i64 m, i64 n, i64 R, i64 W, i64 lda, i64 ldb, i64 tail, i64 toff,
                     const float* const* a, const float* const* b, float beta, float* c, i64 ldc) {
  const i64 chunk_rows = W >= 1024 ? 1 : 1024 / W;
  thread_local std::vector<float> part;
  const bool chunked = R > chunk_rows;
  if (chunked && part.size() < std::size_t(m * n * 8)) part.resize(std::size_t(m * n * 8));
  for (i64 r0 = 0; r0 < R || r0 == 0; r0 += chunk_rows) {
    const i64 r1 = std::min(R, r0 + chunk_rows);
    const bool last = r1 == R;
    for (i64 i0 = 0; i0 < m; i0 += U)
      for (i64 j0 = 0; j0 < n; j0 += V) {
        const float* ar[U];
        const float* br[V];
        for (int u = 0; u < U; ++u) ar[u] = a[std::min<i64>(i0 + u, m - 1)];
        for (int v = 0; v < V; ++v) br[v] = b[std::min<i64>(j0 + v, n - 1)];
        __m256 acc[U][V];
        for (int u = 0; u < U; ++u)
          for (int v = 0; v < V; ++v)
            acc[u][v] = r0 > 0 && i0 + u < m && j0 + v < n
                            ? _mm256_loadu_ps(&part[((i0 + u) * n + j0 + v) * 8])
                            : _mm256_setzero_ps();
        for (i64 r = r0; r < r1; ++r)
          for (i64 p = 0; p < W; p += 8) {
            __m256 bv[V];
            for (int v = 0; v < V; ++v) bv[v] = _mm256_loadu_ps(br[v] + r * ldb + p);
            for (int u = 0; u < U; ++u) {
              const __m256 av = _mm256_loadu_ps(ar[u] + r * lda + p);
              for (int v = 0; v < V; ++v) acc[u][v] = _mm256_fmadd_ps(av, bv[v], acc[u][v]);
            }
          }
        for (int u = 0; u < U && i0 + u < m; ++u)
          for (int v = 0; v < V && j0 + v < n; ++v) {
            if (!last) {
              _mm256_storeu_ps(&part[((i0 + u) * n + j0 + v) * 8], acc[u][v]);
              continue;
            }
            const __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc[u][v]), _mm256_extractf128_ps(acc[u][v], 1));
            const __m128 q = _mm_add_ps(h, _mm_movehl_ps(h, h));
            float sum = _mm_cvtss_f32(_mm_add_ss(q, _mm_shuffle_ps(q, q, 1)));
            for (i64 t = 0; t < tail; ++t) sum += ar[u][toff + t] * br[v][toff + t];
            float* cij = c + (i0 + u) * ldc + j0 + v;
            *cij = beta == 0.0f ? sum : sum + beta * *cij;
          }
      }
    if (last) break;
  }
}

// 4 x 3 blocks; one or two columns take 8 x 1 / 6 x 2 blocks instead (a
// 4 x 3 block repeating one column did three times the work).
void dot_rows_any(i64 m, i64 n, i64 R, i64 W, i64 lda, i64 ldb, i64 tail, i64 toff,
                  const float* const* a, const float* const* b, float beta, float* c, i64 ldc) {
  if (n == 1) return dot_rows_blocks<8, 1>(m, n, R, W, lda, ldb, tail, toff, a, b, beta, c, ldc);
  if (n == 2) return dot_rows_blocks<6, 2>(m, n, R, W, lda, ldb, tail, toff, a, b, beta, c, ldc);
  dot_rows_blocks<4, 3>(m, n, R, W, lda, ldb, tail, toff, a, b, beta, c, ldc);
}

}  // namespace

void sdot_rows__avx2(i64 m, i64 n, i64 k, const float* const* a, const float* const* b, float beta,
                     float* c, i64 ldc) {
  const i64 k8 = k / 8 * 8;
  dot_rows_any(m, n, k8 / 8, 8, 8, 8, k - k8, k8, a, b, beta, c, ldc);
}

void sdot_rows_2d__avx2(i64 m, i64 n, i64 R, i64 W, const float* const* a, i64 lda, const float* const* b,
                        i64 ldb, float beta, float* c, i64 ldc) {
  dot_rows_any(m, n, R, W, lda, ldb, 0, 0, a, b, beta, c, ldc);
}

const GemmKernel<float> sgemm_avx2 = {"sgemm_ukernel_6x16__avx2", Isa::avx2, 6, 16, 144, 256, 4096,
                                      sgemm_ukernel_6x16__avx2, sgemm_ukernel_rows_6x16__avx2,
                                      spack_streams__avx2, spack_a6__avx2, sdot_rows__avx2,
                                      sgemm_ukernel_arows_6x16__avx2, sgemm_ukernel_arows_6x8__avx2,
                                      {{2, ukernel_short<VF, 2, float>, ukernel_rows_short<VF, 2, float>},
                                       {4, ukernel_short<VF, 4, float>, ukernel_rows_short<VF, 4, float>}},
                                      sdot_rows_2d__avx2};
const GemmKernel<double> dgemm_avx2 = {"dgemm_ukernel_6x8__avx2", Isa::avx2, 6, 8, 96, 256, 2048,
                                       dgemm_ukernel_6x8__avx2, dgemm_ukernel_rows_6x8__avx2,
                                       nullptr, nullptr, nullptr, nullptr, nullptr,
                                       {{2, ukernel_short<VD, 2, double>, ukernel_rows_short<VD, 2, double>},
                                        {4, ukernel_short<VD, 4, double>, ukernel_rows_short<VD, 4, double>}}};

}  // namespace pyconv
