// pad.h - padding of the last two axes with PyTorch's modes, and its adjoint.
//   x [planes][H][W] -> y [planes][H+top+bottom][W+left+right]
// Backward adds every output gradient into the input element it was copied
// from (constant padding drops it); it overwrites dx.
#pragma once
#include "common.h"

namespace pyconv {

enum class PadMode { constant = 0, reflect = 1, replicate = 2, circular = 3 };

struct PadParams {
  i64 planes, H, W;
  i64 left, right, top, bottom;  // non-negative; validated by the caller for the mode
  PadMode mode;
  i64 OH() const { return H + top + bottom; }
  i64 OW() const { return W + left + right; }
};

template <typename T>
void pad_forward(const PadParams& p, T value, const T* x, T* y);
template <typename T>
void pad_backward(const PadParams& p, const T* dy, T* dx);

}  // namespace pyconv
