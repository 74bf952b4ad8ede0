// pad.cpp - see pad.h. Parallel over planes (each plane owned by one thread).
#include "ops/pad.h"

#include <algorithm>
#include <vector>

#include "cpu/parallel.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace pyconv {
namespace {

// Source index of output position o (input offset `before`), or -1 for a
// constant-padding position.
inline i64 source(i64 o, i64 before, i64 n, PadMode mode) {
  i64 i = o - before;
  if (i >= 0 && i < n) return i;
  switch (mode) {
    case PadMode::constant: return -1;
    case PadMode::reflect: return i < 0 ? -i : 2 * (n - 1) - i;
    case PadMode::replicate: return i < 0 ? 0 : n - 1;
    case PadMode::circular: return ((i % n) + n) % n;
  }
  return -1;
}

std::vector<i64> source_map(i64 out, i64 before, i64 n, PadMode mode) {
  std::vector<i64> m(out);
  for (i64 o = 0; o < out; ++o) m[o] = source(o, before, n, mode);
  return m;
}

}  // namespace

template <typename T>
void pad_forward(const PadParams& p, T value, const T* x, T* y) {
  const i64 OH = p.OH(), OW = p.OW();
  const std::vector<i64> sy = source_map(OH, p.top, p.H, p.mode);
  const std::vector<i64> sx = source_map(OW, p.left, p.W, p.mode);
  const int nt = threads_for(double(p.planes) * OH * OW * sizeof(T), 1.0e6);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (i64 pl = 0; pl < p.planes; ++pl) {
    const T* xp = x + pl * p.H * p.W;
    T* yp = y + pl * OH * OW;
    for (i64 oy = 0; oy < OH; ++oy) {
      T* yr = yp + oy * OW;
      if (sy[oy] < 0) {
        std::fill(yr, yr + OW, value);
        continue;
      }
      const T* __restrict xr = xp + sy[oy] * p.W;
      T* __restrict yi = yr + p.left;
      for (i64 ox = 0; ox < p.left; ++ox) yr[ox] = sx[ox] < 0 ? value : xr[sx[ox]];
      for (i64 ix = 0; ix < p.W; ++ix) yi[ix] = xr[ix];  // inline: rows are often short
      for (i64 ox = p.left + p.W; ox < OW; ++ox) yr[ox] = sx[ox] < 0 ? value : xr[sx[ox]];
    }
  }
}

template <typename T>
void pad_backward(const PadParams& p, const T* dy, T* dx) {
  const i64 OH = p.OH(), OW = p.OW();
  const std::vector<i64> sy = source_map(OH, p.top, p.H, p.mode);
  const std::vector<i64> sx = source_map(OW, p.left, p.W, p.mode);
  const int nt = threads_for(double(p.planes) * OH * OW * sizeof(T), 1.0e6);
  std::vector<char> seen_all(std::size_t(nt) * p.H);  // per thread: source rows stored yet
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
#ifdef _OPENMP
    char* seen = seen_all.data() + std::size_t(omp_get_thread_num()) * p.H;
#else
    char* seen = seen_all.data();
#endif
#pragma omp for schedule(static)
    for (i64 pl = 0; pl < p.planes; ++pl) {
      T* dxp = dx + pl * p.H * p.W;
      const T* g = dy + pl * OH * OW;
      // Output rows in order; each adds its interior (the first one to reach
      // a source row stores it, no zero fill first) and then its edges left
      // to right into the source row. Padding is never negative (the binding
      // refuses it), so every source row is some output row's interior and
      // is stored before anything is added to it.
      std::fill(seen, seen + p.H, char(0));
      for (i64 oy = 0; oy < OH; ++oy) {
        if (sy[oy] < 0) continue;
        T* __restrict dr = dxp + sy[oy] * p.W;
        const T* __restrict gr = g + oy * OW;
        const T* __restrict gi = gr + p.left;
        if (seen[sy[oy]])
          for (i64 ix = 0; ix < p.W; ++ix) dr[ix] += gi[ix];
        else
          for (i64 ix = 0; ix < p.W; ++ix) dr[ix] = gi[ix];
        seen[sy[oy]] = 1;
        for (i64 ox = 0; ox < p.left; ++ox)
          if (sx[ox] >= 0) dr[sx[ox]] += gr[ox];
        for (i64 ox = p.left + p.W; ox < OW; ++ox)
          if (sx[ox] >= 0) dr[sx[ox]] += gr[ox];
      }
    }
  }
}

template void pad_forward<float>(const PadParams&, float, const float*, float*);
template void pad_forward<double>(const PadParams&, double, const double*, double*);
template void pad_backward<float>(const PadParams&, const float*, float*);
template void pad_backward<double>(const PadParams&, const double*, double*);

}  // namespace pyconv
