// pool2d.h - max / average / adaptive pooling over NCHW planes, forward and
// backward, with PyTorch's semantics (window placement, ceil_mode, padding,
// count_include_pad, divisor_override, tie and NaN rules).
//
//   x  [N*C][H][W]      y  [N*C][OH][OW]      idx [N*C][OH][OW] (int64, iy*W + ix)
// Backward kernels overwrite dx. Parallel over planes: each plane is owned by
// one thread, so results do not depend on the thread count.
#pragma once
#include "common.h"

namespace pyconv {

// Max pooling. Ties keep the first position (row-major window order); a NaN
// wins over any number (PyTorch's CPU rule). idx may be null.
template <typename T>
void max_pool2d_forward(const Pool2dParams& p, const T* x, T* y, std::int64_t* idx);

// dx := 0; dx[plane][idx] += dy. Returns false (leaving dx unspecified) if an
// index is outside [0, H*W).
template <typename T>
bool max_pool2d_backward(const Pool2dParams& p, const T* dy, const std::int64_t* idx, T* dx);

// Average pooling (no dilation). divisor_override <= 0 means none.
template <typename T>
void avg_pool2d_forward(const Pool2dParams& p, bool count_include_pad, i64 divisor_override,
                        const T* x, T* y);
template <typename T>
void avg_pool2d_backward(const Pool2dParams& p, bool count_include_pad, i64 divisor_override,
                         const T* dy, T* dx);

// Adaptive pooling: output bin i covers [floor(i*H/OH), ceil((i+1)*H/OH)).
// (Only N, C, H, W, OH, OW of p are used.)
template <typename T>
void adaptive_avg_pool2d_forward(const Pool2dParams& p, const T* x, T* y);
template <typename T>
void adaptive_avg_pool2d_backward(const Pool2dParams& p, const T* dy, T* dx);
template <typename T>
void adaptive_max_pool2d_forward(const Pool2dParams& p, const T* x, T* y, std::int64_t* idx);

}  // namespace pyconv
