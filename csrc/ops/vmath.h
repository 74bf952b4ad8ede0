// vmath.h - SIMD float32 kernels for the transcendental element-wise ops and
// the row reductions of softmax / cross-entropy, one table per ISA.
//
// All arrays are contiguous; n >= 0; outputs may not alias inputs unless
// noted. The maths is the same as the portable code in activation.cpp
// (Cephes-style exp, the rationals below, the same polynomials and limits:
// exact 0 / 1 / inf limits, NaN propagated), evaluated 8 lanes at a time
// with FMA, so results agree with it to a few ulp. Each call is serial: callers split work
// between threads, so results do not depend on the thread count.
#pragma once
#include <cstdint>

#include "common.h"

namespace pyconv {

// The upper tail of the standard normal, 1 - Phi(u) for u >= 0, as
// exp(-u^2/2) * R(u): R(u) = erfcx(u / sqrt 2) / 2 (the Mills ratio over
// sqrt(2 pi)) by a rational minimax fit P / Q of degree 4 / 5 on
// [0, 13.25] (relative error 6e-9 in exact arithmetic; every coefficient
// positive, so nothing cancels in float). GELU's callers cap u at 13.5
// (the tail is 0 in float beyond 13.2), so P / Q stays finite.
struct NormalTail {
  static constexpr float p0 = 0.5000000028630327f, p1 = 0.4368165050663163f, p2 = 0.18216483186784585f,
                         p3 = 0.04027917293468179f, p4 = 0.004065491291644019f;
  static constexpr float q1 = 1.671517979012359f, q2 = 1.1980034224571636f, q3 = 0.4666499326971025f,
                         q4 = 0.1009720175892993f, q5 = 0.010190538354950943f;
  static constexpr float u_max = 13.5f;
};

// tanh(x) = x * P(x^2) / Q(x^2) for x clamped to [-9.1, 9.1] (beyond, tanh
// rounds to +-1 in float): a rational minimax fit of degree 4 / 4 in x^2
// for tanh(x) / x (relative error 2.6e-8 in exact arithmetic; every
// coefficient positive). One division and no exp: 2.7x the speed of
// Cephes' polynomial-or-exp form it replaced, at up to about 6 ulp (float
// rounding in P, Q and the quotient) where that form had 1.3; exactly +-1
// from |x| = 9.1 (one ulp short of it on (9.01, 9.1)).
struct TanhRational {
  static constexpr float p0 = 0.9999999747995015f, p1 = 0.13372474675002f, p2 = 0.0034855132045641937f,
                         p3 = 2.0446847760043074e-05f, p4 = 1.3136936621860329e-08f;
  static constexpr float q1 = 0.46705786464606447f, q2 = 0.025838439474384196f,
                         q3 = 0.0003269308532025054f, q4 = 7.685935397641619e-07f;
  static constexpr float x_max = 9.1f;
};

struct VMathF32 {
  const char* name;
  void (*sigmoid)(const float* x, float* y, i64 n);
  void (*tanh)(const float* x, float* y, i64 n);
  void (*gelu)(const float* x, float* y, i64 n);                     // x * Phi(x)
  void (*gelu_backward)(const float* dy, const float* x, float* dx, i64 n);
  void (*gelu_tanh)(const float* x, float* y, i64 n);
  void (*gelu_tanh_backward)(const float* dy, const float* x, float* dx, i64 n);
  // relu: y = x < 0 ? 0 : x (NaN and -0 kept); backward dx = x <= 0 ? 0 : dy
  // (NaN x passes dy), as the portable loops.
  void (*relu)(const float* x, float* y, i64 n);
  void (*relu_backward)(const float* dy, const float* x, float* dx, i64 n);
  // max(x[0..n)), NaN if any element is NaN; -inf for n == 0.
  float (*max)(const float* x, i64 n);
  // sum(x).
  float (*sum)(const float* x, i64 n);
  // y[i] = exp(x[i] - m) (y may be null, or equal to x when m >= every
  // x[i]); returns the sum of those values. Fastest when m >= every x[i]
  // (the line's maximum: softmax's forward); any m is right.
  float (*exp_shift_sum)(const float* x, float m, float* y, i64 n);
  // Softmax (log = false) or log-softmax of one contiguous line of n >= 1
  // values (y may equal x): m = max (NaN if any NaN), then y = exp(x - m) /
  // sum, or y = (x - m) - log(sum) (logf). And its backward from the
  // forward output y: log: dx = g - exp(y) * sum(g); else dx = y * (g -
  // sum(g * y)). The same operations as the portable row loops.
  void (*softmax_row)(const float* x, float* y, i64 n, bool log);
  void (*softmax_backward_row)(const float* g, const float* y, float* dx, i64 n, bool log);
  // Softmax (log = false) or log-softmax along d of n columns laid out
  // x[d*ld + j] (d < dim, j < n); y alike (y may equal x). 8 columns per
  // vector: for short rows (transposed by the caller) and for softmax over
  // a non-last axis, where the columns are contiguous. Same maths as the
  // row kernels: max (NaN if any NaN), exp(x - max), sum, scale or log
  // (the log of the sums by a vector logf here, within about 1 ulp of the
  // row kernels' std::log).
  void (*softmax_cols)(const float* x, float* y, i64 dim, i64 ld, i64 n, bool log);
  // Its backward from the forward output y: log: dx = g - exp(y) * sum(g);
  // else dx = y * (g - sum(g * y)). Same layout.
  void (*softmax_backward_cols)(const float* g, const float* y, float* dx, i64 dim, i64 ld, i64 n,
                                bool log);
  // Batch norm, over one row, in batchnorm.cpp's portable order (so the
  // results are the same bits). Statistics: blocks of 1024 values; in each,
  // the sum, then the sums of the deviations from the block's mean and of
  // their squares (float, 32 lanes: lane l = i mod 32 over the full groups
  // of 32, the rest into lanes 0..; folded by fold_lanes), merged into st
  // (merge_stats; both in bn_kernels.h). Gradient sums into 32 double partial
  // sums: over the full groups of 32, lane l sums its terms in float over
  // blocks of up to 8 groups, then adds that to acc[l] (a block whose float
  // sums overflow is redone in double: grad_block_double); the last n mod 32
  // terms go into acc[0..] one by one, in double; g[i] into a1 and
  // g[i] * (x[i] - m) into a2. The row maps, as the portable ones (no fused
  // multiply-add): y = x * s + t, and d = k * (g - a - (x - m) * bc).
  void (*bn_row_stats)(const float* x, i64 n, double* st);
  // The column walk's statistics for 8 adjacent columns at x (rows CS
  // apart) over rows [n0, n1) (at most 8), into their k / s1 / s2:
  // batchnorm.cpp's column_strip<8>, the same operations per column.
  void (*bn_col_stats8)(const float* x, i64 CS, i64 n0, i64 n1, double* k, double* s1, double* s2);
  void (*bn_grad_sums)(const float* g, const float* x, i64 n, float m, double* a1, double* a2);
  void (*bn_affine)(const float* x, i64 n, float s, float t, float* y);
  void (*bn_dx)(const float* g, const float* x, i64 n, float k, float a, float m, float bc, float* d);
  // dst[i] = src[2 i] for i < n (reads src[0 .. 2n - 2]).
  void (*every_other)(const float* src, i64 n, float* dst);
  // dst[c * ldd + r] = src[r * lds + c] for r < rows, c < cols (no overlap).
  void (*transpose)(const float* src, i64 rows, i64 cols, i64 lds, float* dst, i64 ldd);
  // One output row of 2x2 stride-2 max pooling: y[o] = max of r0[2o],
  // r0[2o+1], r1[2o], r1[2o+1] (first maximum wins, a NaN wins), o < n;
  // idx (nullable) gets base + 2o + {0, 1, W, W + 1} for the winning tap.
  void (*max_pool2x2_row)(const float* r0, const float* r1, i64 n, float* y, std::int64_t* idx,
                          i64 base, i64 W);
};

// The table for the active ISA, or nullptr when it is 'ref' (or the CPU has
// no AVX2+FMA): callers then run their portable loops.
const VMathF32* vmath_f32();

#if defined(PYCONV_X86)
extern const VMathF32 vmath_f32_avx2;
#endif

}  // namespace pyconv
