// vmath_avx2.cpp - the AVX2+FMA VMathF32 table (compiled with -mavx2 -mfma
// only here; everything but the table is in an anonymous namespace so no
// AVX2 code can leak into the portable paths). See vmath.h for the contract.
//
// Layout of every array kernel: full 8-lane vectors, then the remainder
// through a zero-padded 8-float stack buffer (never reading past the end).
#include <immintrin.h>

#include <cmath>
#include <limits>
#include <vector>

#include "ops/bn_kernels.h"
#include "ops/simd_avx2.h"
#include "ops/vmath.h"

namespace pyconv {
namespace {

using V = __m256;

inline V set1(float x) { return _mm256_set1_ps(x); }

// e^r for |r| <= ln2/2 (plus a hair): the degree-6 polynomial of Cephes'
// expf in Estrin's form (pairs, then r^2 and r^4: a shorter dependency chain
// than Horner's, which bounded these kernels' speed).
//
// The *_n<U> forms run U independent vectors with every step written for
// all of them in turn: a transcendental kernel is a dependency chain of tens
// of cycles (an exp-based GELU ~100) and the core reorders only a few dozen
// floating-point operations, so vectors computed one after another barely
// overlap (the erfc-based GELU ran 1.5x faster with U = 6; 3, 4, 8 and 10
// measured slower). Each vector gets exactly the operations of U = 1.
template <int U>
inline void exp_poly_n(const V* r, V* er) {
  V r2[U], r4[U];
  for (int u = 0; u < U; ++u) r2[u] = _mm256_mul_ps(r[u], r[u]);
  for (int u = 0; u < U; ++u) r4[u] = _mm256_mul_ps(r2[u], r2[u]);
  for (int u = 0; u < U; ++u) {
    const V q0 = _mm256_fmadd_ps(set1(1.6666665459E-1f), r[u], set1(5.0000001201E-1f));
    const V q1 = _mm256_fmadd_ps(set1(8.3334519073E-3f), r[u], set1(4.1665795894E-2f));
    const V q2 = _mm256_fmadd_ps(set1(1.9875691500E-4f), r[u], set1(1.3981999507E-3f));
    const V p = _mm256_fmadd_ps(q2, r4[u], _mm256_fmadd_ps(q1, r2[u], q0));
    er[u] = _mm256_fmadd_ps(p, r2[u], _mm256_add_ps(r[u], set1(1.0f)));
  }
}

// The core of exp for xc already clamped to [-87.3, 88.7]: xc = n ln2 + r,
// |r| <= ln2/2 (ln2 in two parts, so n ln2 is exact), er[u] = e^r, n[u] = n.
template <int U>
inline void exp_reduced_n(const V* xc, V* er, __m256i* n) {
  V fn[U], r[U];
  for (int u = 0; u < U; ++u)
    fn[u] = _mm256_round_ps(_mm256_mul_ps(xc[u], set1(1.44269504088896341f)),
                            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  for (int u = 0; u < U; ++u) r[u] = _mm256_fnmadd_ps(fn[u], set1(0.693359375f), xc[u]);
  for (int u = 0; u < U; ++u) r[u] = _mm256_fnmadd_ps(fn[u], set1(-2.12194440e-4f), r[u]);
  for (int u = 0; u < U; ++u) n[u] = _mm256_cvtps_epi32(fn[u]);
  exp_poly_n<U>(r, er);
}

// 2^n as a float, for n in [-126, 127].
inline V pow2i(__m256i n) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n, _mm256_set1_epi32(127)), 23));
}

// exp(x), 2^n applied in two halves so every n in [-126, 128] stays a
// normal scale. Exact 0 below -87.3 and inf above 88.7 (as the portable
// exp_f32), NaN stays NaN.
template <int U>
inline void exp_n(V* x) {
  const V lo = set1(-87.3f), hi = set1(88.7f);
  V xc[U], er[U];
  __m256i n[U];
  for (int u = 0; u < U; ++u) xc[u] = _mm256_min_ps(_mm256_max_ps(x[u], lo), hi);  // NaN -> lo (fixed below)
  exp_reduced_n<U>(xc, er, n);
  for (int u = 0; u < U; ++u) {
    const __m256i n1 = _mm256_srai_epi32(n[u], 1);
    V y = _mm256_mul_ps(_mm256_mul_ps(er[u], pow2i(n1)), pow2i(_mm256_sub_epi32(n[u], n1)));
    y = _mm256_blendv_ps(y, _mm256_setzero_ps(), _mm256_cmp_ps(x[u], lo, _CMP_LT_OQ));
    y = _mm256_blendv_ps(y, set1(std::numeric_limits<float>::infinity()), _mm256_cmp_ps(x[u], hi, _CMP_GT_OQ));
    x[u] = _mm256_blendv_ps(y, x[u], _mm256_cmp_ps(x[u], x[u], _CMP_UNORD_Q));
  }
}

inline V exp8(V x) {
  exp_n<1>(&x);
  return x;
}

// The reduction of exp for a in [-87.3, 88] (NaN passes through): n is the
// rounding of a * log2(e) + 1.5 * 2^23 + 127 (one FMA: the integer part lands
// in t's low mantissa bits, already biased), r = a - n ln2 (ln2 in two
// parts). 2^n is then t's bits shifted into the exponent field (n + 127 in
// [1, 254]): no round, convert or integer add.
template <int U>
inline void exp_small_reduce_n(const V* a, V* t, V* r) {
  const V magic = set1(12583039.0f);
  for (int u = 0; u < U; ++u) t[u] = _mm256_fmadd_ps(a[u], set1(1.44269504088896341f), magic);
  for (int u = 0; u < U; ++u) {
    const V fn = _mm256_sub_ps(t[u], magic);
    r[u] = _mm256_fnmadd_ps(fn, set1(-2.12194440e-4f), _mm256_fnmadd_ps(fn, set1(0.693359375f), a[u]));
  }
}

inline V exp_small_scale(V t) { return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(t), 23)); }

// exp(x) for x <= 88 (softmax's x - max, sigmoid's -|x|): exact 0 below
// -87.3, NaN stays NaN (max takes the constant first: it returns its second
// operand when either is NaN). One scale and no overflow or NaN blends: 18
// operations to exp_n's 28.
template <int U>
inline void exp_nonpos_n(V* x) {
  const V lo = set1(-87.3f);
  V a[U], t[U], r[U], er[U];
  for (int u = 0; u < U; ++u) a[u] = _mm256_max_ps(lo, x[u]);
  exp_small_reduce_n<U>(a, t, r);
  exp_poly_n<U>(r, er);
  for (int u = 0; u < U; ++u)
    x[u] = _mm256_andnot_ps(_mm256_cmp_ps(x[u], lo, _CMP_LT_OQ), _mm256_mul_ps(er[u], exp_small_scale(t[u])));
}


