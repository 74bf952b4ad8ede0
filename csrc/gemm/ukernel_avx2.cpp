// ukernel_avx2.cpp - AVX2+FMA micro-kernels (compiled with -mavx2 -mfma only
// here). sgemm 6x16 and dgemm 6x8: 12 ymm accumulators, 2 B vectors and one
// broadcast A value per step (15 of 16 ymm registers).
#include <immintrin.h>

#include "gemm/gemm.h"

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
void dgemm_ukernel_6x8__avx2(i64 kc, const double* a, const double* b, double* c, i64 ldc, double beta) {
  ukernel_body<VD, 6, 2, false>(kc, a, b, nullptr, c, ldc, beta);
}
void dgemm_ukernel_rows_6x8__avx2(i64 kc, const double* a, const double* b, const i64* boff, double* c, i64 ldc,
    double beta) {
  ukernel_body<VD, 6, 2, true>(kc, a, b, boff, c, ldc, beta);
}

// In-register 8x8 transpose: on exit r[k][t] is the entry value r[t][k].
inline void transpose8(__m256* r) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
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

const GemmKernel<float> sgemm_avx2 = {"sgemm_ukernel_6x16__avx2", Isa::avx2, 6, 16, 144, 256, 4096,
                                      sgemm_ukernel_6x16__avx2, sgemm_ukernel_rows_6x16__avx2,
                                      spack_streams__avx2};
const GemmKernel<double> dgemm_avx2 = {"dgemm_ukernel_6x8__avx2", Isa::avx2, 6, 8, 96, 256, 2048,
                                       dgemm_ukernel_6x8__avx2, dgemm_ukernel_rows_6x8__avx2};

}  // namespace pyconv
