// batchnorm.cpp - see batchnorm.h. Every reduction runs in a fixed order
// inside one thread (deterministic for any thread count).
//
// Memory traffic bounds these ops. The statistics (and the backward's sums)
// are one pass per channel, walking memory in order: rows of 32 or more
// values (the per-image planes of a conv net) through the row kernels, a
// block of channels image by image; shorter rows ((N, C) input, tiny maps)
// as columns of the (N, C*S) matrix. Then one element-wise pass in memory
// order writes y (or dx), shared between threads by rows.
//
// The float32 sums are taken in float over short blocks and merged into
// double after each: converting every value to double bound the AVX2
// kernels to half the memory bandwidth. The statistics sum each block of
// 1024 values about its own mean (two passes over the block, from L1; with
// 256 the per-block folds and merge held the pass to 2/3 of the memory
// bandwidth) and
// merge the blocks' (count, mean, deviation sums) into double shifted sums,
// so float rounding never meets a large mean or drift (merge_stats); the
// backward's sums go over 8 values per lane in float, then into 32 double
// lanes. Blocks whose float sums overflow are taken again in double.
#include "ops/batchnorm.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "cpu/parallel.h"
#include "ops/bn_kernels.h"
#include "ops/vmath.h"

namespace pyconv {
namespace {
constexpr int kL = 32;           // partial sums per row (lane l takes i = l mod 32)
constexpr i64 kBlock = 8 * kL;   // values per lane-block (8 per lane)
constexpr i64 kStatsBlock = 32 * kL;  // the statistics' blocks (32 per lane)
constexpr i64 kShortRow = 32;    // rows shorter than this take the column path
constexpr i64 kColumns = 2048;   // columns per block of the column path (whole channels)

// The portable loop of VMathF32::bn_row_stats (vmath.h), same order of
// operations: blocks of kStatsBlock values; in each, the sum, and then the sums
// of the deviations from the block's mean and of their squares, over 32
// lanes (lane l = i mod 32 over the full groups, the rest into lanes 0..),
// folded by fold_lanes; each block merged into st (merge_stats).
template <typename T>
void row_stats(const T* x, i64 n, double* st) {
  for (i64 i0 = 0; i0 < n; i0 += kStatsBlock) {
    const i64 nb = std::min(kStatsBlock, n - i0), full = nb - nb % kL;
    const T* xb = x + i0;
    T a[kL] = {};
    for (i64 i = 0; i < full; i += kL)
      for (int l = 0; l < kL; ++l) a[l] += xb[i + l];
    for (i64 i = full; i < nb; ++i) a[i - full] += xb[i];
    const T mb = fold_lanes(a) / T(nb);
    T q[kL] = {};
    std::fill(a, a + kL, T(0));
    for (i64 i = 0; i < full; i += kL)
      for (int l = 0; l < kL; ++l) {
        const T d = xb[i + l] - mb;
        a[l] += d;
        q[l] += d * d;
      }
    for (i64 i = full; i < nb; ++i) {
      const T d = xb[i] - mb;
      a[i - full] += d;
      q[i - full] += d * d;
    }
    merge_block(st, xb, nb, mb, fold_lanes(a), fold_lanes(q));
  }
}

// The portable loop of VMathF32::bn_grad_sums (vmath.h), in the same order
// of operations: over the full groups of 32, blocks of up to 8 groups
// accumulate per lane in T, then add to the double sums (a block whose
// float sums overflow is taken again in double); the last n mod 32 terms go
// straight into acc[0..], in double.
template <typename T>
void grad_sums(const T* g, const T* x, i64 n, T m, double* a1, double* a2) {
  const i64 full = n - n % kL;
  i64 i = 0;
  while (i < full) {
    T a[kL] = {}, b[kL] = {};
    const i64 i0 = i;
    for (const i64 end = std::min(full, i + kBlock); i < end; i += kL)
      for (int l = 0; l < kL; ++l) {
        a[l] += g[i + l];
        b[l] += g[i + l] * (x[i + l] - m);
      }
    T chk = 0;  // v - v: 0 if finite, else NaN
    for (int l = 0; l < kL; ++l) chk += (a[l] - a[l]) + (b[l] - b[l]);
    if (chk == T(0))
      for (int l = 0; l < kL; ++l) a1[l] += double(a[l]), a2[l] += double(b[l]);
    else
      grad_block_double(g + i0, x + i0, i - i0, m, a1, a2);
  }
  for (int l = 0; i < n; ++i, ++l) {
    a1[l] += double(g[i]);
    a2[l] += double(g[i]) * (double(x[i]) - double(m));
  }
}

// The float32 SIMD table for the loops here, or nullptr.
template <typename T>
inline const VMathF32* bn_simd() {
  if constexpr (std::is_same_v<T, float>) return vmath_f32();
  return nullptr;
}

template <typename T>
void row_stats(const VMathF32* vm, const T* x, i64 n, double* st) {
  if constexpr (std::is_same_v<T, float>)
    if (vm) return vm->bn_row_stats(x, n, st);
  row_stats(x, n, st);
}

template <typename T>
void row_grad_sums(const VMathF32* vm, const T* g, const T* x, i64 n, T m, double* a1, double* a2) {
  if constexpr (std::is_same_v<T, float>)
    if (vm) return vm->bn_grad_sums(g, x, n, m, a1, a2);
  grad_sums(g, x, n, m, a1, a2);
}

// y = x * s + t
template <typename T>
void affine_row(const VMathF32* vm, const T* __restrict x, i64 n, T s, T t, T* __restrict y) {
  if constexpr (std::is_same_v<T, float>)
    if (vm) return vm->bn_affine(x, n, s, t, y);
  for (i64 i = 0; i < n; ++i) y[i] = x[i] * s + t;
}

// d = k * (g - a - (x - m) * bc)
template <typename T>
void dx_row(const VMathF32* vm, const T* __restrict g, const T* __restrict x, i64 n, T k, T a, T m,
            T bc, T* __restrict d) {
  if constexpr (std::is_same_v<T, float>)
    if (vm) return vm->bn_dx(g, x, n, k, a, m, bc, d);
  for (i64 i = 0; i < n; ++i) d[i] = k * (g[i] - a - (x[i] - m) * bc);
}

// mean, biased var and invstd from st (merge_stats, bn_kernels.h).
template <typename T>
void finish_stats(const double* st, T eps, T* mean, T* var, T* invstd) {
  const double n = st[0], dm = st[2] / n;
  double v = (st[3] - st[2] * dm) / n;
  if (v < 0) v = 0;  // rounding; NaN stays NaN
  *mean = T(st[1] + dm);
  *var = T(v);
  *invstd = T(1) / std::sqrt(*var + eps);
}

template <typename T>
inline void channel_coefs(const T* mean, const T* invstd, const T* w, const T* b, i64 c, T* scale,
                          T* shift) {
  *scale = invstd[c] * (w ? w[c] : T(1));
  *shift = (b ? b[c] : T(0)) - mean[c] * *scale;
}

// The dx coefficients of channel c: k = w*invstd, and (training) a = mean(dy),
// bc = mean(dy * (x - mean)) * invstd^2, so dx = k * (dy - a - (x - mean) * bc).
template <typename T>
void grad_coefs(const T* invstd, const T* w, i64 c, double sdy, double sdyx, double M, T* k, T* a,
                T* bc) {
  const double is = invstd[c], wc = w ? double(w[c]) : 1.0;
  *k = T(wc * is);
  *a = T(sdy / M);
  *bc = T(sdyx * is * is / M);
}

// Threads' shares of the channels: [C * t / nt, C * (t + 1) / nt).
template <typename F>
void over_channel_ranges(i64 C, int nt, F f) {
  ExceptionCapture capture;  // (the walks allocate their sums: bad_alloc)
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    const int t = omp_get_thread_num(), n = omp_get_num_threads();
    capture.run([&] { f(C * t / n, C * (t + 1) / n); });
  }
  capture.rethrow();
}

// f(n) for every row n of the (N, C*S) matrix, rows shared between threads.
template <typename F>
void over_rows(i64 N, i64 CS, double bytes_per_value, F f) {
  const int nt = threads_for(double(N) * CS * bytes_per_value, 1.0e6);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (i64 n = 0; n < N; ++n) f(n);
}

// Column path of the sums: for the channels [c0, c1), per-channel totals of
// f over all N rows into t1 / t2. f(off, w, a, b) adds the terms of the w
// values at offset off (a row of the block) into the T sums a[0..w) /
// b[0..w); columns are walked in blocks of whole channels (at most kColumns
// columns), rows in blocks of 8 (T sums), then into doubles;
// redo(col, n0, n1, da, db) adds a block's terms in double instead where
// the float sums did not stay finite.
template <typename T, typename F, typename Redo>
void column_sums(i64 N, i64 C, i64 S, i64 c0, i64 c1, F f, Redo redo, double* t1, double* t2) {
  const i64 per = std::max<i64>(1, kColumns / S);  // channels per block
  std::vector<T> a(per * S), b(per * S);
  std::vector<double> da(per * S), db(per * S);
  for (i64 cb = c0; cb < c1; cb += per) {
    const i64 nc = std::min(per, c1 - cb), w = nc * S, j0 = cb * S;
    std::fill(da.begin(), da.end(), 0.0);
    std::fill(db.begin(), db.end(), 0.0);
    for (i64 n0 = 0; n0 < N; n0 += 8) {
      std::fill(a.begin(), a.end(), T(0));
      std::fill(b.begin(), b.end(), T(0));
      const i64 n1 = std::min(N, n0 + 8);
      for (i64 n = n0; n < n1; ++n) f(n * C * S + j0, w, a.data(), b.data());
      T chk = 0;  // v - v: 0 if finite, else NaN (one branch-free check per block)
      for (i64 j = 0; j < w; ++j) chk += (a[j] - a[j]) + (b[j] - b[j]);
      for (i64 j = 0; j < w; ++j) {
        if (chk == T(0) || (std::isfinite(a[j]) && std::isfinite(b[j])))
          da[j] += double(a[j]), db[j] += double(b[j]);
        else  // overflowed float sums (or non-finite data): the block in double
          redo(j0 + j, n0, n1, &da[j], &db[j]);
      }
    }
    for (i64 c = 0; c < nc; ++c) {
      double s = 0, q = 0;
      for (i64 i = 0; i < S; ++i) s += da[c * S + i], q += db[c * S + i];
      t1[cb + c] = s;
      t2[cb + c] = q;
    }
  }
}

// Per-column copies of per-channel values: out[c * S + i] = v[c].
template <typename T>
std::vector<T> per_column(const std::vector<T>& v, i64 S) {
  std::vector<T> out(v.size() * S);
  for (size_t c = 0; c < v.size(); ++c) std::fill_n(out.begin() + c * S, S, v[c]);
  return out;
}

// The rows (images x channels) of S >= kShortRow values for the channels
// [c0, c1) in blocks of up to 64 channels, image by image, so the walk is in
// memory order: a walk by channel, one page-sized row after another C * S
// apart, ran at a third of the bandwidth in a standalone measurement.
// (Normalising each block straight after its sums, while it is in cache,
// measured slower than a second pass in memory order.) f(off, c) per row.
template <typename F>
void for_rows_in_order(i64 N, i64 C, i64 S, i64 c0, i64 c1, F f) {
  const i64 cb = std::clamp<i64>(16384 / S, 1, 64);  // runs of >= 64 KiB of float32
  for (i64 b0 = c0; b0 < c1; b0 += cb)
    for (i64 n = 0; n < N; ++n)
      for (i64 c = b0; c < std::min(c1, b0 + cb); ++c) f((n * C + c) * S, c);
}

// The row walk's sums for the channels [c0, c1): each row goes through
// row(off, a, b), adding into its channel's 32 + 32 partial sums.
template <typename Row>
void row_block_sums(i64 N, i64 C, i64 S, i64 c0, i64 c1, Row row, double* t1, double* t2) {
  std::vector<double> acc(2 * kL * (c1 - c0), 0.0);
  for_rows_in_order(N, C, S, c0, c1, [&](i64 off, i64 c) {
    double* a = acc.data() + 2 * kL * (c - c0);
    row(off, a, a + kL);
  });
  for (i64 c = c0; c < c1; ++c) {
    t1[c] = fold_lanes(acc.data() + 2 * kL * (c - c0));
    t2[c] = fold_lanes(acc.data() + 2 * kL * (c - c0) + kL);
  }
}

// Per-channel sums over x (and g: tensors = 2) into t1 / t2 by the row or
// the column walk, the channels shared between threads: row as
// row_block_sums's, col and redo as column_sums's.
template <typename T, typename Row, typename Col, typename Redo>
void channel_sums(i64 N, i64 C, i64 S, int tensors, Row row, Col col, Redo redo, double* t1,
                  double* t2) {
  const int nt = (int)std::min<i64>(C, threads_for(double(N) * C * S * sizeof(T) * tensors, 1.0e6));
  over_channel_ranges(C, nt, [&](i64 c0, i64 c1) {
    if (S >= kShortRow)
      row_block_sums(N, C, S, c0, c1, row, t1, t2);
    else
      column_sums<T>(N, C, S, c0, c1, col, redo, t1, t2);
  });
}
}  // namespace

