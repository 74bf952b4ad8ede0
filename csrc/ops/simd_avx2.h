// simd_avx2.h - small AVX2 helpers shared by the ops' *_avx2.cpp files.
// Include it only from files compiled with -mavx2 -mfma; everything here is
// inline in an anonymous namespace, so no AVX2 code reaches portable objects.
#pragma once
#include <immintrin.h>

#include "common.h"

namespace pyconv {
namespace {

// In-register 8x8 transpose: on exit r[k][t] is the entry value r[t][k].
inline void transpose8(__m256* r) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// All-ones lanes where |v| >= limit or v is NaN (limit = inf: non-finite).
inline __m256 outside(__m256 v, __m256 limit) {
  const __m256 absv = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v);
  return _mm256_cmp_ps(absv, limit, _CMP_NLT_UQ);
}

// even[c] = src[2c], odd[c] = src[2c + 1] for the n elements of src.
// With check, returns false if some |src[i]| >= limit or is NaN.
inline bool split2_avx2(const float* src, i64 n, float* even, float* odd, bool check,
                        float limit) {
  const __m256 lim = _mm256_set1_ps(limit);
  __m256 bad = _mm256_setzero_ps();
  bool ok = true;
  i64 i = 0;
  if (n >= 16) {
    for (;; i += 16) {
      if (i > n - 16) i = (n - 16) & ~i64(1);  // a last, overlapping block at an even start
      const __m256 a = _mm256_loadu_ps(src + i), b = _mm256_loadu_ps(src + i + 8);
      if (check) bad = _mm256_or_ps(bad, _mm256_or_ps(outside(a, lim), outside(b, lim)));
      // within lanes: [a0 a2 b0 b2 | a4 a6 b4 b6], then 64-bit blocks reordered
      const __m256 e = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
      const __m256 o = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
      _mm256_storeu_ps(even + i / 2,
                       _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xD8)));
      _mm256_storeu_ps(odd + i / 2,
                       _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), 0xD8)));
      if (i + 16 >= n - 1) break;
    }
    i += 16;
  } else if (n >= 8) {  // one block of 8 (short rows: small maps), then the tail
    const __m256 a = _mm256_loadu_ps(src);
    if (check) bad = outside(a, lim);
    // [a0 a2 a1 a3 | a4 a6 a5 a7] -> evens a0 a2 a4 a6, odds a1 a3 a5 a7
    const __m256 t = _mm256_permute_ps(a, _MM_SHUFFLE(3, 1, 2, 0));
    const __m256d td = _mm256_permute4x64_pd(_mm256_castps_pd(t), 0xD8);  // 64-bit blocks 0 2 1 3
    _mm_storeu_ps(even, _mm256_castps256_ps128(_mm256_castpd_ps(td)));
    _mm_storeu_ps(odd, _mm256_extractf128_ps(_mm256_castpd_ps(td), 1));
    i = 8;
  }
  for (; i < n; ++i) {
    const float v = src[i];
    if (check && !(v < limit && v > -limit)) ok = false;
    if (i & 1)
      odd[i >> 1] = v;
    else
      even[i >> 1] = v;
  }
  return ok && _mm256_movemask_ps(bad) == 0;
}

}  // namespace
}  // namespace pyconv
