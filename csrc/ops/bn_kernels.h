// bn_kernels.h - scalar pieces shared by batchnorm.cpp's portable loops and
// the AVX2 batch-norm kernels, so both run the same operations in the same
// order. Internal linkage on purpose: each translation unit (compiled with
// its own ISA flags) gets its own copy, never another file's.
#pragma once
#include <cmath>

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
  if (st[0] == 0) st[1] = std::isfinite(mb) ? mb : 0.0;
  const double d = mb - st[1];
  st[0] += nb;
  st[2] += nb * d + sb;
  st[3] += qb + d * (2 * sb + nb * d);
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
