// activation.cpp - see activation.h. Element-wise loops are split into equal
// contiguous chunks between threads; reductions are per (outer, inner) line,
// each computed by one thread in a fixed order.
#include "ops/activation.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <type_traits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu/cpuinfo.h"
#include "cpu/parallel.h"
#include "ops/vmath.h"

namespace pyconv {

const VMathF32* vmath_f32() {
#if defined(PYCONV_X86)
  if (active_isa() != Isa::ref && cpu_supports(Isa::avx2)) return &vmath_f32_avx2;
#endif
  return nullptr;
}

namespace {

// The SIMD table's kernel for a float activation (nullptr: use the portable loop).
inline void (*simd_forward(Act act))(const float*, float*, i64) {
  const VMathF32* vm = vmath_f32();
  if (!vm) return nullptr;
  switch (act) {
    case Act::sigmoid: return vm->sigmoid;
    case Act::tanh: return vm->tanh;
    case Act::gelu: return vm->gelu;
    case Act::gelu_tanh: return vm->gelu_tanh;
    case Act::relu: return vm->relu;
    default: return nullptr;
  }
}

inline void (*simd_backward(Act act))(const float*, const float*, float*, i64) {
  const VMathF32* vm = vmath_f32();
  if (!vm) return nullptr;
  switch (act) {
    case Act::gelu: return vm->gelu_backward;
    case Act::gelu_tanh: return vm->gelu_tanh_backward;
    case Act::relu: return vm->relu_backward;
    default: return nullptr;
  }
}

constexpr double kSqrt1_2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;
constexpr double kSqrt2OverPi = 0.79788456080286535588;

// y[i] = f(a[i]) / f(a[i], b[i]) over contiguous chunks, one chunk per
// thread. Local __restrict pointers and a branch-free f let the compiler
// vectorise the loop (a lambda indexing captured pointers did not: relu's
// backward ran at 2 GB/s). Unrolled so several independent polynomial chains
// are in flight (one vector at a time is latency-bound).
template <typename T, typename F>
void map1(const T* a, T* y, i64 n, double cost, F f) {
  parallel_chunks(n, cost, [&](i64 i0, i64 i1) {
    const T* __restrict ap = a + i0;
    T* __restrict yp = y + i0;
#pragma GCC unroll 4
    for (i64 i = 0; i < i1 - i0; ++i) yp[i] = f(ap[i]);
  });
}

template <typename T, typename F>
void map2(const T* a, const T* b, T* y, i64 n, double cost, F f) {
  parallel_chunks(n, cost, [&](i64 i0, i64 i1) {
    const T* __restrict ap = a + i0;
    const T* __restrict bp = b + i0;
    T* __restrict yp = y + i0;
#pragma GCC unroll 4
    for (i64 i = 0; i < i1 - i0; ++i) yp[i] = f(ap[i], bp[i]);
  });
}

// e^r for |r| <= ln2/2 (plus a hair): Cephes' expf polynomial, degree 6.
inline float exp_poly_f32(float r) {
  float p = 1.9875691500E-4f;
  p = p * r + 1.3981999507E-3f;
  p = p * r + 8.3334519073E-3f;
  p = p * r + 4.1665795894E-2f;
  p = p * r + 1.6666665459E-1f;
  p = p * r + 5.0000001201E-1f;
  return p * r * r + r + 1.0f;
}

// exp for float without libm calls, branch-free so loops over it vectorise
// (Cephes' expf scheme: x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial for
// e^r, 2^n through the exponent bits). Max error about 2 ulp on the normal
// range; exact 0 below -87.3 and inf above 88.7; NaN stays NaN.
inline float exp_f32(float x) {
  // NaN is clamped to 0 here (converting NaN to int is undefined behaviour)
  // and put back at the end.
  const float xc = x != x ? 0.f : (x < -87.3f ? -87.3f : (x > 88.7f ? 88.7f : x));
  const float fn = xc * 1.44269504088896341f + (xc < 0.f ? -0.5f : 0.5f);
  const int n = static_cast<int>(fn);  // round to nearest, in [-126, 128]
  const float nf = static_cast<float>(n);
  float r = xc - nf * 0.693359375f;    // ln2 split in two for an exact product
  r = r - nf * -2.12194440e-4f;
  const float er = exp_poly_f32(r);
  // 2^n in two halves: each stays a normal float for every n in [-126, 128]
  // (2^128 alone would be inf while e^x < FLT_MAX up to x = 88.72).
  const int n1 = n / 2, n2 = n - n1;
  const float s1 = __builtin_bit_cast(float, static_cast<std::int32_t>((n1 + 127) << 23));
  const float s2 = __builtin_bit_cast(float, static_cast<std::int32_t>((n2 + 127) << 23));
  float y = er * s1 * s2;
  y = x < -87.3f ? 0.f : y;
  y = x > 88.7f ? __builtin_huge_valf() : y;
  return x != x ? x : y;
}

template <typename T>
inline T fast_exp(T x) { return std::exp(x); }  // float64: libm (full precision)
template <>
inline float fast_exp<float>(float x) { return exp_f32(x); }

template <typename T>
inline T sigmoid(T x) {  // no overflow for any x; exact 0 and 1 limits
  const T ax = x < T(0) ? -x : x;
  const T e = fast_exp(-ax);
  const T s = T(1) / (T(1) + e);
  return x >= T(0) ? s : (x != x ? x : e * s);
}

// tanh: float by the rational TanhRational (vmath.h) on x clamped to
// +-9.1; NaN stays NaN (the clamp's comparisons are false for it).
template <typename T>
inline T tanh_fn(T x) { return std::tanh(x); }
template <>
inline float tanh_fn<float>(float x) {
  using C = TanhRational;
  const float xc = x < -C::x_max ? -C::x_max : (x > C::x_max ? C::x_max : x);
  const float w = xc * xc;
  const float P = (((C::p4 * w + C::p3) * w + C::p2) * w + C::p1) * w + C::p0;
  const float Q = (((C::q4 * w + C::q3) * w + C::q2) * w + C::q1) * w + 1.0f;
  return xc * (P / Q);
}

// exp(-x^2 / 2) for float x, to a few ulp over its whole range (the normal
// density's shape, and the tail of Phi). x^2 is exact in double; its
// float head a and the rest lo both go into the reduction (r = a - n ln2 +
// lo), so the tail keeps its precision where a float x * x alone would be off
// by up to ~1e-6 relative (x near 13). 0 for NaN and for |x| > 13.2 (where
// the value is below 2^-126).
inline float exp_neg_half_sq(float x) {
  const double q0 = -0.5 * double(x) * double(x);  // exact
  const bool in_range = q0 >= double(-87.3f);      // false for NaN
  const double q = in_range ? q0 : 0.0;            // (branch-free, so loops vectorise)
  const float a = float(q), lo = float(q - double(a));
  const int n = static_cast<int>(a * 1.44269504088896341f - 0.5f);  // round to nearest, in [-126, 0]
  const float nf = static_cast<float>(n);
  float r = a - nf * 0.693359375f;
  r = r - nf * -2.12194440e-4f;
  r = r + lo;
  const float er = exp_poly_f32(r);
  const float y = er * __builtin_bit_cast(float, static_cast<std::int32_t>((n + 127) << 23));
  return in_range ? y : 0.f;
}

// R(u) = erfcx(u / sqrt 2) / 2, the upper normal tail over exp(-u^2/2)
// (NormalTail in vmath.h).
inline float mills_ratio_half(float u) {  // u in [0, NormalTail::u_max]
  using C = NormalTail;
  const float P = (((C::p4 * u + C::p3) * u + C::p2) * u + C::p1) * u + C::p0;
  const float Q = ((((C::q5 * u + C::q4) * u + C::q3) * u + C::q2) * u + C::q1) * u + 1.0f;
  return P / Q;
}

// The standard normal CDF Phi(x) and density phi(x). float: with
// e = exp(-x^2/2), phi = e / sqrt(2 pi) and the tail h = e * R(|x|)
// (above): Phi = h for x < 0 and 1 - h for x >= 0, so the far negative
// tail keeps its relative precision. NaN x gives h = 0 and phi = 0 (GELU's
// x * Phi and its gradient stay NaN through x). float64: libm's erf and exp.
template <typename T>
inline void normal_cdf_pdf(T x, T& cdf, T& pdf) {
  cdf = T(0.5) * (T(1) + std::erf(x * T(kSqrt1_2)));
  pdf = T(kInvSqrt2Pi) * std::exp(T(-0.5) * x * x);
}
template <>
inline void normal_cdf_pdf<float>(float x, float& cdf, float& pdf) {
  const float e = exp_neg_half_sq(x);
  const float ax = x < 0.f ? -x : x;
  const float h = e * mills_ratio_half(ax < NormalTail::u_max ? ax : NormalTail::u_max);  // NaN -> u_max
  cdf = x >= 0.f ? 1.f - h : h;
  pdf = float(kInvSqrt2Pi) * e;
}

}  // namespace

template <typename T>
void activation_forward(Act act, T alpha, const T* x, T* y, i64 n) {
  if constexpr (std::is_same_v<T, float>) {
    if (auto k = simd_forward(act)) {
      parallel_chunks(n, 1, [&](i64 i0, i64 i1) { k(x + i0, y + i0, i1 - i0); });
      return;
    }
  }
  switch (act) {
    case Act::relu:
      // x < 0 ? 0 : x keeps NaN (PyTorch's clamp_min semantics).
      map1(x, y, n, 1, [](T v) { return v < T(0) ? T(0) : v; });
      break;
    case Act::leaky_relu:
      map1(x, y, n, 1, [alpha](T v) { return v > T(0) ? v : v * alpha; });
      break;
    case Act::elu:
      map1(x, y, n, 20, [alpha](T v) { return v > T(0) ? v : alpha * std::expm1(v); });
      break;
    case Act::sigmoid:
      map1(x, y, n, 4, [](T v) { return sigmoid(v); });
      break;
    case Act::tanh:
      map1(x, y, n, 4, [](T v) { return tanh_fn(v); });
      break;
    case Act::gelu:
      map1(x, y, n, 6, [](T v) {
        T cdf, pdf;
        normal_cdf_pdf(v, cdf, pdf);
        return v * cdf;
      });
      break;
    case Act::gelu_tanh:
      map1(x, y, n, 6, [](T v) {
        return T(0.5) * v * (T(1) + tanh_fn(T(kSqrt2OverPi) * (v + T(0.044715) * v * v * v)));
      });
      break;
  }
}

template <typename T>
void activation_backward(Act act, T alpha, const T* dy, const T* s, T* dx, i64 n) {
  if constexpr (std::is_same_v<T, float>) {
    if (auto k = simd_backward(act)) {
      parallel_chunks(n, 1, [&](i64 i0, i64 i1) { k(dy + i0, s + i0, dx + i0, i1 - i0); });
      return;
    }
  }
  switch (act) {
    case Act::relu:  // PyTorch's threshold_backward: input <= 0 -> 0
      map2(dy, s, dx, n, 1, [](T g, T v) { return v <= T(0) ? T(0) : g; });
      break;
    case Act::leaky_relu:
      map2(dy, s, dx, n, 1, [alpha](T g, T v) { return v > T(0) ? g : g * alpha; });
      break;
    case Act::elu:
      map2(dy, s, dx, n, 20, [alpha](T g, T v) { return v <= T(0) ? g * alpha * std::exp(v) : g; });
      break;
    case Act::sigmoid:  // s = y
      map2(dy, s, dx, n, 1, [](T g, T y) { return g * (T(1) - y) * y; });
      break;
    case Act::tanh:  // s = y
      map2(dy, s, dx, n, 1, [](T g, T y) { return g * (T(1) - y * y); });
      break;
    case Act::gelu:
      map2(dy, s, dx, n, 8, [](T g, T v) {
        T cdf, pdf;
        normal_cdf_pdf(v, cdf, pdf);
        return g * (cdf + v * pdf);
      });
      break;
    case Act::gelu_tanh:
      map2(dy, s, dx, n, 8, [](T g, T v) {
        const T inner = T(kSqrt2OverPi) * (v + T(0.044715) * v * v * v);
        const T th = tanh_fn(inner);
        const T dinner = T(kSqrt2OverPi) * (T(1) + T(3 * 0.044715) * v * v);
        return g * (T(0.5) * (T(1) + th) + T(0.5) * v * (T(1) - th * th) * dinner);
      });
      break;
  }
}

// Lines shorter than this (softmax over the last axis) are transposed in
// blocks and run 8 lines per vector, not one call per line.
constexpr i64 kShortLine = kShortSoftmaxLine;
constexpr i64 kLineBlock = 64;  // lines per transposed block

// The short-line (inner == 1) half of by_columns: blocks of kLineBlock
// lines transposed into per-thread scratch, body(srcs, dst, ld, n) on each,
// then emit(l0, n, dst) with the block's result (dst[d * kLineBlock + l]
// for line l0 + l).
template <typename Body, typename Emit>
void line_blocks(const VMathF32* vm, i64 outer, i64 dim, int nin, const float* const* in,
                 double work, Body body, Emit emit) {
  const i64 blocks = (outer + kLineBlock - 1) / kLineBlock;
  const int nt = threads_for(work, 2.0e5);
  std::vector<float> scratch(std::size_t(nt) * (nin + 1) * dim * kLineBlock);
  ExceptionCapture capture;
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
#ifdef _OPENMP
    float* t = scratch.data() + std::size_t(omp_get_thread_num()) * (nin + 1) * dim * kLineBlock;
#else
    float* t = scratch.data();
#endif
#pragma omp for schedule(static)
    for (i64 bl = 0; bl < blocks; ++bl) {
      const i64 l0 = bl * kLineBlock, n = std::min(kLineBlock, outer - l0);
      const float* src[2];
      for (int k = 0; k < nin; ++k) {  // t_k[d][l] = in_k[l0 + l][d]
        float* tk = t + k * dim * kLineBlock;
        vm->transpose(in[k] + l0 * dim, n, dim, dim, tk, kLineBlock);
        src[k] = tk;
      }
      float* to = t + nin * dim * kLineBlock;
      capture.run([&] {
        body(src, to, kLineBlock, n);
        emit(l0, n, to);
      });
    }
  }
  capture.rethrow();
}

