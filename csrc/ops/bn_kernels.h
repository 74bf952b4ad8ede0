// bn_kernels.h - scalar pieces shared by batchnorm.cpp's portable loops and
// the AVX2 batch-norm kernels, so both run the same operations in the same
// order. Internal linkage on purpose: each translation unit (compiled with
// its own ISA flags) gets its own copy, never another file's.
#pragma once
#include "common.h"

namespace pyconv {
namespace {

// A block's statistics into st = {count, shift k, sum(x - k), sum((x - k)^2)}
// (double), k being the first block's mean: nb values, their mean mb as
// rounded, and the sums sb of (x - mb) and qb of (x - mb)^2 (taken in float
// about the block's own mean, so they cancel little), corrected by the
// rounding of mb (sb). The final M2 = sum((x - k)^2) - sum(x - k)^2 / n
// cancels little too: k is within a few deviations of the mean unless the
// data drifts by hundreds of them.
inline void merge_stats(double* st, double nb, double mb, double sb, double qb) {
  if (st[0] == 0) st[1] = __builtin_isfinite(mb) ? mb : 0.0;  // (no std:: here: ISA files use it)
  const double d = mb - st[1];
  st[0] += nb;
  st[2] += nb * d + sb;
  st[3] += qb + d * (2 * sb + nb * d);
}

// A block's statistics in double: n values at x, stride apart; their mean
// md and the sums sdd of (x - md) and qd of (x - md)^2. The fallback of the
// float block sums (merge_block, batchnorm.cpp column_strip, the AVX2
// bn_col_stats8) when those overflow; non-finite data stays non-finite.
template <typename T>
inline void block_stats_double(const T* x, i64 stride, i64 n, double* md, double* sdd, double* qd) {
  double t = 0, u = 0, v = 0;
  for (i64 i = 0; i < n; ++i) t += double(x[i * stride]);
  *md = t / double(n);
  for (i64 i = 0; i < n; ++i) {
    const double d = double(x[i * stride]) - *md;
    u += d;
    v += d * d;
  }
  *sdd = u, *qd = v;
}

// merge_stats of a block of nb values at x whose float statistics are mb,
// sb, qb; if any of them overflowed (values or deviations beyond ~1e18, far
// inside float32's range for the variance), the block is taken again in
// double.
template <typename T>
inline void merge_block(double* st, const T* x, i64 nb, T mb, T sb, T qb) {
  if (__builtin_isfinite(mb) && __builtin_isfinite(sb) && __builtin_isfinite(qb))
    return merge_stats(st, double(nb), double(mb), double(sb), double(qb));
  double m, a, q;
  block_stats_double(x, 1, nb, &m, &a, &q);
  merge_stats(st, double(nb), m, a, q);
}

// The backward's gradient sums over a block of len values (a multiple of 32)
// in double, lane l = i mod 32 into a1[l] / a2[l]: the fallback when the
// block's float sums overflow (batchnorm.cpp grad_sums and the AVX2
// bn_grad_sums). Non-finite data stays non-finite.
template <typename T>
inline void grad_block_double(const T* g, const T* x, i64 len, T m, double* a1, double* a2) {
  for (int l = 0; l < 32; ++l) {
    double s = 0, t = 0;
    for (i64 i = l; i < len; i += 32) {
      s += double(g[i]);
      t += double(g[i]) * (double(x[i]) - double(m));
    }
    a1[l] += s;
    a2[l] += t;
  }
}

// One column's shifted sums after a block of dn rows with mean md and
// deviation sums sdd, qd (merge_stats with the shift fixed on the first).
inline void column_update(double md, double sdd, double qd, double dn, bool first, double* k,
                          double* s1, double* s2) {
  if (first) {
    *k = __builtin_isfinite(md) ? md : 0.0;
    *s1 = *s2 = 0;
  }
  const double d = md - *k;
  *s1 += dn * d + sdd;
  *s2 += qd + d * (2 * sdd + dn * d);
}

// The sum of 32 lane sums in a fixed tree, the one a SIMD reduction of
// four 8-lane vectors takes: lanes l, l+8, l+16, l+24 first, then the two
// halves of 8, then of 4, then of 2.
template <typename T>
inline T fold_lanes(const T* a) {
  T v[8], w[4];
  for (int l = 0; l < 8; ++l) v[l] = (a[l] + a[l + 8]) + (a[l + 16] + a[l + 24]);
  for (int l = 0; l < 4; ++l) w[l] = v[l] + v[l + 4];
  return (w[0] + w[2]) + (w[1] + w[3]);
}

}  // namespace
}  // namespace pyconv