// log(x) for x >= 1 or NaN (a softmax row's sum of exps: >= 1 since its
// largest term is exp(0)), Cephes' logf: x = 2^e * m with m in
// [sqrt(1/2), sqrt(2)), log(m) by a degree-8 polynomial in m - 1, e * ln2
// added in two parts. Within about 1 ulp; NaN stays NaN.
inline V log_ge1_8(V x) {
  const __m256i bits = _mm256_castps_si256(x);
  __m256i e = _mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(126));
  V m = _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi32(0x007fffff)),
                                            _mm256_set1_epi32(0x3f000000)));  // [0.5, 1)
  const V small = _mm256_cmp_ps(m, _mm256_set1_ps(0.707106781186547524f), _CMP_LT_OQ);
  e = _mm256_sub_epi32(e, _mm256_and_si256(_mm256_castps_si256(small), _mm256_set1_epi32(1)));
  m = _mm256_sub_ps(_mm256_add_ps(m, _mm256_and_ps(m, small)), _mm256_set1_ps(1.0f));
  const V fe = _mm256_cvtepi32_ps(e), z = _mm256_mul_ps(m, m);
  V p = _mm256_set1_ps(7.0376836292E-2f);
  p = _mm256_fmadd_ps(p, m, _mm256_set1_ps(-1.1514610310E-1f));
  p = _mm256_fmadd_ps(p, m, _mm256_set1_ps(1.1676998740E-1f));
  p = _mm256_fmadd_ps(p, m, _mm256_set1_ps(-1.2420140846E-1f));
  p = _mm256_fmadd_ps(p, m, _mm256_set1_ps(1.4249322787E-1f));
  p = _mm256_fmadd_ps(p, m, _mm256_set1_ps(-1.6668057665E-1f));
  p = _mm256_fmadd_ps(p, m, _mm256_set1_ps(2.0000714765E-1f));
  p = _mm256_fmadd_ps(p, m, _mm256_set1_ps(-2.4999993993E-1f));
  p = _mm256_fmadd_ps(p, m, _mm256_set1_ps(3.3333331174E-1f));
  V y = _mm256_mul_ps(_mm256_mul_ps(p, m), z);
  y = _mm256_fmadd_ps(fe, _mm256_set1_ps(-2.12194440e-4f), y);
  y = _mm256_fnmadd_ps(_mm256_set1_ps(0.5f), z, y);
  V r = _mm256_add_ps(m, y);
  r = _mm256_fmadd_ps(fe, _mm256_set1_ps(0.693359375f), r);
  return _mm256_blendv_ps(r, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

inline V absv(V x) { return _mm256_andnot_ps(set1(-0.0f), x); }

// blendv reads the sign bit: e * s where x < 0 (and at -0, where it equals
// s); NaN stays NaN through the exp.
struct SigmoidN {
  template <int U>
  static void run(V* x) {
    V e[U];
    for (int u = 0; u < U; ++u) e[u] = _mm256_or_ps(x[u], set1(-0.0f));  // -|x|
    exp_nonpos_n<U>(e);
    for (int u = 0; u < U; ++u) {
      const V s = _mm256_div_ps(set1(1.0f), _mm256_add_ps(set1(1.0f), e[u]));
      x[u] = _mm256_blendv_ps(s, _mm256_mul_ps(e[u], s), x[u]);
    }
  }
};

// tanh by activation.cpp's rational (TanhRational, in Estrin's form here).
// min / max take the constant first: they return their second operand when
// either is NaN, so NaN passes the clamp.
template <int U>
inline void tanh_n(V* x) {
  using C = TanhRational;
  for (int u = 0; u < U; ++u) {
    const V xc = _mm256_max_ps(set1(-C::x_max), _mm256_min_ps(set1(C::x_max), x[u]));
    const V w = _mm256_mul_ps(xc, xc), w2 = _mm256_mul_ps(w, w);
    const V p01 = _mm256_fmadd_ps(set1(C::p1), w, set1(C::p0));
    const V p23 = _mm256_fmadd_ps(set1(C::p3), w, set1(C::p2));
    const V p = _mm256_fmadd_ps(_mm256_fmadd_ps(set1(C::p4), w2, p23), w2, p01);
    const V q01 = _mm256_fmadd_ps(set1(C::q1), w, set1(1.0f));
    const V q23 = _mm256_fmadd_ps(set1(C::q3), w, set1(C::q2));
    const V q = _mm256_fmadd_ps(_mm256_fmadd_ps(set1(C::q4), w2, q23), w2, q01);
    x[u] = _mm256_mul_ps(xc, _mm256_div_ps(p, q));
  }
}

struct TanhN {
  template <int U>
  static void run(V* x) { tanh_n<U>(x); }
};

// exp(-x^2 / 2) over U vectors (s = x * x as rounded, the caller's), as
// activation.cpp's exp_neg_half_sq: the product's rounding error
// (fmsub(x, x, s), exact) goes into the reduction as a tail, so the far tail
// keeps its precision. 0 for NaN and where -s/2 < -87.3.
template <int U>
inline void exp_neg_half_sq_n(const V* x, const V* s, V* e) {
  const V lo = set1(-87.3f);
  V a[U], ac[U], t[U], r[U], er[U];
  for (int u = 0; u < U; ++u) {
    a[u] = _mm256_mul_ps(s[u], set1(-0.5f));
    ac[u] = _mm256_max_ps(a[u], lo);  // NaN -> lo (zeroed below)
  }
  exp_small_reduce_n<U>(ac, t, r);
  for (int u = 0; u < U; ++u)  // the tail: -(x * x - s) / 2
    r[u] = _mm256_fnmadd_ps(_mm256_fmsub_ps(x[u], x[u], s[u]), set1(0.5f), r[u]);
  exp_poly_n<U>(r, er);
  for (int u = 0; u < U; ++u)
    e[u] = _mm256_andnot_ps(_mm256_cmp_ps(a[u], lo, _CMP_NGE_UQ), _mm256_mul_ps(er[u], exp_small_scale(t[u])));
}

// Phi(x) and e = exp(-x^2 / 2) over U vectors, as activation.cpp's
// normal_cdf_pdf<float>: the tail h = e * R(min(|x|, 13.5)), R the degree
// 4 / 5 rational (NormalTail's coefficients, in Estrin's form here), Phi = h
// for x < 0 and 1 - h for x >= 0. The rational and the exp are independent
// chains, so a vector's critical path is about half that of an erfc
// computed through its exp. NaN x: h = 0 (x * Phi stays NaN through x).
template <int U>
inline void normal_cdf_n(const V* x, V* cdf, V* e) {
  using C = NormalTail;
  V s[U], h[U];
  for (int u = 0; u < U; ++u) s[u] = _mm256_mul_ps(x[u], x[u]);
  exp_neg_half_sq_n<U>(x, s, e);
  for (int u = 0; u < U; ++u) {
    const V uu = _mm256_min_ps(absv(x[u]), set1(C::u_max)), u2 = _mm256_mul_ps(uu, uu);
    const V p01 = _mm256_fmadd_ps(set1(C::p1), uu, set1(C::p0));
    const V p23 = _mm256_fmadd_ps(set1(C::p3), uu, set1(C::p2));
    const V p = _mm256_fmadd_ps(_mm256_fmadd_ps(set1(C::p4), u2, p23), u2, p01);
    const V q01 = _mm256_fmadd_ps(set1(C::q1), uu, set1(1.0f));
    const V q23 = _mm256_fmadd_ps(set1(C::q3), uu, set1(C::q2));
    const V q45 = _mm256_fmadd_ps(set1(C::q5), uu, set1(C::q4));
    const V q = _mm256_fmadd_ps(_mm256_fmadd_ps(q45, u2, q23), u2, q01);
    h[u] = _mm256_mul_ps(e[u], _mm256_div_ps(p, q));
  }
  for (int u = 0; u < U; ++u)  // blendv reads the sign bit: h where x < 0 (or -0, where h = 1/2)
    cdf[u] = _mm256_blendv_ps(_mm256_sub_ps(set1(1.0f), h[u]), h[u], x[u]);
}

constexpr float kInvSqrt2Pi = 0.39894228040143267794f;
constexpr float kSqrt2OverPi = 0.79788456080286535588f;

// GELU and its backward over U vectors in place (x; g becomes dx).
struct GeluN {
  template <int U>
  static void run(V* x) {
    V c[U], e[U];
    normal_cdf_n<U>(x, c, e);
    for (int u = 0; u < U; ++u) x[u] = _mm256_mul_ps(x[u], c[u]);
  }
};

struct GeluBackwardN {
  template <int U>
  static void run(V* g, const V* x) {
    V cdf[U], e[U];
    normal_cdf_n<U>(x, cdf, e);
    for (int u = 0; u < U; ++u)
      g[u] = _mm256_mul_ps(g[u], _mm256_fmadd_ps(x[u], _mm256_mul_ps(set1(kInvSqrt2Pi), e[u]), cdf[u]));
  }
};

inline V gelu_tanh_inner(V x) {
  const V x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
  return _mm256_mul_ps(set1(kSqrt2OverPi), _mm256_fmadd_ps(set1(0.044715f), x3, x));
}

struct GeluTanhN {
  template <int U>
  static void run(V* x) {
    V th[U];
    for (int u = 0; u < U; ++u) th[u] = gelu_tanh_inner(x[u]);
    tanh_n<U>(th);
    for (int u = 0; u < U; ++u)
      x[u] = _mm256_mul_ps(_mm256_mul_ps(set1(0.5f), x[u]), _mm256_add_ps(set1(1.0f), th[u]));
  }
};

struct GeluTanhBackwardN {
  template <int U>
  static void run(V* g, const V* x) {
    V th[U];
    for (int u = 0; u < U; ++u) th[u] = gelu_tanh_inner(x[u]);
    tanh_n<U>(th);
    for (int u = 0; u < U; ++u) {
      const V dinner = _mm256_mul_ps(set1(kSqrt2OverPi),
                                     _mm256_fmadd_ps(set1(3 * 0.044715f), _mm256_mul_ps(x[u], x[u]), set1(1.0f)));
      const V a = _mm256_mul_ps(set1(0.5f), _mm256_add_ps(set1(1.0f), th[u]));
      const V b = _mm256_mul_ps(_mm256_mul_ps(set1(0.5f), x[u]),
                                _mm256_mul_ps(_mm256_fnmadd_ps(th[u], th[u], set1(1.0f)), dinner));
      g[u] = _mm256_mul_ps(g[u], _mm256_add_ps(a, b));
    }
  }
};

// y = Op(x) / d = Op(g, x) over n elements, kU vectors per step through
// Op::run<kU> (interleaved chains, see exp_poly_n), then one at a time.
constexpr int kU = 6;

template <typename Op>
void map1(const float* x, float* y, i64 n) {
  i64 i = 0;
  for (; i + 8 * kU <= n; i += 8 * kU) {
    V v[kU];
    for (int u = 0; u < kU; ++u) v[u] = _mm256_loadu_ps(x + i + 8 * u);
    Op::template run<kU>(v);
    for (int u = 0; u < kU; ++u) _mm256_storeu_ps(y + i + 8 * u, v[u]);
  }
  for (; i < n; i += 8) {
    alignas(32) float buf[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const i64 w = n - i < 8 ? n - i : 8;
    for (i64 k = 0; k < w; ++k) buf[k] = x[i + k];
    V v = _mm256_load_ps(buf);
    Op::template run<1>(&v);
    _mm256_store_ps(buf, v);
    for (i64 k = 0; k < w; ++k) y[i + k] = buf[k];
  }
}

template <typename Op>
void map2(const float* g, const float* x, float* d, i64 n) {
  i64 i = 0;
  for (; i + 8 * kU <= n; i += 8 * kU) {
    V gv[kU], xv[kU];
    for (int u = 0; u < kU; ++u) gv[u] = _mm256_loadu_ps(g + i + 8 * u), xv[u] = _mm256_loadu_ps(x + i + 8 * u);
    Op::template run<kU>(gv, xv);
    for (int u = 0; u < kU; ++u) _mm256_storeu_ps(d + i + 8 * u, gv[u]);
  }
  for (; i < n; i += 8) {
    alignas(32) float bg[8] = {0, 0, 0, 0, 0, 0, 0, 0}, bx[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const i64 w = n - i < 8 ? n - i : 8;
    for (i64 k = 0; k < w; ++k) bg[k] = g[i + k], bx[k] = x[i + k];
    V gv = _mm256_load_ps(bg);
    const V xv = _mm256_load_ps(bx);
    Op::template run<1>(&gv, &xv);
    _mm256_store_ps(bg, gv);
    for (i64 k = 0; k < w; ++k) d[i + k] = bg[k];
  }
}

// relu and its backward, 4 vectors a step (memory-bound: the portable loops
// compiled for SSE2 ran 2-3% behind PyTorch on L3-resident tensors).
// max_ps returns its second operand when either is NaN or both are zero, so
// max(0, x) keeps NaN and -0 as x < 0 ? 0 : x does.
void relu_f32(const float* x, float* y, i64 n) {
  const V z = _mm256_setzero_ps();
  i64 i = 0;
  for (; i + 32 <= n; i += 32)
    for (int u = 0; u < 4; ++u) _mm256_storeu_ps(y + i + 8 * u, _mm256_max_ps(z, _mm256_loadu_ps(x + i + 8 * u)));
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_max_ps(z, _mm256_loadu_ps(x + i)));
  for (; i < n; ++i) y[i] = x[i] < 0.0f ? 0.0f : x[i];
}

void relu_backward_f32(const float* dy, const float* x, float* dx, i64 n) {
  const V z = _mm256_setzero_ps();
  i64 i = 0;
  for (; i + 32 <= n; i += 32)
    for (int u = 0; u < 4; ++u) {
      const V le = _mm256_cmp_ps(_mm256_loadu_ps(x + i + 8 * u), z, _CMP_LE_OQ);
      _mm256_storeu_ps(dx + i + 8 * u, _mm256_andnot_ps(le, _mm256_loadu_ps(dy + i + 8 * u)));
    }
  for (; i + 8 <= n; i += 8) {
    const V le = _mm256_cmp_ps(_mm256_loadu_ps(x + i), z, _CMP_LE_OQ);
    _mm256_storeu_ps(dx + i, _mm256_andnot_ps(le, _mm256_loadu_ps(dy + i)));
  }
  for (; i < n; ++i) dx[i] = x[i] <= 0.0f ? 0.0f : dy[i];
}

inline float hsum(V v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float hmax(V v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

float max_f32(const float* x, i64 n) {
  // Four independent max chains, so consecutive maxima do not wait on each
  // other (a NaN in a or b sets the flag).
  const V ninf = set1(-std::numeric_limits<float>::infinity());
  V m0 = ninf, m1 = ninf, m2 = ninf, m3 = ninf;
  V nan = _mm256_setzero_ps();
  i64 i = 0;
  for (; i + 32 <= n; i += 32) {
    const V a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
    const V c = _mm256_loadu_ps(x + i + 16), d = _mm256_loadu_ps(x + i + 24);
    m0 = _mm256_max_ps(m0, a), m1 = _mm256_max_ps(m1, b), m2 = _mm256_max_ps(m2, c), m3 = _mm256_max_ps(m3, d);
    nan = _mm256_or_ps(nan, _mm256_or_ps(_mm256_cmp_ps(a, b, _CMP_UNORD_Q), _mm256_cmp_ps(c, d, _CMP_UNORD_Q)));
  }
  for (; i + 8 <= n; i += 8) {
    const V v = _mm256_loadu_ps(x + i);
    m0 = _mm256_max_ps(m0, v);
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  }
  float r = hmax(_mm256_max_ps(_mm256_max_ps(m0, m1), _mm256_max_ps(m2, m3)));
  bool any_nan = _mm256_movemask_ps(nan) != 0;
  for (; i < n; ++i) {
    any_nan |= x[i] != x[i];  // (no std:: templates in an ISA file: they could leak)
    r = x[i] > r ? x[i] : r;
  }
  return any_nan ? std::numeric_limits<float>::quiet_NaN() : r;
}

float sum_f32(const float* x, i64 n) {
  // Four chains: with two, the add latency (not the loads) bounded a plane
  // held in cache.
  V a = _mm256_setzero_ps(), b = _mm256_setzero_ps(), c = _mm256_setzero_ps(), d = _mm256_setzero_ps();
  i64 i = 0;
  for (; i + 32 <= n; i += 32) {
    a = _mm256_add_ps(a, _mm256_loadu_ps(x + i));
    b = _mm256_add_ps(b, _mm256_loadu_ps(x + i + 8));
    c = _mm256_add_ps(c, _mm256_loadu_ps(x + i + 16));
    d = _mm256_add_ps(d, _mm256_loadu_ps(x + i + 24));
  }
  for (; i + 8 <= n; i += 8) a = _mm256_add_ps(a, _mm256_loadu_ps(x + i));
  float s = hsum(_mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, d)));
  for (; i < n; ++i) s += x[i];
  return s;
}

float dot_f32(const float* x, const float* y, i64 n) {
  V a = _mm256_setzero_ps(), b = _mm256_setzero_ps();
  i64 i = 0;
  for (; i + 16 <= n; i += 16) {
    a = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), a);
    b = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(y + i + 8), b);
  }
  for (; i + 8 <= n; i += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), a);
  float s = hsum(_mm256_add_ps(a, b));
  for (; i < n; ++i) s += x[i] * y[i];
  return s;
}

