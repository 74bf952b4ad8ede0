// batchnorm.cpp - see batchnorm.h. Parallel over channels; every reduction
// runs in a fixed order inside one thread (deterministic for any thread count).
#include "ops/batchnorm.h"

#include <algorithm>
#include <type_traits>

#include "cpu/parallel.h"
#include "ops/vmath.h"

namespace pyconv {
namespace {
// Eight independent double partial sums (one serial chain is add-latency
// bound, about 3 GB/s); callers fold them with fold8 in a fixed order.
constexpr int kP = 8;

inline double fold8(const double* a) {
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

// acc[k] += sum of f(i) over i = k mod 8 (the tail goes to acc[0..]).
template <typename F>
inline void accumulate8(i64 n, double* acc, F f) {
  i64 i = 0;
  for (; i + kP <= n; i += kP)
    for (int k = 0; k < kP; ++k) acc[k] += f(i + k);
  for (int k = 0; i < n; ++i, ++k) acc[k] += f(i);
}
}  // namespace

// The float32 SIMD table for the reductions below (same order of
// operations, 4 doubles per instruction), or nullptr.
template <typename T>
inline const VMathF32* bn_simd() {
  if constexpr (std::is_same_v<T, float>) return vmath_f32();
  return nullptr;
}

template <typename T>
void batch_norm_stats(const T* x, i64 N, i64 C, i64 S, T* mean, T* var) {
  const int nt = (int)std::min<i64>(C, threads_for(double(N) * C * S * 2 * sizeof(T), 1.0e6));
  const VMathF32* vm = bn_simd<T>();
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (i64 c = 0; c < C; ++c) {
    double acc[kP] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (i64 n = 0; n < N; ++n) {
      const T* __restrict xp = x + (n * C + c) * S;
      if constexpr (std::is_same_v<T, float>)
        if (vm) {
          vm->sum8(xp, S, acc);
          continue;
        }
      accumulate8(S, acc, [&](i64 i) { return double(xp[i]); });
    }
    const double m = fold8(acc) / double(N * S);
    double vacc[kP] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (i64 n = 0; n < N; ++n) {
      const T* __restrict xp = x + (n * C + c) * S;
      if constexpr (std::is_same_v<T, float>)
        if (vm) {
          vm->sqdev8(xp, S, m, vacc);
          continue;
        }
      accumulate8(S, vacc, [&](i64 i) {
        const double d = double(xp[i]) - m;
        return d * d;
      });
    }
    const double v = fold8(vacc);
    mean[c] = T(m);
    var[c] = T(v / double(N * S));
  }
}

template <typename T>
void batch_norm_normalize(const T* x, i64 N, i64 C, i64 S, const T* mean, const T* invstd,
                          const T* w, const T* b, T* y) {
  const i64 rows = N * C;
  const int nt = threads_for(double(rows) * S * 2 * sizeof(T), 1.0e6);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (i64 r = 0; r < rows; ++r) {
    const i64 c = r % C;
    const T scale = invstd[c] * (w ? w[c] : T(1));
    const T shift = (b ? b[c] : T(0)) - mean[c] * scale;
    const T* __restrict xp = x + r * S;
    T* __restrict yp = y + r * S;
    for (i64 i = 0; i < S; ++i) yp[i] = xp[i] * scale + shift;
  }
}

template <typename T>
void batch_norm_backward(const T* dy, const T* x, i64 N, i64 C, i64 S, const T* mean,
                         const T* invstd, const T* w, bool training, T* dx, T* dw, T* db) {
  const int nt = (int)std::min<i64>(C, threads_for(double(N) * C * S * 3 * sizeof(T), 1.0e6));
  const double M = double(N * S);
  const VMathF32* vm = bn_simd<T>();
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (i64 c = 0; c < C; ++c) {
    double a1[kP] = {0, 0, 0, 0, 0, 0, 0, 0}, a2[kP] = {0, 0, 0, 0, 0, 0, 0, 0};
    const double mc = double(mean[c]);
    for (i64 n = 0; n < N; ++n) {
      const T* __restrict g = dy + (n * C + c) * S;
      const T* __restrict xp = x + (n * C + c) * S;
      if constexpr (std::is_same_v<T, float>)
        if (vm) {
          vm->sum_dot_dev8(g, xp, S, mc, a1, a2);
          continue;
        }
      accumulate8(S, a1, [&](i64 i) { return double(g[i]); });
      accumulate8(S, a2, [&](i64 i) { return double(g[i]) * (double(xp[i]) - mc); });
    }
    const double sdy = fold8(a1), sdyx = fold8(a2);  // sum(dy), sum(dy * (x - mean))
    const double is = invstd[c], wc = w ? double(w[c]) : 1.0;
    if (db) db[c] = T(sdy);
    if (dw) dw[c] = T(sdyx * is);
    if (!dx) continue;
    if (!training) {
      const T k = T(wc * is);
      for (i64 n = 0; n < N; ++n) {
        const T* g = dy + (n * C + c) * S;
        T* d = dx + (n * C + c) * S;
        for (i64 i = 0; i < S; ++i) d[i] = g[i] * k;
      }
      continue;
    }
    // dx = w*invstd * (dy - mean(dy) - xhat * mean(dy * xhat))
    const T k = T(wc * is);
    const T a = T(sdy / M);
    const T bcoef = T(sdyx * is * is / M);  // applied to (x - mean)
    const T m = mean[c];
    for (i64 n = 0; n < N; ++n) {
      const T* g = dy + (n * C + c) * S;
      const T* xp = x + (n * C + c) * S;
      T* d = dx + (n * C + c) * S;
      for (i64 i = 0; i < S; ++i) d[i] = k * (g[i] - a - (xp[i] - m) * bcoef);
    }
  }
}

#define PYCONV_BN_INSTANTIATE(T)                                                                 \
  template void batch_norm_stats<T>(const T*, i64, i64, i64, T*, T*);                          \
  template void batch_norm_normalize<T>(const T*, i64, i64, i64, const T*, const T*, const T*,  \
                                        const T*, T*);                                           \
  template void batch_norm_backward<T>(const T*, const T*, i64, i64, i64, const T*, const T*,   \
                                       const T*, bool, T*, T*, T*);
PYCONV_BN_INSTANTIATE(float)
PYCONV_BN_INSTANTIATE(double)

}  // namespace pyconv
