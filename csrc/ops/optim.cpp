// optim.cpp - see optim.h. Plain loops over the elements (the compiler
// vectorises them; this file has no FMA flag, so no multiply and add fuse),
// split between threads in static blocks: every element's arithmetic is the
// same whatever the thread count.
#include "ops/optim.h"

#include <cmath>

#include "cpu/parallel.h"

namespace pyconv {
namespace {

// body(i0, i1) on one block of [0, n) per thread; `arrays` arrays of T are
// read or written per element.
template <typename T, typename Body>
void for_blocks(i64 n, int arrays, Body body) {
  parallel_chunks(n, double(arrays) * sizeof(T), body, 1.0e6);
}

template <typename T, int MODE, bool NESTEROV>
void sgd_range(T* __restrict p, const T* __restrict g, T* __restrict buf, i64 i0, i64 i1, T lr,
               T mu, T damp1) {
  for (i64 i = i0; i < i1; ++i) {
    T d = g[i];
    if constexpr (MODE >= 1) {
      T b;
      if constexpr (MODE == 1) {
        b = g[i];
      } else {
        const T bm = buf[i] * mu, gd = g[i] * damp1;
        b = bm + gd;
      }
      buf[i] = b;
      if constexpr (NESTEROV) {
        const T t = b * mu;
        d = g[i] + t;
      } else {
        d = b;
      }
    }
    const T s = d * lr;
    p[i] = p[i] - s;
  }
}

// NumPy's maximum: a NaN in either operand wins (the first one if both).
template <typename T>
inline T np_maximum(T a, T b) {
  return (a >= b || a != a) ? a : b;
}

template <typename T, bool DECOUPLED, bool FAR, bool AMS>
void adam_range(T* __restrict p, const T* __restrict g, T* __restrict m, T* __restrict v,
                T* __restrict vmax, i64 i0, i64 i1, T decay, T w, T omw, T beta2, T omb2, T rsbc2,
                T eps, T step_size) {
  for (i64 i = i0; i < i1; ++i) {
    T pi = p[i];
    if constexpr (DECOUPLED) pi = pi * decay;
    const T gi = g[i], d = gi - m[i];
    T mi;
    if constexpr (FAR) {
      const T t = d * omw;
      mi = gi - t;
    } else {
      const T t = d * w;
      mi = m[i] + t;
    }
    m[i] = mi;
    const T gg = gi * gi, t1 = gg * omb2, vb = v[i] * beta2, vi = vb + t1;
    v[i] = vi;
    T vv = vi;
    if constexpr (AMS) {
      vv = np_maximum(vmax[i], vi);
      vmax[i] = vv;
    }
    const T sq = std::sqrt(vv), dn = sq / rsbc2, den = dn + eps, q = mi / den, st = q * step_size;
    p[i] = pi - st;
  }
}

}  // namespace

template <typename T>
void sgd_update(T* p, const T* g, T* buf, i64 n, T lr, T momentum, T damp1, bool nesterov, int mode) {
  for_blocks<T>(n, mode == 0 ? 3 : 5, [&](i64 i0, i64 i1) {
    if (mode == 0) return sgd_range<T, 0, false>(p, g, buf, i0, i1, lr, momentum, damp1);
    if (mode == 1)
      return nesterov ? sgd_range<T, 1, true>(p, g, buf, i0, i1, lr, momentum, damp1)
                      : sgd_range<T, 1, false>(p, g, buf, i0, i1, lr, momentum, damp1);
    return nesterov ? sgd_range<T, 2, true>(p, g, buf, i0, i1, lr, momentum, damp1)
                    : sgd_range<T, 2, false>(p, g, buf, i0, i1, lr, momentum, damp1);
  });
}

template <typename T>
void adam_update(T* p, const T* g, T* m, T* v, T* vmax, i64 n, bool decoupled, T decay, T w, T omw,
                 bool far, T beta2, T omb2, T rsbc2, T eps, T step_size) {
  for_blocks<T>(n, vmax ? 9 : 7, [&](i64 i0, i64 i1) {
    auto run = [&](auto dec, auto fr, auto ams) {
      adam_range<T, decltype(dec)::value, decltype(fr)::value, decltype(ams)::value>(
          p, g, m, v, vmax, i0, i1, decay, w, omw, beta2, omb2, rsbc2, eps, step_size);
    };
    using F = std::false_type;
    using Tr = std::true_type;
    auto with_ams = [&](auto dec, auto fr) { vmax ? run(dec, fr, Tr{}) : run(dec, fr, F{}); };
    auto with_far = [&](auto dec) { far ? with_ams(dec, Tr{}) : with_ams(dec, F{}); };
    decoupled ? with_far(Tr{}) : with_far(F{});
  });
}

template void sgd_update<float>(float*, const float*, float*, i64, float, float, float, bool, int);
template void sgd_update<double>(double*, const double*, double*, i64, double, double, double, bool, int);
template void adam_update<float>(float*, const float*, float*, float*, float*, i64, bool, float, float,
                                 float, bool, float, float, float, float, float);
template void adam_update<double>(double*, const double*, double*, double*, double*, i64, bool, double,
                                  double, double, bool, double, double, double, double, double);

}  // namespace pyconv
