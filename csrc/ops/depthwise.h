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

}  // namespace pyconv