// The general exp, for any x and m.
float exp_shift_sum_any(const float* x, float m, float* y, i64 n) {
  const V mv = set1(m);
  V acc = _mm256_setzero_ps();
  i64 i = 0;
  for (; i + 32 <= n; i += 32) {  // four exps interleaved, the sum in the same order
    V e[4];
    for (int u = 0; u < 4; ++u) e[u] = _mm256_sub_ps(_mm256_loadu_ps(x + i + 8 * u), mv);
    exp_n<4>(e);
    for (int u = 0; u < 4; ++u) {
      if (y) _mm256_storeu_ps(y + i + 8 * u, e[u]);
      acc = _mm256_add_ps(acc, e[u]);
    }
  }
  for (; i + 8 <= n; i += 8) {
    const V e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv));
    if (y) _mm256_storeu_ps(y + i, e);
    acc = _mm256_add_ps(acc, e);
  }
  float s = hsum(acc);
  if (i < n) {
    alignas(32) float buf[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (i64 k = 0; k < n - i; ++k) buf[k] = x[i + k];
    _mm256_store_ps(buf, exp8(_mm256_sub_ps(_mm256_load_ps(buf), mv)));
    for (i64 k = 0; k < n - i; ++k) {
      if (y) y[i + k] = buf[k];
      s += buf[k];
    }
  }
  return s;
}

