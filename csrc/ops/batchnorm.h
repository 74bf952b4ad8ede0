// batchnorm.h - batch normalisation over x viewed as [N][C][S] (S = spatial
// size, 1 for (N, C) input). Statistics are per channel over N and S.
#pragma once
#include "common.h"

namespace pyconv {

// Training-mode forward: mean[c] and biased var[c] of x (one pass of
// shifted sums in double, fixed order), invstd[c] = 1 / sqrt(var[c] + eps),
// and y as batch_norm_normalize with them.
template <typename T>
void batch_norm_train_forward(const T* x, i64 N, i64 C, i64 S, T eps, const T* w, const T* b, T* y,
                              T* mean, T* var, T* invstd);

// y = (x - mean[c]) * invstd[c] * w[c] + b[c]   (w, b nullable: 1 and 0)
template <typename T>
void batch_norm_normalize(const T* x, i64 N, i64 C, i64 S, const T* mean, const T* invstd,
                          const T* w, const T* b, T* y);

// Gradients (each output nullable). training: statistics came from this
// batch, so dx includes their dependence on x; else they are constants.
template <typename T>
void batch_norm_backward(const T* dy, const T* x, i64 N, i64 C, i64 S, const T* mean,
                         const T* invstd, const T* w, bool training, T* dx, T* dw, T* db);

}  // namespace pyconv
