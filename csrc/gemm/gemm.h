// gemm.h - the packed GEMM engine (Goto/BLIS loop nest) and the micro-kernel
// contract. See csrc/README.md for the packed-panel diagram.
//
//   C[m x n] := A[m x k] * B[k x n] + beta * C
//
// A and B are read through arbitrary element strides (rs = row stride,
// cs = column stride; negative strides are allowed), so transposed and
// non-contiguous operands need no copy. C is row-major with leading
// dimension ldc >= n. beta == 0 never reads C (it may hold NaN garbage).
#pragma once
#include <cstdint>

#include "cpu/cpuinfo.h"

namespace pyconv {

using i64 = std::int64_t;

// Micro-kernel: C[MR x NR] := Apanel * Bpanel + beta * C, over kc steps.
//   a: packed A micro-panel, kc columns of MR contiguous values   [kc][MR]
//   b: packed B micro-panel, kc rows of NR contiguous values      [kc][NR]
//   c: row-major MR x NR tile with row stride ldc                 [MR][ldc]
// a and b are 64-byte aligned; c has no alignment guarantee.
template <typename T>
using ukernel_fn = void (*)(i64 kc, const T* a, const T* b, T* c, i64 ldc, T beta);

// Row-offset variant: B[p][j] = b[boff[p] + j] (j < NR), read unpacked,
// e.g. the shifted rows of a padded image. Same C contract.
template <typename T>
using ukernel_rows_fn = void (*)(i64 kc, const T* a, const T* b, const i64* boff, T* c, i64 ldc,
                                 T beta);

// In-place-A variant: A[i][p] = a[i * lda + p] (MR rows that run along k,
// read where they are), B packed [kc][NR]. Same C contract. The _half form
// computes NR/2 columns from a [kc][NR/2] panel (narrow column edges).
template <typename T>
using ukernel_arows_fn = void (*)(i64 kc, const T* a, i64 lda, const T* b, T* c, i64 ldc, T beta);

template <typename T>
struct GemmKernel {
  const char* name;  // e.g. "sgemm_ukernel_6x16__avx2"
  Isa isa;
  int mr, nr;        // register block
  int mc, kc, nc;    // cache blocks (mc % mr == 0, nc % nr == 0)
  ukernel_fn<T> fn;
  ukernel_rows_fn<T> fn_rows;
  // Optional (nullptr: pack with portable loops). Packs one full micro-panel
  // from nr separate row streams: dst[q*nr + t] = src[t][q], t < nr, q < kc
  // (nr a multiple of 8). Convolution's backward-weight B source is such a
  // set of streams; this transposes them with SIMD shuffles.
  void (*pack_streams)(const T* const* src, i64 kc, int nr, T* dst) = nullptr;
  // Optional, for mr == 6 kernels: packs mr <= 6 rows of A that run along k
  // (row i at a + i*rsa, unit stride in k) into one [kc][6] micro-panel,
  // zero rows past mr. A convolution's weights and backward-weight's dy are
  // such rows; the portable path scatters them one value at a time.
  void (*pack_a6)(const T* a, i64 rsa, i64 mr, i64 kc, T* dst) = nullptr;
  // Optional: C[i][j] := sum_p a[i][p] * b[j][p] + beta * C[i][j] with the
  // rows of both operands read in place (row pointers, unit stride along
  // p): vectors run along the reduction, so nothing is packed. For products
  // whose reduction is long next to m and n (backward-weight), where packing
  // each operand element for only m or n uses costs a large share.
  void (*dot_rows)(i64 m, i64 n, i64 k, const T* const* a, const T* const* b, T beta, T* c,
                   i64 ldc) = nullptr;
  // Optional: the in-place-A kernels (full NR, and NR/2 wide). With them,
  // a product with few columns reads its A rows unpacked (gemm.cpp).
  ukernel_arows_fn<T> fn_arows = nullptr;
  ukernel_arows_fn<T> fn_arows_half = nullptr;
  // Optional: short kernels for a last row tile of at most `rows` < mr
  // rows (m % mr of them): the same contract, but only the first `rows`
  // rows of the [kc][mr] A panel are multiplied and only those rows of C
  // are read or written. The shorter entry first; rows == 0 ends the list.
  // (A 128-row product is 21 full 6-row tiles and one of 2 rows, which the
  // full kernel computes at the cost of 6.)
  struct ShortRows {
    int rows;
    ukernel_fn<T> fn;
    ukernel_rows_fn<T> fn_rows;
  };
  ShortRows short_rows[2] = {};
  // Optional: dot_rows over a 2-D reduction, R rows of W values (W a
  // multiple of 8), row r of a[i] at a[i] + r * lda and of b[j] at
  // b[j] + r * ldb: operands whose rows have different pitches (dy in
  // place against the wider rows of a padded image).
  void (*dot_rows_2d)(i64 m, i64 n, i64 R, i64 W, const T* const* a, i64 lda, const T* const* b,
                      i64 ldb, T beta, T* c, i64 ldc) = nullptr;
};

// The short-row kernels for a tile of mr rows (gemm.h, GemmKernel), or
// nullptr when there are none (or mr is a full tile).
template <typename T>
inline const typename GemmKernel<T>::ShortRows* short_rows_for(const GemmKernel<T>& K, i64 mr) {
  if (mr >= K.mr) return nullptr;
  for (const auto& s : K.short_rows)
    if (s.rows > 0 && mr <= s.rows) return &s;
  return nullptr;
}

// AVX2 stream packer (ukernel_avx2.cpp); also used by the AVX-512 table.
void spack_streams__avx2(const float* const* src, i64 kc, int nr, float* dst);
void spack_a6__avx2(const float* a, i64 rsa, i64 mr, i64 kc, float* dst);
void sdot_rows__avx2(i64 m, i64 n, i64 k, const float* const* a, const float* const* b, float beta,
                     float* c, i64 ldc);
void sdot_rows_2d__avx2(i64 m, i64 n, i64 R, i64 W, const float* const* a, i64 lda, const float* const* b,
                        i64 ldb, float beta, float* c, i64 ldc);

// The kernel table: one entry per ISA and dtype (dispatch.cpp).
template <typename T>
const GemmKernel<T>& gemm_kernel(Isa isa);
template <typename T>
inline const GemmKernel<T>& active_gemm_kernel() { return gemm_kernel<T>(active_isa()); }

// Per-ISA kernel entries (defined in ukernel_<isa>.cpp). The AVX entries are
// only called after the CPU check in dispatch.cpp.
extern const GemmKernel<float> sgemm_ref, sgemm_avx2, sgemm_avx512;
extern const GemmKernel<double> dgemm_ref, dgemm_avx2, dgemm_avx512;

// A source of B panels. fn packs the block B[p0 : p0+kc, j0 : j0+nc] into
// NR-column micro-panels [ceil(nc/NR)][kc][NR], zero-padding missing
// columns. This lets convolution pack straight from the image (implicit
// GEMM) instead of materialising the im2col matrix.
template <typename T>
struct BPacker {
  void (*fn)(const void* ctx, i64 p0, i64 kc, i64 j0, i64 nc, int NR, T* dst);
  const void* ctx;
};

// Packs one NR-wide B micro-panel from nr <= NR column streams, column t
// being src[t][0 : kc]: dst[q*NR + t] = src[t][q], zeros for t >= nr. src
// must have room for NR pointers (entries nr.. are overwritten). Uses the
// active kernel's SIMD stream packer where there is one.
template <typename T>
void pack_stream_panel(const T** src, i64 nr, i64 kc, int NR, T* dst);

// GEMM whose B comes from a packer (same contract as gemm otherwise).
template <typename T>
void gemm_packed_b(const GemmKernel<T>& K, i64 m, i64 n, i64 k, const T* A, i64 rsa, i64 csa,
                   const BPacker<T>& B, T beta, T* C, i64 ldc, int nthreads = 0);

// Columns of C that are "wide" image columns: j = oy * Wp + ox, of which
// only ox < OW are outputs. Column j of row i is stored at
// C + i * ldc + oy * OW + ox (a dense OH x OW plane per row); the others are
// dropped. Register tiles inside one output row are stored directly.
struct WideColumns {
  i64 Wp, OW;
  bool by_rows = false;  // set by gemm_rows: wide_row_panels
};

// Whether gemm_rows tiles wide columns row by row (each output row's OW
// columns in panels of NR from its start, the Wp - OW dropped columns never
// computed, no tile crossing a row end) rather than in panels across the
// flat column range: when that takes no more tiles (OW a multiple of NR,
// or nearly: the stem's 112 of 115 columns, 7 panels per row).
inline bool wide_row_panels(const WideColumns& w, i64 n, int NR) {
  const i64 rows = (n + w.Wp - 1) / w.Wp;
  return rows * ((w.OW + NR - 1) / NR) <= (n + NR - 1) / NR;
}

// GEMM with B given as row offsets into an unpacked buffer:
//   C[i][j] := sum_p A[i][p] * Bbase[boff[p] + j] + beta * C[i][j]
// B is never packed. The caller guarantees Bbase[boff[p] + j] is readable
// for every j < n rounded up to a multiple of 64 (the kernels over-read the
// last partial tile and discard those columns). With wide, C's columns are
// mapped as WideColumns describes (ldc: the distance between C's rows).
template <typename T>
void gemm_rows(const GemmKernel<T>& K, i64 m, i64 n, i64 k, const T* A, i64 rsa, i64 csa,
               const T* Bbase, const i64* boff, T beta, T* C, i64 ldc, int nthreads = 0,
               const WideColumns* wide = nullptr);

// Whether gemm() computes this shape as C^T = B^T A^T (a narrow C: see
// gemm.cpp). Callers that could pack B themselves use it to choose gemm().
bool gemm_swaps(int MR, int NR, i64 m, i64 n, i64 k);

// Whether gemm() and gemm_packed_b() read A in place for this shape (few
// columns, A's rows along k: see gemm.cpp); gemm() then never swaps.
template <typename T>
bool gemm_reads_a_in_place(const GemmKernel<T>& K, i64 m, i64 n, i64 k, i64 csa);

// The full GEMM with the given kernel. nthreads <= 0 means "library default";
// threads split output tiles only, never k, so results do not depend on the
// thread count.
template <typename T>
void gemm(const GemmKernel<T>& K, i64 m, i64 n, i64 k,
          const T* A, i64 rsa, i64 csa,
          const T* B, i64 rsb, i64 csb,
          T beta, T* C, i64 ldc, int nthreads = 0);

// Convenience: the active ISA's kernel.
template <typename T>
inline void gemm(i64 m, i64 n, i64 k, const T* A, i64 rsa, i64 csa,
                 const T* B, i64 rsb, i64 csb, T beta, T* C, i64 ldc,
                 int nthreads = 0) {
  gemm(active_gemm_kernel<T>(), m, n, k, A, rsa, csa, B, rsb, csb, beta, C, ldc, nthreads);
}

// Runs the micro-kernel on L1-resident panels for about `seconds` and
// returns the achieved GFLOP/s: the bench's measured FMA peak.
template <typename T>
double ukernel_peak_gflops(const GemmKernel<T>& K, double seconds);

}  // namespace pyconv