namespace {
// column_stats on the Wd columns at x[0..Wd) of rows [n0, n1), the sums in
// registers; k / s1 / s2 at the same columns (k set on the first block).
// A column whose float sums overflow takes the block again in double.
template <int Wd, typename T>
inline void column_strip(const T* x, i64 CS, i64 n0, i64 n1, double* k, double* s1, double* s2) {
  const T nb = T(n1 - n0), rnb = T(1) / nb;
  T a[Wd] = {}, sd[Wd] = {}, q[Wd] = {}, m[Wd];
  for (i64 n = n0; n < n1; ++n)
    for (int l = 0; l < Wd; ++l) a[l] += x[n * CS + l];
  for (int l = 0; l < Wd; ++l) m[l] = a[l] * rnb;  // (any rounding of the mean is corrected by sd)
  for (i64 n = n0; n < n1; ++n)
    for (int l = 0; l < Wd; ++l) {
      const T d = x[n * CS + l] - m[l];
      sd[l] += d;
      q[l] += d * d;
    }
  double md[Wd], sdd[Wd], qd[Wd];
  for (int l = 0; l < Wd; ++l) md[l] = m[l], sdd[l] = sd[l], qd[l] = q[l];
  // v - v is 0 for finite v and NaN otherwise: one branch-free check per strip.
  T chk = 0;
  for (int l = 0; l < Wd; ++l) chk += (m[l] - m[l]) + (sd[l] - sd[l]) + (q[l] - q[l]);
  if (!(chk == T(0)))
    for (int l = 0; l < Wd; ++l)
      if (!(std::isfinite(m[l]) && std::isfinite(sd[l]) && std::isfinite(q[l])))
        block_stats_double(x + n0 * CS + l, CS, n1 - n0, &md[l], &sdd[l], &qd[l]);
  for (int l = 0; l < Wd; ++l)
    column_update(md[l], sdd[l], qd[l], double(nb), n0 == 0, &k[l], &s1[l], &s2[l]);
}

// Column path of the statistics for the channels [c0, c1): per column of
// the (N, C*S) matrix, blocks of 8 rows (their mean, then the sums of the
// deviations from it and of their squares, in T) go into the column's
// double shifted sums as in merge_stats; then each channel merges its S
// columns into st[4c..4c+4).
template <typename T>
void column_stats(const T* x, i64 N, i64 C, i64 S, i64 c0, i64 c1, double* st) {
  const VMathF32* vm = bn_simd<T>();
  const i64 per = std::max<i64>(1, kColumns / S), CS = C * S;  // channels per block
  std::vector<double> k(per * S), s1(per * S), s2(per * S);  // per column: shift, sums
  for (i64 cb = c0; cb < c1; cb += per) {
    const i64 nc = std::min(per, c1 - cb), w = nc * S, j0 = cb * S;
    for (i64 n0 = 0; n0 < N; n0 += 8) {
      const i64 n1 = std::min(N, n0 + 8);
      i64 j = 0;
      for (; j + 8 <= w; j += 8) {
        if constexpr (std::is_same_v<T, float>)
          if (vm) {
            vm->bn_col_stats8(x + j0 + j, CS, n0, n1, &k[j], &s1[j], &s2[j]);
            continue;
          }
        column_strip<8>(x + j0 + j, CS, n0, n1, &k[j], &s1[j], &s2[j]);
      }
      for (; j < w; ++j) column_strip<1>(x + j0 + j, CS, n0, n1, &k[j], &s1[j], &s2[j]);
    }
    // each channel merges its S columns in order (each about its own mean)
    for (i64 c = 0; c < nc; ++c) {
      double* sc = st + 4 * (cb + c);
      for (i64 i = 0; i < S; ++i) {
        const i64 j = c * S + i;
        const double mj = k[j] + s1[j] / double(N);
        merge_stats(sc, double(N), mj, 0.0, s2[j] - s1[j] * (s1[j] / double(N)));
      }
    }
  }
}
}  // namespace

