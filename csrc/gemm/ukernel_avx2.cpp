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

}  // namespace

const GemmKernel<float> sgemm_avx2 = {"sgemm_ukernel_6x16__avx2", Isa::avx2, 6, 16, 144, 256, 4096,
                                      sgemm_ukernel_6x16__avx2, sgemm_ukernel_rows_6x16__avx2};
const GemmKernel<double> dgemm_avx2 = {"dgemm_ukernel_6x8__avx2", Isa::avx2, 6, 8, 96, 256, 2048,
                                       dgemm_ukernel_6x8__avx2, dgemm_ukernel_rows_6x8__avx2};

}  // namespace pyconv
