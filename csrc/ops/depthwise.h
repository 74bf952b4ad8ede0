// depthwise.h - direct convolution for groups == in_channels (depthwise,
// any channel multiplier OC/C). Each output plane depends on one input
// plane, so im2col + GEMM would run with m = multiplier and k = KH*KW: all
// overhead. These loops are sliding-window axpys along the output rows.
// Same layouts and contracts as conv2d.h (outputs are overwritten).
#pragma once
#include "common.h"

namespace pyconv {

inline bool is_depthwise(const Conv2dParams& p) { return p.G == p.C && p.G > 1; }

// x [N][C][H][W], w [OC][1][KH][KW], b [OC] or null -> y [N][OC][OH][OW]
template <typename T>
void depthwise_forward(const Conv2dParams& p, const T* x, const T* w, const T* b, T* y);
// dy, w -> dx [N][C][H][W]
template <typename T>
void depthwise_backward_data(const Conv2dParams& p, const T* dy, const T* w, T* dx);
// dy, x -> dw [OC][1][KH][KW] (summed in a fixed order per output channel)
template <typename T>
void depthwise_backward_weight(const Conv2dParams& p, const T* dy, const T* x, T* dw);

// SIMD float32 kernels behind the three ops. The ops lay each plane out in a
// zero-padded buffer (stride phases split apart, or dy dilated for
// backward-data) so that every tap t is a plain shifted slice src + off[t]
// with unit column stride; the kernels then run branch-free.
// Buffers hold at least kDwSlack floats past the last element a row reads.
constexpr i64 kDwSlack = 16;
struct DepthwiseF32 {
  const char* name;
  // out[r*ldo + c] = base + sum_{t < taps} w[t] * src[off[t] + r*pitch + c],
  // r < R, c < n; base = bias, or out's own value when accumulate. The taps
  // are added in order t = 0, 1, ... to one accumulator per output.
  void (*rows)(const float* src, i64 pitch, const i64* off, const float* w, int taps,
               float bias, bool accumulate, float* out, i64 ldo, i64 R, i64 n);
  // g[t] += sum_{r < R, c < n} dy[r*ldd + c] * src[off[t] + r*pitch + c], in
  // float over at most 8 rows at a time, then folded into double (fixed order).
  void (*wgrad)(const float* src, i64 pitch, const i64* off, int taps, const float* dy, i64 ldd,
                i64 R, i64 n, double* g);
  // The same over one flat index: out[j] = base + sum_t w[t] * src[off[t] + j]
  // for j < L rounded up to 8 (out and src must have room for that).
  void (*flat)(const float* src, const i64* off, const float* w, int taps, float bias,
               bool accumulate, float* out, i64 L);
  // g[t] += sum_{j < L} d[j] * src[off[t] + j], L a multiple of 8; float
  // partial sums over 1024 elements at a time, folded into double.
  void (*flat_wgrad)(const float* src, const i64* off, int taps, const float* d, i64 L,
                     double* g);
  // dst[r*dp + c] = src[r*sp + c] for r < R, c < n. With check, returns
  // false if any copied value is inf or NaN (else true).
  bool (*copy2d)(const float* src, i64 sp, float* dst, i64 dp, i64 R, i64 n, bool check);
  // even[c] = src[2c], odd[c] = src[2c + 1] for the n elements of src; the
  // same check as copy2d.
  bool (*split2)(const float* src, i64 n, float* even, float* odd, bool check);
};

// The table for the active ISA, or nullptr when it is 'ref' (or the CPU has
// no AVX2+FMA): the ops then run their portable loops.
const DepthwiseF32* depthwise_f32();

#if defined(PYCONV_X86)
extern const DepthwiseF32 depthwise_f32_avx2;
#endif

}  // namespace pyconv