template <typename T>
void batch_norm_train_forward(const T* x, i64 N, i64 C, i64 S, T eps, const T* w, const T* b, T* y,
                              T* mean, T* var, T* invstd) {
  if (C <= 0) return;
  if (N * S == 0) {  // no values: statistics undefined (the Python layer refuses this)
    std::fill_n(mean, C, std::numeric_limits<T>::quiet_NaN());
    std::fill_n(var, C, std::numeric_limits<T>::quiet_NaN());
    std::fill_n(invstd, C, std::numeric_limits<T>::quiet_NaN());
    return;
  }
  const VMathF32* vm = bn_simd<T>();
  std::vector<double> st(4 * C, 0.0);  // per channel, see merge_stats
  const int nt = (int)std::min<i64>(C, threads_for(double(N) * C * S * sizeof(T), 1.0e6));
  over_channel_ranges(C, nt, [&](i64 c0, i64 c1) {
    if (S < kShortRow) return column_stats(x, N, C, S, c0, c1, st.data());
    for_rows_in_order(N, C, S, c0, c1,
                      [&](i64 off, i64 c) { row_stats(vm, x + off, S, st.data() + 4 * c); });
  });
  for (i64 c = 0; c < C; ++c) finish_stats(st.data() + 4 * c, eps, mean + c, var + c, invstd + c);
  batch_norm_normalize(x, N, C, S, mean, invstd, w, b, y);
}