// Softmax's forward passes the line's maximum as m, so every x - m is <= 0
// (or NaN) and the short exp_nonpos_n serves. The largest x - m is tracked
// (one max per vector; NaN does not enter it): a caller whose m is below
// some x (log-softmax's backward gets its y from the user) is redone with
// the general exp (the same summation order).
float exp_shift_sum_f32(const float* x, float m, float* y, i64 n) {
  const V mv = set1(m);
  V acc = _mm256_setzero_ps(), top = set1(-std::numeric_limits<float>::infinity());
  i64 i = 0;
  for (; i + 32 <= n; i += 32) {  // four exps interleaved, the sum in the same order
    V e[4];
    for (int u = 0; u < 4; ++u) {
      e[u] = _mm256_sub_ps(_mm256_loadu_ps(x + i + 8 * u), mv);
      top = _mm256_max_ps(e[u], top);
    }
    exp_nonpos_n<4>(e);
    for (int u = 0; u < 4; ++u) {
      if (y) _mm256_storeu_ps(y + i + 8 * u, e[u]);
      acc = _mm256_add_ps(acc, e[u]);
    }
  }
  for (; i + 8 <= n; i += 8) {
    V e = _mm256_sub_ps(_mm256_loadu_ps(x + i), mv);
    top = _mm256_max_ps(e, top);
    exp_nonpos_n<1>(&e);
    if (y) _mm256_storeu_ps(y + i, e);
    acc = _mm256_add_ps(acc, e);
  }
  alignas(32) float buf[8];
  V tail = _mm256_setzero_ps();
  if (i < n) {  // the last n - i values, padded with m (so exp(0): never taken)
    for (i64 k = 0; k < 8; ++k) buf[k] = i + k < n ? x[i + k] : m;
    tail = _mm256_sub_ps(_mm256_load_ps(buf), mv);
    top = _mm256_max_ps(tail, top);
  }
  if (hmax(top) > 0.f) return exp_shift_sum_any(x, m, y, n);
  float s = hsum(acc);
  if (i < n) {
    exp_nonpos_n<1>(&tail);
    _mm256_store_ps(buf, tail);
    for (i64 k = 0; k < n - i; ++k) {
      if (y) y[i + k] = buf[k];
      s += buf[k];
    }
  }
  return s;
}

