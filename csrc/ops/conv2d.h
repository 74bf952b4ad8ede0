// conv2d.h - 2-D convolution (NCHW, PyTorch semantics) as im2col + GEMM.
//
//   x  [N][C][H][W]           w  [OC][C/G][KH][KW]      b [OC] (nullable)
//   y  [N][OC][OH][OW]
//   y[n][oc][oy][ox] = b[oc] + sum_{c,ky,kx} w[oc][c][ky][kx] *
//                      x[n][g*C/G + c][oy*SH - PT + ky*DH][ox*SW - PL + kx*DW]
// Kernels overwrite their outputs (dx, dw, db are written, not accumulated).
// All pointers are C-contiguous; shapes are validated by the caller.
#pragma once
#include <atomic>

#include "common.h"

namespace pyconv {

template <typename T>
void conv2d_forward(const Conv2dParams& p, const T* x, const T* w, const T* b, T* y);

// Forward convolutions of at most this many multiply-adds (N*OC*OH*OW*K)
// run as direct loops: below it the GEMM's setup (packing, blocking, tile
// bookkeeping) costs more than the arithmetic. 0 sends everything with work
// through the GEMM paths (the tests use it to keep those covered on tiny
// shapes; an empty batch still takes the direct loops, which do nothing).
inline std::atomic<long long> g_conv_direct_max{512};

// dy [N][OC][OH][OW], w -> dx [N][C][H][W]
template <typename T>
void conv2d_backward_data(const Conv2dParams& p, const T* dy, const T* w, T* dx);

// dy, x -> dw [OC][C/G][KH][KW], db [OC] (db nullable)
template <typename T>
void conv2d_backward_weight(const Conv2dParams& p, const T* dy, const T* x, T* dw, T* db);

// db [OC] = sum over n, oy, ox of dy (accumulated in double, fixed order).
template <typename T>
void conv2d_backward_bias(const Conv2dParams& p, const T* dy, T* db);

}  // namespace pyconv
