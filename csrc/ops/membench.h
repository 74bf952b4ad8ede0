// membench.h - the bench's memory-bandwidth yardstick: a STREAM-style triad
// a[i] = b[i] + s * c[i] on arrays far larger than the caches.
#pragma once
#include "common.h"

namespace pyconv {

// Best GB/s (12 bytes per float element: two loads and one store) over
// repeated passes for about `seconds`, with `nthreads` threads.
double triad_gbps(i64 n, int nthreads, double seconds);

}  // namespace pyconv
