// ukernel_avx512.cpp - AVX-512F micro-kernels (compiled with -mavx512* here
// only). sgemm 14x32 and dgemm 14x16: 28 zmm accumulators, 2 B vectors and
// one broadcast A value per step (31 of 32 zmm registers). The body is the
// same template as the AVX2 kernel; only the vector ops differ.
#include <immintrin.h>

#include "gemm/gemm.h"

namespace pyconv {
namespace {

#include "gemm/ukernel_body.h"

struct VF {
  using reg = __m512;
  static constexpr int lanes = 16;
  static inline reg zero() { return _mm512_setzero_ps(); }
  static inline reg load(const float* p) { return _mm512_loadu_ps(p); }
  static inline void store(float* p, reg v) { _mm512_storeu_ps(p, v); }
  static inline reg bcast(const float* p) { return _mm512_set1_ps(*p); }
  static inline reg fma(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static inline reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
  static inline reg set1(float x) { return _mm512_set1_ps(x); }
};

struct VD {
  using reg = __m512d;
  static constexpr int lanes = 8;
  static inline reg zero() { return _mm512_setzero_pd(); }
  static inline reg load(const double* p) { return _mm512_loadu_pd(p); }
  static inline void store(double* p, reg v) { _mm512_storeu_pd(p, v); }
  static inline reg bcast(const double* p) { return _mm512_set1_pd(*p); }
  static inline reg fma(reg a, reg b, reg c) { return _mm512_fmadd_pd(a, b, c); }
  static inline reg add(reg a, reg b) { return _mm512_add_pd(a, b); }
  static inline reg set1(double x) { return _mm512_set1_pd(x); }
};

void sgemm_ukernel_14x32__avx512f(i64 kc, const float* a, const float* b, float* c, i64 ldc, float beta) {
  ukernel_body<VF, 14, 2, false>(kc, a, b, nullptr, c, ldc, beta);
}
void sgemm_ukernel_rows_14x32__avx512f(i64 kc, const float* a, const float* b, const i64* boff, float* c, i64 ldc,
    float beta) {
  ukernel_body<VF, 14, 2, true>(kc, a, b, boff, c, ldc, beta);
}
void dgemm_ukernel_14x16__avx512f(i64 kc, const double* a, const double* b, double* c, i64 ldc, double beta) {
  ukernel_body<VD, 14, 2, false>(kc, a, b, nullptr, c, ldc, beta);
}
void dgemm_ukernel_rows_14x16__avx512f(i64 kc, const double* a, const double* b, const i64* boff, double* c, i64 ldc,
    double beta) {
  ukernel_body<VD, 14, 2, true>(kc, a, b, boff, c, ldc, beta);
}

}  // namespace

const GemmKernel<float> sgemm_avx512 = {"sgemm_ukernel_14x32__avx512f", Isa::avx512, 14, 32, 168, 256, 4096,
                                        sgemm_ukernel_14x32__avx512f, sgemm_ukernel_rows_14x32__avx512f,
                                        spack_streams__avx2};  // AVX2 code: valid on AVX-512 CPUs
const GemmKernel<double> dgemm_avx512 = {"dgemm_ukernel_14x16__avx512f", Isa::avx512, 14, 16, 112, 192, 2048,
                                         dgemm_ukernel_14x16__avx512f, dgemm_ukernel_rows_14x16__avx512f};

}  // namespace pyconv