// Softmax-family work over float32 columns (vmath's *_cols kernels): for
// inner > 1 the columns are contiguous as they are; for short lines
// (inner == 1) blocks of kLineBlock lines are transposed into per-thread
// scratch first. body(srcs, dst, ld, n) runs the kernel on one block; nin
// arrays are read and one written.
template <typename Body>
void by_columns(const VMathF32* vm, i64 outer, i64 dim, i64 inner, int nin, const float* const* in,
                float* out, double work, Body body) {
  if (inner > 1) {
    // Column blocks of up to 256: every thread gets whole ones.
    const i64 cb = (inner + 255) / 256, units = outer * cb;
    const int nt = threads_for(work, 2.0e5);
    ExceptionCapture capture;  // (a kernel's tail block allocates: bad_alloc)
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (i64 u = 0; u < units; ++u)
      capture.run([&] {
        const i64 o = u / cb, j0 = u % cb * 256, n = std::min<i64>(256, inner - j0);
        const float* src[2];
        for (int k = 0; k < nin; ++k) src[k] = in[k] + o * dim * inner + j0;
        body(src, out + o * dim * inner + j0, inner, n);
      });
    capture.rethrow();
    return;
  }
  line_blocks(vm, outer, dim, nin, in, work, body, [&](i64 l0, i64 n, const float* to) {
    vm->transpose(to, dim, n, kLineBlock, out + l0 * dim, dim);
  });
}

