// loss.cpp - see loss.h. Rows are independent (parallel over rows); the
// reduction is a serial double sum over the per-row values, so it does not
// depend on the thread count.
#include "ops/loss.h"

#include <cmath>
#include <limits>
#include <vector>

#include <type_traits>

#include "cpu/parallel.h"
#include "ops/activation.h"
#include "ops/vmath.h"

namespace pyconv {
namespace {

// A row's max m and log(sum(exp(x - m))): log-probabilities are then
// (x - m) - log_s, where x - m is exact. (Adding m and log_s first loses the
// low bits of log_s when |m| is large: 2e-4 relative error at logits of 1e4
// in float32.)
template <typename T>
struct RowLse {
  T m, log_s;
  T logp(T x) const { return (x - m) - log_s; }
};

template <typename T>
inline RowLse<T> row_lse(const T* x, i64 C, const VMathF32* vm) {
  constexpr T nan = std::numeric_limits<T>::quiet_NaN();
  if constexpr (std::is_same_v<T, float>) {
    if (vm) {
      const float m = vm->max(x, C);
      if (std::isnan(m) || std::isinf(m)) return {nan, nan};  // as below
      return {m, std::log(vm->exp_shift_sum(x, m, nullptr, C))};
    }
  }
  T m = -std::numeric_limits<T>::infinity();
  for (i64 c = 0; c < C; ++c) {
    if (std::isnan(x[c])) return {nan, nan};
    m = x[c] > m ? x[c] : m;
  }
  // A +inf entry, or a row of -inf: x - max is inf - inf somewhere, so
  // PyTorch's log_softmax is NaN throughout the row.
  if (std::isinf(m)) return {nan, nan};
  T s = 0;
  for (i64 c = 0; c < C; ++c) s += std::exp(x[c] - m);
  return {m, std::log(s)};
}

template <typename T>
void reduce_rows(const T* rows, i64 n, int reduction, T* out) {
  double s = 0;
  for (i64 i = 0; i < n; ++i) s += rows[i];
  out[0] = T(reduction == kMean ? s / double(n) : s);
}

inline int row_threads(i64 N, i64 C) { return threads_for(double(N) * C * 20, 2.0e5); }

}  // namespace

template <typename T>
void cross_entropy_forward(const T* x, i64 N, i64 C, const std::int64_t* t, const T* q, T eps,
                           int reduction, T* out) {
  std::vector<T> tmp(reduction == kNone ? 0 : N);
  T* rows = reduction == kNone ? out : tmp.data();
  const int nt = row_threads(N, C);
  const VMathF32* vm = vmath_f32();
  // Short rows (float32): the log-softmax 8 rows per vector in transposed
  // blocks (softmax_forward's column path), each row's loss read from its
  // block (lp(c) = log-probability of class c).
  auto row_loss = [&](i64 n, auto lp) {
    T loss = 0;
    if (t) {  // (1-eps) * (-logp[t]) + eps * mean_c(-logp[c])
      loss = -(T(1) - eps) * lp(t[n]);
      if (eps != T(0)) {
        T s = 0;
        for (i64 c = 0; c < C; ++c) s -= lp(c);
        loss += eps * s / T(C);
      }
    } else {  // -sum_c q'_c * logp_c, q' = (1-eps) q + eps / C
      const T* qr = q + n * C;
      for (i64 c = 0; c < C; ++c) loss -= ((T(1) - eps) * qr[c] + eps / T(C)) * lp(c);
    }
    return loss;
  };
  if constexpr (std::is_same_v<T, float>) {
    const bool done = log_softmax_line_blocks(x, N, C, [&](i64 l0, i64 nl, const float* lsm, i64 ld) {
      for (i64 l = 0; l < nl; ++l)
        rows[l0 + l] = row_loss(l0 + l, [&](i64 c) { return lsm[c * ld + l]; });
    });
    if (done) {
      if (reduction != kNone) reduce_rows(rows, N, reduction, out);
      return;
    }
  }
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (i64 n = 0; n < N; ++n) {
    const T* xr = x + n * C;
    const RowLse<T> r = row_lse(xr, C, vm);
    rows[n] = row_loss(n, [&](i64 c) { return r.logp(xr[c]); });
  }
  if (reduction != kNone) reduce_rows(rows, N, reduction, out);
}

template <typename T>
void cross_entropy_backward(const T* x, i64 N, i64 C, const std::int64_t* t, const T* q, T eps,
                            const T* g, i64 g_stride, T scale, T* dx) {
  const int nt = row_threads(N, C);
  const VMathF32* vm = vmath_f32();
  // Short rows (float32): every row's softmax into dx first, 8 rows per vector.
  const bool short_rows = std::is_same_v<T, float> && vm && C < kShortSoftmaxLine;
  if (short_rows) softmax_forward(false, x, dx, N, C, i64(1));
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (i64 n = 0; n < N; ++n) {
    const T* xr = x + n * C;
    T* dr = dx + n * C;
    const T gn = g[n * g_stride] * scale;
    if (short_rows) {  // dr holds the softmax
      if (t) {
        for (i64 c = 0; c < C; ++c) dr[c] = gn * (dr[c] - eps / T(C));
        dr[t[n]] -= gn * (T(1) - eps);
      } else {
        const T* qr = q + n * C;
        T qs = 0;
        for (i64 c = 0; c < C; ++c) qs += (T(1) - eps) * qr[c] + eps / T(C);
        for (i64 c = 0; c < C; ++c)
          dr[c] = gn * (dr[c] * qs - ((T(1) - eps) * qr[c] + eps / T(C)));
      }
      continue;
    }
    // dr = softmax(x) * inv: either exp(x - m) with inv = 1 / sum (one SIMD
    // exp pass, the scale folded into the loops below), or the softmax itself.
    T inv = T(1);
    bool have_p = false;
    if constexpr (std::is_same_v<T, float>) {
      if (vm) {
        const float m = vm->max(xr, C);
        if (!std::isnan(m) && !std::isinf(m)) {  // else row_lse's NaN row below
          inv = 1.f / vm->exp_shift_sum(xr, m, dr, C);
          have_p = true;
        }
      }
    }
    if (!have_p) {
      const RowLse<T> r = row_lse(xr, C, vm);
      for (i64 c = 0; c < C; ++c) dr[c] = std::exp(r.logp(xr[c]));
    }
    if (t) {  // softmax - ((1-eps) onehot + eps/C)
      for (i64 c = 0; c < C; ++c) dr[c] = gn * (dr[c] * inv - eps / T(C));
      dr[t[n]] -= gn * (T(1) - eps);
    } else {  // softmax * sum(q') - q'
      const T* qr = q + n * C;
      T qs = 0;
      for (i64 c = 0; c < C; ++c) qs += (T(1) - eps) * qr[c] + eps / T(C);
      for (i64 c = 0; c < C; ++c)
        dr[c] = gn * ((dr[c] * inv) * qs - ((T(1) - eps) * qr[c] + eps / T(C)));
    }
  }
}

template <typename T>
void nll_loss_forward(const T* x, i64 N, i64 C, const std::int64_t* t, int reduction, T* out) {
  std::vector<T> tmp(reduction == kNone ? 0 : N);
  T* rows = reduction == kNone ? out : tmp.data();
  for (i64 n = 0; n < N; ++n) rows[n] = -x[n * C + t[n]];
  if (reduction != kNone) reduce_rows(rows, N, reduction, out);
}

template <typename T>
void nll_loss_backward(i64 N, i64 C, const std::int64_t* t, const T* g, i64 g_stride, T scale,
                       T* dx) {
  const int nt = row_threads(N, C);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (i64 n = 0; n < N; ++n) {
    T* dr = dx + n * C;
    for (i64 c = 0; c < C; ++c) dr[c] = T(0);
    dr[t[n]] = -g[n * g_stride] * scale;
  }
}

template <typename T>
void mse_loss_forward(const T* x, const T* target, i64 n, int reduction, T* out) {
  if (reduction == kNone) {
    const int nt = threads_for(double(n) * 2, 2.0e5);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (i64 i = 0; i < n; ++i) {
      const T d = x[i] - target[i];
      out[i] = d * d;
    }
    return;
  }
  double s = 0;
  for (i64 i = 0; i < n; ++i) {
    const double d = double(x[i]) - double(target[i]);
    s += d * d;
  }
  out[0] = T(reduction == kMean ? s / double(n) : s);
}

template <typename T>
void mse_loss_backward(const T* x, const T* target, i64 n, const T* g, i64 g_stride, T scale,
                       T* dx) {
  const int nt = threads_for(double(n) * 2, 2.0e5);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (i64 i = 0; i < n; ++i) dx[i] = T(2) * (x[i] - target[i]) * g[i * g_stride] * scale;
}

#define PYCONV_LOSS_INSTANTIATE(T)                                                                 \
  template void cross_entropy_forward<T>(const T*, i64, i64, const std::int64_t*, const T*, T, int, \
                                         T*);                                                      \
  template void cross_entropy_backward<T>(const T*, i64, i64, const std::int64_t*, const T*, T,     \
                                          const T*, i64, T, T*);                                   \
  template void nll_loss_forward<T>(const T*, i64, i64, const std::int64_t*, int, T*);            \
  template void nll_loss_backward<T>(i64, i64, const std::int64_t*, const T*, i64, T, T*);         \
  template void mse_loss_forward<T>(const T*, const T*, i64, int, T*);                            \
  template void mse_loss_backward<T>(const T*, const T*, i64, const T*, i64, T, T*);
PYCONV_LOSS_INSTANTIATE(float)
PYCONV_LOSS_INSTANTIATE(double)

}  // namespace pyconv
