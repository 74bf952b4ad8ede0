// membench.cpp - see membench.h.
#include "ops/membench.h"

#include <algorithm>
#include <chrono>

namespace pyconv {

double triad_gbps(i64 n, int nthreads, double seconds) {
  AlignedBuffer ba, bb, bc;
  float* a = static_cast<float*>(ba.reserve(sizeof(float) * n));
  float* b = static_cast<float*>(bb.reserve(sizeof(float) * n));
  float* c = static_cast<float*>(bc.reserve(sizeof(float) * n));
  const int nt = std::max(1, nthreads);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (i64 i = 0; i < n; ++i) {  // first touch by the threads that use it
    a[i] = 0.f;
    b[i] = 1.f;
    c[i] = 2.f;
  }
  using clk = std::chrono::steady_clock;
  const auto end = clk::now() + std::chrono::duration<double>(seconds);
  double best = 0;
  const float s = 3.f;
  do {
    const auto t0 = clk::now();
#pragma omp parallel for num_threads(nt) schedule(static)
    for (i64 i = 0; i < n; ++i) a[i] = b[i] + s * c[i];
    const double dt = std::chrono::duration<double>(clk::now() - t0).count();
    best = std::max(best, 3.0 * sizeof(float) * double(n) / dt * 1e-9);
  } while (clk::now() < end);
  volatile float sink = a[n / 2];
  (void)sink;
  return best;
}

}  // namespace pyconv