template <typename T>
void softmax_forward(bool log, const T* x, T* y, i64 outer, i64 dim, i64 inner) {
  const i64 lines = outer * inner;
  if constexpr (std::is_same_v<T, float>) {
    const VMathF32* vm = vmath_f32();
    if (vm && (inner > 1 || dim < kShortLine)) {
      const float* in[1] = {x};
      by_columns(vm, outer, dim, inner, 1, in, y, double(lines) * dim * 8,
                 [&](const float* const* s, float* d, i64 ld, i64 n) {
                   vm->softmax_cols(s[0], d, dim, ld, n, log);
                 });
      return;
    }
    if (vm && inner == 1) {  // contiguous lines: SIMD max, exp and sum
      const int nt = threads_for(double(lines) * dim * 2, 2.0e5);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
      for (i64 l = 0; l < lines; ++l) {
        vm->softmax_row(x + l * dim, y + l * dim, dim, log);
      }
      return;
    }
  }
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

bool log_softmax_line_blocks(const float* x, i64 lines, i64 dim,
                             const std::function<void(i64, i64, const float*, i64)>& f) {
  const VMathF32* vm = vmath_f32();
  if (!vm || dim >= kShortLine) return false;
  const float* in[1] = {x};
  line_blocks(
      vm, lines, dim, 1, in, double(lines) * dim * 8,
      [&](const float* const* src, float* d, i64 ld, i64 n) { vm->softmax_cols(src[0], d, dim, ld, n, true); },
      [&](i64 l0, i64 n, const float* to) { f(l0, n, to, kLineBlock); });
  return true;
}

template <typename T>
void softmax_backward(bool log, const T* dy, const T* y, T* dx, i64 outer, i64 dim, i64 inner) {
  const i64 lines = outer * inner;
  if constexpr (std::is_same_v<T, float>) {
    const VMathF32* vm = vmath_f32();
    // (Short lines of softmax's backward need no exp: the row loop is as fast.)
    if (vm && (inner > 1 || (log && dim < kShortLine))) {
      const float* in[2] = {dy, y};
      by_columns(vm, outer, dim, inner, 2, in, dx, double(lines) * dim * 4,
                 [&](const float* const* s, float* d, i64 ld, i64 n) {
                   vm->softmax_backward_cols(s[0], s[1], d, dim, ld, n, log);
                 });
      return;
    }
    if (vm && inner == 1) {
      const int nt = threads_for(double(lines) * dim * 2, 2.0e5);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
      for (i64 l = 0; l < lines; ++l)
        vm->softmax_backward_row(dy + l * dim, y + l * dim, dx + l * dim, dim, log);
      return;
    }
  }
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
