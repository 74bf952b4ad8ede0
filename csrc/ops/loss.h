// loss.h - cross-entropy (softmax + log-likelihood fused in one stable pass),
// negative log-likelihood and mean-squared error, forward and backward.
//
//   logits x [N][C]; class targets t [N] (int64, validated by the caller) or
//   probability targets q [N][C]; label smoothing eps in [0, 1].
// Reductions: kNone writes one value per row (per element for mse), kSum and
// kMean write out[0]; sums run in double in a fixed order.
// Backward: g is grad_output, read as g[i * g_stride] (g_stride 0: a scalar),
// times `scale` (1/N for mean); dx is overwritten.
#pragma once
#include <cstdint>

#include "common.h"

namespace pyconv {

enum Reduction : int { kNone = 0, kSum = 1, kMean = 2 };

template <typename T>
void cross_entropy_forward(const T* x, i64 N, i64 C, const std::int64_t* t, const T* q, T eps,
                           int reduction, T* out);
template <typename T>
void cross_entropy_backward(const T* x, i64 N, i64 C, const std::int64_t* t, const T* q, T eps,
                            const T* g, i64 g_stride, T scale, T* dx);

// x holds log-probabilities [N][C].
template <typename T>
void nll_loss_forward(const T* x, i64 N, i64 C, const std::int64_t* t, int reduction, T* out);
template <typename T>
void nll_loss_backward(i64 N, i64 C, const std::int64_t* t, const T* g, i64 g_stride, T scale,
                       T* dx);

// x, target: [n] elements.
template <typename T>
void mse_loss_forward(const T* x, const T* target, i64 n, int reduction, T* out);
template <typename T>
void mse_loss_backward(const T* x, const T* target, i64 n, const T* g, i64 g_stride, T scale,
                       T* dx);

}  // namespace pyconv
