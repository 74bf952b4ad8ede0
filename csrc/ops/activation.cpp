// activation.cpp - see activation.h. Element-wise loops are split into equal
// contiguous chunks between threads; reductions are per (outer, inner) line,
// each computed by one thread in a fixed order.
#include "ops/activation.h"

#include <algorithm>
#include <cmath>

#include "cpu/parallel.h"

namespace pyconv {
namespace {

constexpr double kSqrt1_2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;
constexpr double kSqrt2OverPi = 0.79788456080286535588;

template <typename T>
inline T sigmoid(T x) {  // no overflow for any |x|
  if (x >= T(0)) return T(1) / (T(1) + std::exp(-x));
  const T e = std::exp(x);
  return e / (T(1) + e);
}

template <typename T, typename F>
void elementwise(i64 n, double cost_per_elem, F f) {
  const int nt = threads_for(double(n) * cost_per_elem, 2.0e5);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (i64 i = 0; i < n; ++i) f(i);
}

}  // namespace

template <typename T>
void activation_forward(Act act, T alpha, const T* __restrict x, T* __restrict y, i64 n) {
  switch (act) {
    case Act::relu:
      // x < 0 ? 0 : x keeps NaN (PyTorch's clamp_min semantics).
      elementwise<T>(n, 1, [&](i64 i) { y[i] = x[i] < T(0) ? T(0) : x[i]; });
      break;
    case Act::leaky_relu:
      elementwise<T>(n, 1, [&](i64 i) { y[i] = x[i] > T(0) ? x[i] : x[i] * alpha; });
      break;
    case Act::elu:
      elementwise<T>(n, 20, [&](i64 i) { y[i] = x[i] > T(0) ? x[i] : alpha * std::expm1(x[i]); });
      break;
    case Act::sigmoid:
      elementwise<T>(n, 20, [&](i64 i) { y[i] = sigmoid(x[i]); });
      break;
    case Act::tanh:
      elementwise<T>(n, 20, [&](i64 i) { y[i] = std::tanh(x[i]); });
      break;
    case Act::gelu:
      elementwise<T>(n, 20, [&](i64 i) {
        y[i] = T(0.5) * x[i] * (T(1) + std::erf(x[i] * T(kSqrt1_2)));
      });
      break;
    case Act::gelu_tanh:
      elementwise<T>(n, 20, [&](i64 i) {
        const T v = x[i];
        y[i] = T(0.5) * v * (T(1) + std::tanh(T(kSqrt2OverPi) * (v + T(0.044715) * v * v * v)));
      });
      break;
  }
}

template <typename T>
void activation_backward(Act act, T alpha, const T* __restrict dy, const T* __restrict s,
                         T* __restrict dx, i64 n) {
  switch (act) {
    case Act::relu:  // PyTorch's threshold_backward: input <= 0 -> 0
      elementwise<T>(n, 1, [&](i64 i) { dx[i] = s[i] <= T(0) ? T(0) : dy[i]; });
      break;
    case Act::leaky_relu:
      elementwise<T>(n, 1, [&](i64 i) { dx[i] = s[i] > T(0) ? dy[i] : dy[i] * alpha; });
      break;
    case Act::elu:
      elementwise<T>(n, 20, [&](i64 i) {
        dx[i] = s[i] <= T(0) ? dy[i] * alpha * std::exp(s[i]) : dy[i];
      });
      break;
    case Act::sigmoid:  // s = y
      elementwise<T>(n, 1, [&](i64 i) { dx[i] = dy[i] * (T(1) - s[i]) * s[i]; });
      break;
    case Act::tanh:  // s = y
      elementwise<T>(n, 1, [&](i64 i) { dx[i] = dy[i] * (T(1) - s[i] * s[i]); });
      break;
    case Act::gelu:
      elementwise<T>(n, 25, [&](i64 i) {
        const T v = s[i];
        const T cdf = T(0.5) * (T(1) + std::erf(v * T(kSqrt1_2)));
        const T pdf = T(kInvSqrt2Pi) * std::exp(T(-0.5) * v * v);
        dx[i] = dy[i] * (cdf + v * pdf);
      });
      break;
    case Act::gelu_tanh:
      elementwise<T>(n, 25, [&](i64 i) {
        const T v = s[i];
        const T inner = T(kSqrt2OverPi) * (v + T(0.044715) * v * v * v);
        const T th = std::tanh(inner);
        const T dinner = T(kSqrt2OverPi) * (T(1) + T(3 * 0.044715) * v * v);
        dx[i] = dy[i] * (T(0.5) * (T(1) + th) + T(0.5) * v * (T(1) - th * th) * dinner);
      });
      break;
  }
}

template <typename T>
void softmax_forward(bool log, const T* x, T* y, i64 outer, i64 dim, i64 inner) {
  const i64 lines = outer * inner;
  const int nt = threads_for(double(lines) * dim * 20, 2.0e5);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (i64 l = 0; l < lines; ++l) {
    const i64 o = l / inner, in = l % inner;
    const T* xl = x + o * dim * inner + in;
    T* yl = y + o * dim * inner + in;
    T m = -std::numeric_limits<T>::infinity();
    for (i64 d = 0; d < dim; ++d) m = std::max(m, xl[d * inner]);  // NaN handled below
    for (i64 d = 0; d < dim; ++d)
      if (std::isnan(xl[d * inner])) m = xl[d * inner];
    T sum = 0;
    for (i64 d = 0; d < dim; ++d) sum += std::exp(xl[d * inner] - m);
    if (log) {
      const T lse = std::log(sum);
      for (i64 d = 0; d < dim; ++d) yl[d * inner] = xl[d * inner] - m - lse;
    } else {
      const T inv = T(1) / sum;
      for (i64 d = 0; d < dim; ++d) yl[d * inner] = std::exp(xl[d * inner] - m) * inv;
    }
  }
}

template <typename T>
void softmax_backward(bool log, const T* dy, const T* y, T* dx, i64 outer, i64 dim, i64 inner) {
  const i64 lines = outer * inner;
  const int nt = threads_for(double(lines) * dim * 4, 2.0e5);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (i64 l = 0; l < lines; ++l) {
    const i64 o = l / inner, in = l % inner, base = o * dim * inner + in;
    const T* g = dy + base;
    const T* yl = y + base;
    T* d = dx + base;
    T s = 0;
    if (log) {
      for (i64 k = 0; k < dim; ++k) s += g[k * inner];
      for (i64 k = 0; k < dim; ++k) d[k * inner] = g[k * inner] - std::exp(yl[k * inner]) * s;
    } else {
      for (i64 k = 0; k < dim; ++k) s += g[k * inner] * yl[k * inner];
      for (i64 k = 0; k < dim; ++k) d[k * inner] = yl[k * inner] * (g[k * inner] - s);
    }
  }
}

namespace {
// Index (0..pieces-1) of the first maximal piece; NaN wins.
template <typename T>
inline i64 maxout_arg(const T* x, i64 stride, i64 pieces) {
  i64 best = 0;
  T m = x[0];
  if (std::isnan(m)) return 0;
  for (i64 k = 1; k < pieces; ++k) {
    const T v = x[k * stride];
    if (std::isnan(v)) return k;
    if (v > m) { m = v; best = k; }
  }
  return best;
}
}  // namespace

template <typename T>
void maxout_forward(const T* x, T* y, i64 outer, i64 dim, i64 inner, i64 pieces) {
  const i64 od = dim / pieces, n = outer * od * inner;
  const int nt = threads_for(double(n) * pieces, 2.0e5);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (i64 i = 0; i < n; ++i) {
    const i64 o = i / (od * inner), j = (i / inner) % od, in = i % inner;
    const T* xs = x + (o * dim + j * pieces) * inner + in;
    y[i] = xs[maxout_arg(xs, inner, pieces) * inner];
  }
}

template <typename T>
void maxout_backward(const T* dy, const T* x, T* dx, i64 outer, i64 dim, i64 inner, i64 pieces) {
  const i64 od = dim / pieces, n = outer * od * inner;
  const int nt = threads_for(double(n) * pieces, 2.0e5);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (i64 i = 0; i < n; ++i) {
    const i64 o = i / (od * inner), j = (i / inner) % od, in = i % inner;
    const i64 base = (o * dim + j * pieces) * inner + in;
    const i64 a = maxout_arg(x + base, inner, pieces);
    for (i64 k = 0; k < pieces; ++k) dx[base + k * inner] = k == a ? dy[i] : T(0);
  }
}

#define PYCONV_ACT_INSTANTIATE(T)                                                                \
  template void activation_forward<T>(Act, T, const T*, T*, i64);                               \
  template void activation_backward<T>(Act, T, const T*, const T*, T*, i64);                     \
  template void softmax_forward<T>(bool, const T*, T*, i64, i64, i64);                          \
  template void softmax_backward<T>(bool, const T*, const T*, T*, i64, i64, i64);               \
  template void maxout_forward<T>(const T*, T*, i64, i64, i64, i64);                            \
  template void maxout_backward<T>(const T*, const T*, T*, i64, i64, i64, i64);
PYCONV_ACT_INSTANTIATE(float)
PYCONV_ACT_INSTANTIATE(double)

}  // namespace pyconv
