// ukernel_ref.cpp - the portable micro-kernel: the executable spec of the
// contract in gemm.h, in plain C++ (the compiler may auto-vectorise it for
// the baseline ISA). 4x8 for both dtypes.
#include "gemm/gemm.h"

namespace pyconv {
namespace {

// B row p is b + p*NR (packed), or b + boff[p] when boff is given.
template <int MR, int NR, typename T>
void ukernel_ref(i64 kc, const T* __restrict a, const T* __restrict b, const i64* boff,
                 T* __restrict c, i64 ldc, T beta) {
  T acc[MR][NR] = {};
  for (i64 p = 0; p < kc; ++p) {
    const T* bp = boff ? b + boff[p] : b + p * NR;
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) acc[i][j] += a[i] * bp[j];
    a += MR;
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) {
      T* cij = c + i * ldc + j;
      *cij = beta == T(0) ? acc[i][j] : acc[i][j] + beta * *cij;
    }
}

void sgemm_ukernel_4x8__ref(i64 kc, const float* a, const float* b, float* c, i64 ldc, float beta) {
  ukernel_ref<4, 8>(kc, a, b, nullptr, c, ldc, beta);
}
void dgemm_ukernel_4x8__ref(i64 kc, const double* a, const double* b, double* c, i64 ldc, double beta) {
  ukernel_ref<4, 8>(kc, a, b, nullptr, c, ldc, beta);
}
void sgemm_ukernel_rows_4x8__ref(i64 kc, const float* a, const float* b, const i64* boff, float* c,
                                 i64 ldc, float beta) {
  ukernel_ref<4, 8>(kc, a, b, boff, c, ldc, beta);
}
void dgemm_ukernel_rows_4x8__ref(i64 kc, const double* a, const double* b, const i64* boff,
                                 double* c, i64 ldc, double beta) {
  ukernel_ref<4, 8>(kc, a, b, boff, c, ldc, beta);
}

}  // namespace

const GemmKernel<float> sgemm_ref = {"sgemm_ukernel_4x8__ref", Isa::ref, 4, 8, 128, 256, 2048,
                                     sgemm_ukernel_4x8__ref, sgemm_ukernel_rows_4x8__ref};
const GemmKernel<double> dgemm_ref = {"dgemm_ukernel_4x8__ref", Isa::ref, 4, 8, 128, 256, 2048,
                                      dgemm_ukernel_4x8__ref, dgemm_ukernel_rows_4x8__ref};

}  // namespace pyconv
