// linear.cpp - see linear.h. The products run on gemm (threads split output
// tiles only); the bias sum is a fixed-order double reduction per column.
#include "ops/linear.h"

#include <algorithm>

#include "cpu/parallel.h"
#include "gemm/gemm.h"

namespace pyconv {

template <typename T>
void linear_forward(const T* x, const T* w, const T* b, T* y, i64 M, i64 K, i64 N) {
  if (M == 0 || N == 0) return;
  T beta = T(0);
  if (b) {  // y starts as the bias rows, then y += x w^T
    const int nt = threads_for(double(M) * N * sizeof(T), 1.0e6);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (i64 i = 0; i < M; ++i) std::copy(b, b + N, y + i * N);
    beta = T(1);
  }
  // B[k][n] = w[n][k]: row stride 1, column stride K.
  gemm<T>(M, N, K, x, K, 1, w, 1, K, beta, y, N);
}

template <typename T>
void linear_backward(const T* dy, const T* x, const T* w, T* dx, T* dw, T* db, i64 M, i64 K, i64 N) {
  if (dx) gemm<T>(M, K, N, dy, N, 1, w, K, 1, T(0), dx, K);
  if (dw) gemm<T>(N, K, M, dy, 1, N, x, K, 1, T(0), dw, K);  // A[n][m] = dy[m][n]
  if (db) {
    const int nt = (int)std::min<i64>(std::max<i64>(N, 1), threads_for(double(M) * N * sizeof(T), 1.0e6));
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (i64 n = 0; n < N; ++n) {
      double s = 0;
      for (i64 m = 0; m < M; ++m) s += dy[m * N + n];
      db[n] = T(s);
    }
  }
}

template void linear_forward<float>(const float*, const float*, const float*, float*, i64, i64, i64);
template void linear_forward<double>(const double*, const double*, const double*, double*, i64, i64, i64);
template void linear_backward<float>(const float*, const float*, const float*, float*, float*, float*,
                                     i64, i64, i64);
template void linear_backward<double>(const double*, const double*, const double*, double*, double*,
                                      double*, i64, i64, i64);

}  // namespace pyconv