// ---- softmax over one contiguous line ----------------------------------------

void softmax_row_f32(const float* x, float* y, i64 n, bool log) {
  const float m = max_f32(x, n);  // NaN if any NaN: the line becomes NaN
  if (log) {
    const V lse = set1(__builtin_logf(exp_shift_sum_f32(x, m, nullptr, n))), mv = set1(m);
    i64 i = 0;
    for (; i + 8 <= n; i += 8)
      _mm256_storeu_ps(y + i, _mm256_sub_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv), lse));
    const float l = _mm256_cvtss_f32(lse);
    for (; i < n; ++i) y[i] = (x[i] - m) - l;
  } else {
    const float inv = 1.f / exp_shift_sum_f32(x, m, y, n);
    const V iv = set1(inv);
    i64 i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(y + i), iv));
    for (; i < n; ++i) y[i] *= inv;
  }
}

void softmax_backward_row_f32(const float* g, const float* y, float* dx, i64 n, bool log) {
  if (log) {  // dx = g - exp(y) * sum(g)
    const float s = sum_f32(g, n);
    exp_shift_sum_f32(y, 0.f, dx, n);
    const V sv = set1(s);
    i64 i = 0;
    for (; i + 8 <= n; i += 8)
      _mm256_storeu_ps(dx + i, _mm256_sub_ps(_mm256_loadu_ps(g + i), _mm256_mul_ps(_mm256_loadu_ps(dx + i), sv)));
    for (; i < n; ++i) dx[i] = g[i] - dx[i] * s;
  } else {  // dx = y * (g - sum(g * y))
    const float s = dot_f32(g, y, n);
    const V sv = set1(s);
    i64 i = 0;
    for (; i + 8 <= n; i += 8)
      _mm256_storeu_ps(dx + i, _mm256_mul_ps(_mm256_loadu_ps(y + i), _mm256_sub_ps(_mm256_loadu_ps(g + i), sv)));
    for (; i < n; ++i) dx[i] = y[i] * (g[i] - s);
  }
}

// Even and odd elements of 16 floats: (p[0], p[2], ..., p[14]), (p[1], ..., p[15]).
inline void deinterleave16(const float* p, V* even, V* odd) {
  const V a = _mm256_loadu_ps(p), b = _mm256_loadu_ps(p + 8);
  const V e = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
  const V o = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
  *even = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xD8));
  *odd = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), 0xD8));
}

// ---- softmax over columns ---------------------------------------------------

// One block of 8 columns at x / y (row stride ld); see VMathF32::softmax_cols.
inline void softmax_cols8(const float* x, float* y, i64 dim, i64 ld, bool log) {
  V m = set1(-std::numeric_limits<float>::infinity()), nan = _mm256_setzero_ps();
  for (i64 d = 0; d < dim; ++d) {
    const V v = _mm256_loadu_ps(x + d * ld);
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    m = _mm256_max_ps(m, v);
  }
  m = _mm256_blendv_ps(m, set1(std::numeric_limits<float>::quiet_NaN()), nan);
  V s = _mm256_setzero_ps();
  i64 d = 0;
  for (; d + 4 <= dim; d += 4) {  // four exps interleaved, the sum in the same order
    V e[4];
    for (int u = 0; u < 4; ++u) e[u] = _mm256_sub_ps(_mm256_loadu_ps(x + (d + u) * ld), m);
    exp_nonpos_n<4>(e);  // x - max <= 0
    for (int u = 0; u < 4; ++u) {
      if (!log) _mm256_storeu_ps(y + (d + u) * ld, e[u]);
      s = _mm256_add_ps(s, e[u]);
    }
  }
  for (; d < dim; ++d) {
    V e = _mm256_sub_ps(_mm256_loadu_ps(x + d * ld), m);
    exp_nonpos_n<1>(&e);
    if (!log) _mm256_storeu_ps(y + d * ld, e);
    s = _mm256_add_ps(s, e);
  }
  if (log) {
    const V lse = log_ge1_8(s);
    for (i64 d = 0; d < dim; ++d)
      _mm256_storeu_ps(y + d * ld, _mm256_sub_ps(_mm256_sub_ps(_mm256_loadu_ps(x + d * ld), m), lse));
  } else {
    const V inv = _mm256_div_ps(set1(1.0f), s);
    for (i64 d = 0; d < dim; ++d) _mm256_storeu_ps(y + d * ld, _mm256_mul_ps(_mm256_loadu_ps(y + d * ld), inv));
  }
}

inline void softmax_backward_cols8(const float* g, const float* y, float* dx, i64 dim, i64 ld,
                                   bool log) {
  V s = _mm256_setzero_ps();
  for (i64 d = 0; d < dim; ++d) {
    const V gv = _mm256_loadu_ps(g + d * ld);
    s = log ? _mm256_add_ps(s, gv) : _mm256_fmadd_ps(gv, _mm256_loadu_ps(y + d * ld), s);
  }
  i64 d = 0;
  if (log)
    for (; d + 4 <= dim; d += 4) {  // four exps interleaved
      V e[4];
      for (int u = 0; u < 4; ++u) e[u] = _mm256_loadu_ps(y + (d + u) * ld);
      exp_n<4>(e);
      for (int u = 0; u < 4; ++u)
        _mm256_storeu_ps(dx + (d + u) * ld, _mm256_fnmadd_ps(e[u], s, _mm256_loadu_ps(g + (d + u) * ld)));
    }
  for (; d < dim; ++d) {
    const V gv = _mm256_loadu_ps(g + d * ld), yv = _mm256_loadu_ps(y + d * ld);
    const V r = log ? _mm256_fnmadd_ps(exp8(yv), s, gv) : _mm256_mul_ps(yv, _mm256_sub_ps(gv, s));
    _mm256_storeu_ps(dx + d * ld, r);
  }
}

