// activation.h - element-wise activations and softmax-type reductions,
// forward and backward, on flat arrays (any shape), PyTorch semantics.
//
// Element-wise:  x, y, dy, dx: [n]. Backward kernels overwrite dx and take
// what PyTorch's take: relu / leaky_relu / elu / gelu the forward INPUT,
// sigmoid / tanh the forward OUTPUT.
// Along an axis: arrays are viewed as [outer][dim][inner]; the op reduces over
// dim independently for each (outer, inner).
#pragma once
#include <functional>

#include "common.h"

namespace pyconv {

enum class Act { relu, leaky_relu, elu, sigmoid, tanh, gelu, gelu_tanh };

// y = act(x); alpha is the negative slope (leaky_relu) or alpha (elu).
template <typename T>
void activation_forward(Act act, T alpha, const T* x, T* y, i64 n);
// dx = dy * act'(...); `saved` is the input or the output as documented above.
template <typename T>
void activation_backward(Act act, T alpha, const T* dy, const T* saved, T* dx, i64 n);

// y = softmax(x) or log_softmax(x) over dim (max subtracted: stable).
template <typename T>
void softmax_forward(bool log, const T* x, T* y, i64 outer, i64 dim, i64 inner);
// Lines shorter than this (float32, last axis) run 8 lines per vector.
constexpr i64 kShortSoftmaxLine = 32;
// float32 log-softmax of contiguous lines shorter than kShortSoftmaxLine
// (SIMD table active), handed over in transposed blocks instead of written
// out: f(l0, n, t, ld) gets lines [l0, l0 + n) as t[d * ld + l]. Blocks run
// on several threads at once (f may write only its lines' own outputs).
// Returns false, calling nothing, if those kernels do not apply.
bool log_softmax_line_blocks(const float* x, i64 lines, i64 dim,
                             const std::function<void(i64, i64, const float*, i64)>& f);
// softmax:     dx = y * (dy - sum(dy * y))
// log_softmax: dx = dy - exp(y) * sum(dy)
template <typename T>
void softmax_backward(bool log, const T* dy, const T* y, T* dx, i64 outer, i64 dim, i64 inner);

// Maxout: x [outer][dim][inner] -> y [outer][dim/pieces][inner]; output
// channel j is the max of input channels j*pieces .. j*pieces+pieces-1 (first
// maximum wins; NaN wins). Backward routes dy to that piece.
template <typename T>
void maxout_forward(const T* x, T* y, i64 outer, i64 dim, i64 inner, i64 pieces);
template <typename T>
void maxout_backward(const T* dy, const T* x, T* dx, i64 outer, i64 dim, i64 inner, i64 pieces);

}  // namespace pyconv
