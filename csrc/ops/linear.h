// linear.h - fully connected layer on the project's GEMM.
//   x [M][K], w [N][K] (PyTorch layout), b [N] (nullable) -> y [M][N] = x w^T + b
#pragma once
#include "common.h"

namespace pyconv {

template <typename T>
void linear_forward(const T* x, const T* w, const T* b, T* y, i64 M, i64 K, i64 N);

// dx = dy w, dw = dy^T x, db = column sums of dy (each output nullable).
template <typename T>
void linear_backward(const T* dy, const T* x, const T* w, T* dx, T* dw, T* db, i64 M, i64 K, i64 N);

}  // namespace pyconv