// 32 columns (four vectors) at once, the same operations per column as the
// 8-wide kernels above, each step written for the four vectors in turn: with
// short lines (dim ~10) the 8-wide kernel is a chain of dependent phases
// (max, a few exps, log, store) with little independent work in each.
inline void softmax_cols32(const float* x, float* y, i64 dim, i64 ld, bool log) {
  constexpr int W = 4;
  V m[W], nan[W], s[W];
  for (int w = 0; w < W; ++w) {
    m[w] = set1(-std::numeric_limits<float>::infinity());
    nan[w] = s[w] = _mm256_setzero_ps();
  }
  for (i64 d = 0; d < dim; ++d)
    for (int w = 0; w < W; ++w) {
      const V v = _mm256_loadu_ps(x + d * ld + 8 * w);
      nan[w] = _mm256_or_ps(nan[w], _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
      m[w] = _mm256_max_ps(m[w], v);
    }
  for (int w = 0; w < W; ++w) m[w] = _mm256_blendv_ps(m[w], set1(std::numeric_limits<float>::quiet_NaN()), nan[w]);
  for (i64 d = 0; d < dim; ++d) {
    V e[W];
    for (int w = 0; w < W; ++w) e[w] = _mm256_sub_ps(_mm256_loadu_ps(x + d * ld + 8 * w), m[w]);
    exp_nonpos_n<W>(e);  // x - max <= 0
    for (int w = 0; w < W; ++w) {
      if (!log) _mm256_storeu_ps(y + d * ld + 8 * w, e[w]);
      s[w] = _mm256_add_ps(s[w], e[w]);
    }
  }
  if (log) {
    V lse[W];
    for (int w = 0; w < W; ++w) lse[w] = log_ge1_8(s[w]);
    for (i64 d = 0; d < dim; ++d)
      for (int w = 0; w < W; ++w)
        _mm256_storeu_ps(y + d * ld + 8 * w,
                         _mm256_sub_ps(_mm256_sub_ps(_mm256_loadu_ps(x + d * ld + 8 * w), m[w]), lse[w]));
  } else {
    V inv[W];
    for (int w = 0; w < W; ++w) inv[w] = _mm256_div_ps(set1(1.0f), s[w]);
    for (i64 d = 0; d < dim; ++d)
      for (int w = 0; w < W; ++w)
        _mm256_storeu_ps(y + d * ld + 8 * w, _mm256_mul_ps(_mm256_loadu_ps(y + d * ld + 8 * w), inv[w]));
  }
}

// Full blocks of 32 columns (block32), then of 8 (block8), in place; the
// last n % 8 through an 8-wide copy (padding lanes are zeros, computed and
// dropped). Each block gets the nio input pointers and the output pointer
// at the block, and the stride.
template <typename Block32, typename Block8>
void by_column_blocks(i64 dim, i64 ld, i64 n, int nio, const float* const* in, float* out,
                      Block32 block32, Block8 block8) {
  const float* at[2];
  i64 j = 0;
  for (; j + 32 <= n; j += 32) {
    for (int k = 0; k < nio; ++k) at[k] = in[k] + j;
    block32(at, out + j, ld);
  }
  for (; j + 8 <= n; j += 8) {
    for (int k = 0; k < nio; ++k) at[k] = in[k] + j;
    block8(at, out + j, ld);
  }
  if (j == n) return;
  const i64 w = n - j;
  std::vector<float> tmp(std::size_t(dim) * 8 * (nio + 1), 0.0f);
  for (int k = 0; k < nio; ++k) {
    float* t = tmp.data() + k * dim * 8;
    for (i64 d = 0; d < dim; ++d)
      for (i64 l = 0; l < w; ++l) t[d * 8 + l] = in[k][d * ld + j + l];
    at[k] = t;
  }
  float* tout = tmp.data() + nio * dim * 8;
  block8(at, tout, 8);
  for (i64 d = 0; d < dim; ++d)
    for (i64 l = 0; l < w; ++l) out[d * ld + j + l] = tout[d * 8 + l];
}

void softmax_cols_f32(const float* x, float* y, i64 dim, i64 ld, i64 n, bool log) {
  const float* in[1] = {x};
  by_column_blocks(
      dim, ld, n, 1, in, y,
      [&](const float* const* i, float* o, i64 s) { softmax_cols32(i[0], o, dim, s, log); },
      [&](const float* const* i, float* o, i64 s) { softmax_cols8(i[0], o, dim, s, log); });
}

void softmax_backward_cols_f32(const float* g, const float* y, float* dx, i64 dim, i64 ld, i64 n,
                               bool log) {
  const float* in[2] = {g, y};
  by_column_blocks(
      dim, ld, n, 2, in, dx,
      [&](const float* const* i, float* o, i64 s) {  // (a 32-wide backward measured no gain)
        for (int k = 0; k < 32; k += 8) softmax_backward_cols8(i[0] + k, i[1] + k, o + k, dim, s, log);
      },
      [&](const float* const* i, float* o, i64 s) { softmax_backward_cols8(i[0], i[1], o, dim, s, log); });
}

// ---- batch norm (see vmath.h for the order of the sums) ----------------------

// acc[0..8) += the eight float lanes of f, as doubles.
inline void add_to_doubles(V f, double* acc) {
  const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(f));
  const __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(f, 1));
  _mm256_storeu_pd(acc, _mm256_add_pd(_mm256_loadu_pd(acc), lo));
  _mm256_storeu_pd(acc + 4, _mm256_add_pd(_mm256_loadu_pd(acc + 4), hi));
}

// fold_lanes (bn_kernels.h) of the four vectors a[0..4) (lanes 0-7, 8-15,
// 16-23, 24-31), after the tail terms t[0..nt) are added into lanes 0...
inline float fold4(V* a, const float* t, i64 nt) {
  if (nt > 0) {
    float lanes[32];
    for (int j = 0; j < 4; ++j) _mm256_storeu_ps(lanes + 8 * j, a[j]);
    for (i64 i = 0; i < nt; ++i) lanes[i] += t[i];
    for (int j = 0; j < 4; ++j) a[j] = _mm256_loadu_ps(lanes + 8 * j);
  }
  const V v = _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3]));
  const __m128 w = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 u = _mm_add_ps(w, _mm_movehl_ps(w, w));  // w0 + w2, w1 + w3
  return _mm_cvtss_f32(_mm_add_ss(u, _mm_shuffle_ps(u, u, 1)));
}

