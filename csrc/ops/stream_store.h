// stream_store.h - copies to memory with non-temporal stores, for outputs
// far larger than the caches that are written once and read by a later op:
// the stores skip reading each destination line for ownership (a third of
// the traffic of a plain copy) and do not push useful lines out of cache.
#pragma once
#include <algorithm>
#include <cstdint>
#include <type_traits>

#if defined(PYCONV_X86)
#include <emmintrin.h>
#endif

#include "common.h"

namespace pyconv {

// Outputs of at least this many bytes are worth streaming (when the stores
// compete for bandwidth; see the callers).
constexpr double kStreamOutputBytes = 4.0 * (1 << 20);

// dst[0, n) = src[0, n) with non-temporal stores from dst's first 16-byte
// boundary on (plain stores before it and for the tail). The caller runs
// stream_fence() before the data is handed on.
template <typename T>
inline void stream_copy(const T* __restrict src, T* __restrict dst, i64 n) {
#if defined(PYCONV_X86)
  constexpr i64 kLanes = 16 / sizeof(T);
  i64 i = 0;
  for (; i < n && (reinterpret_cast<std::uintptr_t>(dst + i) & 15); ++i) dst[i] = src[i];
  for (; i + kLanes <= n; i += kLanes) {
    if constexpr (std::is_same_v<T, float>)
      _mm_stream_ps(dst + i, _mm_loadu_ps(src + i));
    else
      _mm_stream_pd(dst + i, _mm_loadu_pd(src + i));
  }
  for (; i < n; ++i) dst[i] = src[i];
#else
  std::copy(src, src + n, dst);
#endif
}

inline void stream_fence() {
#if defined(PYCONV_X86)
  _mm_sfence();
#endif
}

}  // namespace pyconv
