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

#if defined(PYCONV_X86)
// Channel-blocked 3x3 stride-1 kernels (depthwise_c8_avx2.cpp; call only
// with AVX2+FMA present). nc <= 8 channels: plane ch of the source at
// src + ch * ps (sh x sw), of the output at dst + ch * ds (OH x OW). The
// source is laid out pixel-major in buf, zero-bordered, source row 0 /
// column 0 at buffer row oy0 / column ox0 (either may be negative), and
//   dst[ch][oy][ox] = bias[ch] + sum_{ky, kx} w[(ky*3 + kx)*8 + ch] * buf[oy + ky][ox + kx][ch]
// with the taps added in (ky, kx) order. buf: dw3c8_buffer(OH, OW, sh, sw) floats.
void dw3c8_conv_avx2(const float* src, i64 ps, int nc, i64 sh, i64 sw, i64 oy0, i64 ox0,
                     const float* w, const float* bias, float* dst, i64 ds, i64 OH, i64 OW,
                     float* buf);
// g[(ky*3 + kx)*8 + ch] += sum_{oy, ox} dy[ch][oy][ox] * x[ch][oy + ky - PT][ox + kx - PL]
// (zero outside x), summed in float over the image, then added in double.
// x planes at x + ch * ps (H x W), dy planes at dy + ch * ds (OH x OW).
void dw3c8_wgrad_avx2(const float* x, i64 ps, int nc, i64 H, i64 W, i64 PT, i64 PL,
                      const float* dy, i64 ds, i64 OH, i64 OW, float* buf, double* g);
#endif
// (x: H x W for backward-weight, which lays out x and then dy.)
inline i64 dw3c8_buffer(i64 OH, i64 OW, i64 sh, i64 sw) {
  return ((OH + 2) * (OW + 2) + (OH * OW > sh * sw ? OH * OW : sh * sw)) * 8 + 64;
}

}  // namespace pyconv