void bn_row_stats_f32(const float* x, i64 n, double* st) {
  constexpr i64 kB = 1024;  // batchnorm.cpp's kStatsBlock
  for (i64 i0 = 0; i0 < n; i0 += kB) {
    const i64 nb = n - i0 < kB ? n - i0 : kB, full = nb - nb % 32, nt = nb - full;
    const float* xb = x + i0;
    V a[4], q[4];
    for (int j = 0; j < 4; ++j) a[j] = _mm256_setzero_ps();
    for (i64 i = 0; i < full; i += 32)
      for (int j = 0; j < 4; ++j) a[j] = _mm256_add_ps(a[j], _mm256_loadu_ps(xb + i + 8 * j));
    const float mb = fold4(a, xb + full, nt) / float(nb);
    const V mv = set1(mb);
    for (int j = 0; j < 4; ++j) a[j] = q[j] = _mm256_setzero_ps();
    for (i64 i = 0; i < full; i += 32)
      for (int j = 0; j < 4; ++j) {
        const V d = _mm256_sub_ps(_mm256_loadu_ps(xb + i + 8 * j), mv);
        a[j] = _mm256_add_ps(a[j], d);
        q[j] = _mm256_add_ps(q[j], _mm256_mul_ps(d, d));
      }
    float td[32], tq[32];
    for (i64 i = 0; i < nt; ++i) td[i] = xb[full + i] - mb, tq[i] = td[i] * td[i];
    const float sb = fold4(a, td, nt), qb = fold4(q, tq, nt);
    merge_block(st, xb, nb, mb, sb, qb);
  }
}

void bn_col_stats8_f32(const float* x, i64 CS, i64 n0, i64 n1, double* k, double* s1, double* s2) {
  const float nb = float(n1 - n0), rnb = 1.0f / nb;
  V a = _mm256_setzero_ps();
  for (i64 n = n0; n < n1; ++n) a = _mm256_add_ps(a, _mm256_loadu_ps(x + n * CS));
  const V m = _mm256_mul_ps(a, set1(rnb));
  V sd = _mm256_setzero_ps(), q = _mm256_setzero_ps();
  for (i64 n = n0; n < n1; ++n) {
    const V d = _mm256_sub_ps(_mm256_loadu_ps(x + n * CS), m);
    sd = _mm256_add_ps(sd, d);
    q = _mm256_add_ps(q, _mm256_mul_ps(d, d));
  }
  const V c = _mm256_add_ps(_mm256_add_ps(_mm256_sub_ps(m, m), _mm256_sub_ps(sd, sd)), _mm256_sub_ps(q, q));
  const bool first = n0 == 0;
  const __m256d dn = _mm256_set1_pd(double(nb));
  if (_mm256_movemask_ps(_mm256_cmp_ps(c, c, _CMP_UNORD_Q)) != 0) {  // some sum not finite
    alignas(32) float mf[8], sf[8], qf[8];
    _mm256_store_ps(mf, m);
    _mm256_store_ps(sf, sd);
    _mm256_store_ps(qf, q);
    for (int l = 0; l < 8; ++l) {
      double md = mf[l], sdd = sf[l], qd = qf[l];
      if (!(__builtin_isfinite(mf[l]) && __builtin_isfinite(sf[l]) && __builtin_isfinite(qf[l])))
        block_stats_double(x + n0 * CS + l, CS, n1 - n0, &md, &sdd, &qd);
      column_update(md, sdd, qd, double(nb), first, &k[l], &s1[l], &s2[l]);
    }
    return;
  }
  // column_update on four columns at a time (all finite here)
  const __m128 halves[2] = {_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1)};
  const __m128 sdh[2] = {_mm256_castps256_ps128(sd), _mm256_extractf128_ps(sd, 1)};
  const __m128 qh[2] = {_mm256_castps256_ps128(q), _mm256_extractf128_ps(q, 1)};
  for (int h = 0; h < 2; ++h) {
    const __m256d md = _mm256_cvtps_pd(halves[h]), sdd = _mm256_cvtps_pd(sdh[h]), qd = _mm256_cvtps_pd(qh[h]);
    __m256d kv, a1, a2;
    if (first) {
      kv = md;
      _mm256_storeu_pd(k + 4 * h, kv);
      a1 = a2 = _mm256_setzero_pd();
    } else {
      kv = _mm256_loadu_pd(k + 4 * h);
      a1 = _mm256_loadu_pd(s1 + 4 * h);
      a2 = _mm256_loadu_pd(s2 + 4 * h);
    }
    const __m256d d = _mm256_sub_pd(md, kv);
    a1 = _mm256_add_pd(a1, _mm256_add_pd(_mm256_mul_pd(dn, d), sdd));
    const __m256d t = _mm256_add_pd(_mm256_mul_pd(_mm256_set1_pd(2.0), sdd), _mm256_mul_pd(dn, d));
    a2 = _mm256_add_pd(a2, _mm256_add_pd(qd, _mm256_mul_pd(d, t)));
    _mm256_storeu_pd(s1 + 4 * h, a1);
    _mm256_storeu_pd(s2 + 4 * h, a2);
  }
}

void bn_grad_sums_f32(const float* g, const float* x, i64 n, float m, double* a1, double* a2) {
  const V mv = set1(m);
  const i64 full = n - n % 32;
  i64 i = 0;
  while (i < full) {
    V a[4], b[4];
    for (int j = 0; j < 4; ++j) a[j] = b[j] = _mm256_setzero_ps();
    const i64 i0 = i;
    for (const i64 end = full < i + 256 ? full : i + 256; i < end; i += 32)
      for (int j = 0; j < 4; ++j) {
        const V gv = _mm256_loadu_ps(g + i + 8 * j);
        a[j] = _mm256_add_ps(a[j], gv);
        b[j] = _mm256_add_ps(b[j], _mm256_mul_ps(gv, _mm256_sub_ps(_mm256_loadu_ps(x + i + 8 * j), mv)));
      }
    V c = _mm256_setzero_ps();  // v - v: 0 if finite, else NaN
    for (int j = 0; j < 4; ++j)
      c = _mm256_add_ps(c, _mm256_add_ps(_mm256_sub_ps(a[j], a[j]), _mm256_sub_ps(b[j], b[j])));
    if (_mm256_movemask_ps(_mm256_cmp_ps(c, c, _CMP_UNORD_Q)) == 0)
      for (int j = 0; j < 4; ++j) add_to_doubles(a[j], a1 + 8 * j), add_to_doubles(b[j], a2 + 8 * j);
    else
      grad_block_double(g + i0, x + i0, i - i0, m, a1, a2);
  }
  for (int l = 0; i < n; ++i, ++l) {
    a1[l] += double(g[i]);
    a2[l] += double(g[i]) * (double(x[i]) - double(m));
  }
}

