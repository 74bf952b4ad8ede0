// optim.h - fused optimizer updates: one pass over a parameter, its gradient
// and its state, doing per element exactly the operations (and roundings)
// that pyconv/optim.py's NumPy fallback does array by array: the same
// values, bit for bit, in one read and write of each array instead of
// several. Scalars arrive already rounded to T as NumPy rounds them.
#pragma once
#include "common.h"

namespace pyconv {

// SGD. mode 0: no momentum, p -= lr * g. mode 1: first momentum step,
// buf = g. mode 2: buf = buf * momentum + g * damp1 (damp1 = 1 - dampening).
// Then with momentum: d = nesterov ? g + buf * momentum : buf; p -= d * lr.
template <typename T>
void sgd_update(T* p, const T* g, T* buf, i64 n, T lr, T momentum, T damp1, bool nesterov, int mode);

// Adam / AdamW (see optim.py's Adam docstring). decay: p *= decay first
// when decoupled. m is moved toward g by lerp weight w (torch's two-branch
// formula: far = |w| >= 0.5 uses omw = 1 - w from g's end). vmax (nullable):
// AMSGrad's running maximum. rsbc2 = sqrt(1 - beta2^step), step_size =
// lr / (1 - beta1^step).
template <typename T>
void adam_update(T* p, const T* g, T* m, T* v, T* vmax, i64 n, bool decoupled, T decay, T w, T omw,
                 bool far, T beta2, T omb2, T rsbc2, T eps, T step_size);

}  // namespace pyconv