template <typename T>
void batch_norm_normalize(const T* x, i64 N, i64 C, i64 S, const T* mean, const T* invstd,
                          const T* w, const T* b, T* y) {
  std::vector<T> sc(C), sh(C);
  for (i64 c = 0; c < C; ++c) channel_coefs(mean, invstd, w, b, c, &sc[c], &sh[c]);
  if (S < kShortRow) {
    const std::vector<T> scol = per_column(sc, S), tcol = per_column(sh, S);
    const i64 CS = C * S;
    return over_rows(N, CS, 2 * sizeof(T), [&](i64 n) {
      const T* __restrict xr = x + n * CS;
      T* __restrict yr = y + n * CS;
      for (i64 j = 0; j < CS; ++j) yr[j] = xr[j] * scol[j] + tcol[j];
    });
  }
  const VMathF32* vm = bn_simd<T>();
  over_rows(N * C, S, 2 * sizeof(T), [&](i64 r) {
    affine_row(vm, x + r * S, S, sc[r % C], sh[r % C], y + r * S);
  });
}

template <typename T>
void batch_norm_backward(const T* dy, const T* x, i64 N, i64 C, i64 S, const T* mean,
                         const T* invstd, const T* w, bool training, T* dx, T* dw, T* db) {
  if (C <= 0) return;
  if (N * S == 0) {  // empty sums; dx is empty
    if (dw) std::fill_n(dw, C, T(0));
    if (db) std::fill_n(db, C, T(0));
    return;
  }
  const VMathF32* vm = bn_simd<T>();
  const double M = double(N * S);
  std::vector<double> t1(C), t2(C);  // sum(dy), sum(dy * (x - mean))
  // the column walk's per-column means
  const std::vector<T> mcol =
      S < kShortRow ? per_column(std::vector<T>(mean, mean + C), S) : std::vector<T>();
  if (training || dw || db) {
    channel_sums<T>(
        N, C, S, 2,
        [&](i64 off, double* p1, double* p2) {
          row_grad_sums(vm, dy + off, x + off, S, mean[(off / S) % C], p1, p2);
        },
        [&](i64 off, i64 wd, T* __restrict p1, T* __restrict p2) {
          const T* __restrict g = dy + off;
          const T* __restrict xr = x + off;
          const T* __restrict mc = mcol.data() + off % (C * S);
          for (i64 j = 0; j < wd; ++j) {
            p1[j] += g[j];
            p2[j] += g[j] * (xr[j] - mc[j]);
          }
        },
        [&](i64 col, i64 n0, i64 n1, double* da, double* db) {
          const double mj = double(mcol[col]);
          for (i64 n = n0; n < n1; ++n) {
            const double gv = double(dy[n * C * S + col]);
            *da += gv;
            *db += gv * (double(x[n * C * S + col]) - mj);
          }
        },
        t1.data(), t2.data());
    for (i64 c = 0; c < C; ++c) {
      if (db) db[c] = T(t1[c]);
      if (dw) dw[c] = T(t2[c] * double(invstd[c]));
    }
  }
  if (!dx) return;
  std::vector<T> k(C), a(C), bc(C);  // dx = k * (dy - a - (x - mean) * bc)
  for (i64 c = 0; c < C; ++c) grad_coefs(invstd, w, c, t1[c], t2[c], M, &k[c], &a[c], &bc[c]);
  if (S < kShortRow) {
    const std::vector<T> kc = per_column(k, S), ac = per_column(a, S), bcc = per_column(bc, S);
    const std::vector<T>& mc = mcol;
    const i64 CS = C * S;
    return over_rows(N, CS, 3 * sizeof(T), [&](i64 n) {
      const T* __restrict g = dy + n * CS;
      const T* __restrict xr = x + n * CS;
      T* __restrict d = dx + n * CS;
      if (training)
        for (i64 j = 0; j < CS; ++j) d[j] = kc[j] * (g[j] - ac[j] - (xr[j] - mc[j]) * bcc[j]);
      else
        for (i64 j = 0; j < CS; ++j) d[j] = g[j] * kc[j];
    });
  }
  over_rows(N * C, S, 3 * sizeof(T), [&](i64 r) {
    const i64 c = r % C, off = r * S;
    if (training)
      dx_row(vm, dy + off, x + off, S, k[c], a[c], mean[c], bc[c], dx + off);
    else
      for (i64 i = 0; i < S; ++i) dx[off + i] = dy[off + i] * k[c];
  });
}

#define PYCONV_BN_INSTANTIATE(T)                                                                 \
  template void batch_norm_train_forward<T>(const T*, i64, i64, i64, T, const T*, const T*, T*, \
                                            T*, T*, T*);                                         \
  template void batch_norm_normalize<T>(const T*, i64, i64, i64, const T*, const T*, const T*,  \
                                        const T*, T*);                                           \
  template void batch_norm_backward<T>(const T*, const T*, i64, i64, i64, const T*, const T*,   \
                                       const T*, bool, T*, T*, T*);
PYCONV_BN_INSTANTIATE(float)
PYCONV_BN_INSTANTIATE(double)

}  // namespace pyconv