void bn_affine_f32(const float* x, i64 n, float s, float t, float* y) {
  const V sv = set1(s), tv = set1(t);
  i64 i = 0;
  for (; i + 16 <= n; i += 16) {
    const V a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
    _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_mul_ps(a, sv), tv));
    _mm256_storeu_ps(y + i + 8, _mm256_add_ps(_mm256_mul_ps(b, sv), tv));
  }
  for (; i < n; ++i) y[i] = x[i] * s + t;
}

void bn_dx_f32(const float* g, const float* x, i64 n, float k, float a, float m, float bc, float* d) {
  const V kv = set1(k), av = set1(a), mv = set1(m), bv = set1(bc);
  i64 i = 0;
  for (; i + 8 <= n; i += 8) {
    const V u = _mm256_sub_ps(_mm256_loadu_ps(g + i), av);
    const V w = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv), bv);
    _mm256_storeu_ps(d + i, _mm256_mul_ps(kv, _mm256_sub_ps(u, w)));
  }
  for (; i < n; ++i) d[i] = k * (g[i] - a - (x[i] - m) * bc);
}

void every_other_f32(const float* src, i64 n, float* dst) {
  i64 i = 0;
  for (; i + 8 <= n && 2 * i + 16 <= 2 * n - 1; i += 8) {  // 16 loads stay within src[0, 2n - 1)
    V e, o;
    deinterleave16(src + 2 * i, &e, &o);
    _mm256_storeu_ps(dst + i, e);
  }
  for (; i < n; ++i) dst[i] = src[2 * i];
}

// 8x8 tiles through registers, the edges element by element.
void transpose_f32(const float* src, i64 rows, i64 cols, i64 lds, float* dst, i64 ldd) {
  i64 r = 0;
  for (; r + 8 <= rows; r += 8) {
    i64 c = 0;
    for (; c + 8 <= cols; c += 8) {
      V t[8];
      for (int k = 0; k < 8; ++k) t[k] = _mm256_loadu_ps(src + (r + k) * lds + c);
      transpose8(t);
      for (int k = 0; k < 8; ++k) _mm256_storeu_ps(dst + (c + k) * ldd + r, t[k]);
    }
    for (; c < cols; ++c)
      for (int k = 0; k < 8; ++k) dst[c * ldd + r + k] = src[(r + k) * lds + c];
  }
  for (; r < rows; ++r)
    for (i64 c = 0; c < cols; ++c) dst[c * ldd + r] = src[r * lds + c];
}

void max_pool2x2_row_f32(const float* r0, const float* r1, i64 n, float* y, std::int64_t* idx,
                         i64 base, i64 W) {
  i64 o = 0;
  const __m256i steps = _mm256_setr_epi64x(0, 2, 4, 6);
  for (; o + 8 <= n; o += 8) {
    V a, b, c, d;
    deinterleave16(r0 + 2 * o, &a, &b);
    deinterleave16(r1 + 2 * o, &c, &d);
    // t = v > m or v is NaN: take v (the scalar rule, lane by lane)
    V m = a, k = _mm256_setzero_ps();
    V t = _mm256_or_ps(_mm256_cmp_ps(b, m, _CMP_GT_OQ), _mm256_cmp_ps(b, b, _CMP_UNORD_Q));
    m = _mm256_blendv_ps(m, b, t);
    k = _mm256_blendv_ps(k, _mm256_castsi256_ps(_mm256_set1_epi32(1)), t);
    t = _mm256_or_ps(_mm256_cmp_ps(c, m, _CMP_GT_OQ), _mm256_cmp_ps(c, c, _CMP_UNORD_Q));
    m = _mm256_blendv_ps(m, c, t);
    k = _mm256_blendv_ps(k, _mm256_castsi256_ps(_mm256_set1_epi32((int)W)), t);
    t = _mm256_or_ps(_mm256_cmp_ps(d, m, _CMP_GT_OQ), _mm256_cmp_ps(d, d, _CMP_UNORD_Q));
    m = _mm256_blendv_ps(m, d, t);
    k = _mm256_blendv_ps(k, _mm256_castsi256_ps(_mm256_set1_epi32((int)W + 1)), t);
    _mm256_storeu_ps(y + o, m);
    if (idx) {
      const __m256i ki = _mm256_castps_si256(k);
      const __m256i b0 = _mm256_add_epi64(_mm256_set1_epi64x(base + 2 * o), steps);
      const __m256i b1 = _mm256_add_epi64(b0, _mm256_set1_epi64x(8));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(idx + o),
                          _mm256_add_epi64(b0, _mm256_cvtepi32_epi64(_mm256_castsi256_si128(ki))));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(idx + o + 4),
                          _mm256_add_epi64(b1, _mm256_cvtepi32_epi64(_mm256_extracti128_si256(ki, 1))));
    }
  }
  for (; o < n; ++o) {
    const float v[4] = {r0[2 * o], r0[2 * o + 1], r1[2 * o], r1[2 * o + 1]};
    const i64 off[4] = {0, 1, W, W + 1};
    float m = v[0];
    i64 k = 0;
    for (int j = 1; j < 4; ++j)
      if (v[j] > m || v[j] != v[j]) m = v[j], k = off[j];
    y[o] = m;
    if (idx) idx[o] = base + 2 * o + k;
  }
}

}  // namespace

const VMathF32 vmath_f32_avx2 = {
    "vmath_f32__avx2",
    map1<SigmoidN>,
    map1<TanhN>,
    map1<GeluN>,
    map2<GeluBackwardN>,
    map1<GeluTanhN>,
    map2<GeluTanhBackwardN>,
    relu_f32,
    relu_backward_f32,
    max_f32,
    sum_f32,
    exp_shift_sum_f32,
    softmax_row_f32,
    softmax_backward_row_f32,
    softmax_cols_f32,
    softmax_backward_cols_f32,
    bn_row_stats_f32,
    bn_col_stats8_f32,
    bn_grad_sums_f32,
    bn_affine_f32,
    bn_dx_f32,
    every_other_f32,
    transpose_f32,
    max_pool2x2_row_f32,
};

}  // namespace pyconv
