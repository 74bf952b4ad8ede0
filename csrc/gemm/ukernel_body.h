// ukernel_body.h - the register-blocked micro-kernel, written once over a
// small vector-ops struct V and included by each per-ISA file INSIDE an
// anonymous namespace. Every instantiation therefore has internal linkage
// and cannot be merged by the linker into another ISA's code path.
//
// Maths: C[MR x NR] := A*B + beta*C with NR = NV * V::lanes.
// Packed layout (csrc/README.md): a = [kc][MR], b = [kc][NR].
// Vectors run along n (the spatial axis for convolution); A is broadcast.
//
// Required of V: type `reg`, constant `lanes`, and
//   zero(), load(const T*), store(T*, reg), bcast(const T*), fma(a, b, c) = a*b+c,
//   add(a, b), mul(a, b), set1(T).

// B row p is read from b + boff[p] when ROWS (the row-offset
// variant: rows of an unpacked, padded image), else from the packed panel
// b + p*NR. A is the packed micro-panel [kc][AST] (AST >= MR: a short
// kernel multiplies the first MR rows of a taller panel), or, with AROWS,
// MR rows read in place: A[i][p] = a[i * lda + p] (e.g. a weight matrix
// whose rows run along k; nothing packed). Every element sums its k
// products in order whatever MR, AST and the variant.
template <class V, int MR, int NV, bool ROWS, typename T, bool AROWS = false, int AST = MR>
static inline void ukernel_body(i64 kc, const T* __restrict a, const T* __restrict b,
                                const i64* __restrict boff, T* __restrict c, i64 ldc, T beta,
                                i64 lda = 0) {
  constexpr int L = V::lanes;
  typename V::reg acc[MR][NV];
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[i][v] = V::zero();
  // Fetch the C tile meanwhile (its rows are ldc apart: no prefetcher
  // follows them); the k loop unrolled by 4. (Interleaved A/B runs: up to
  // 8% faster on GEMMs and convs, the other shapes within the noise.)
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i) {
    __builtin_prefetch(c + i * ldc, 1, 3);
    __builtin_prefetch(c + i * ldc + NV * L - 1, 1, 3);
  }

#pragma GCC unroll 4
  for (i64 p = 0; p < kc; ++p) {
    typename V::reg bv[NV];
    const T* bp = ROWS ? b + boff[p] : b + p * (NV * L);
    // Rows of an unpacked image: every p is another stream, too many for the
    // hardware prefetcher; fetch this row's next panel (the caller's next jr).
    if (ROWS) __builtin_prefetch(bp + NV * L);
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) bv[v] = V::load(bp + v * L);
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      typename V::reg av = V::bcast(AROWS ? a + i * lda : a + i);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[i][v] = V::fma(av, bv[v], acc[i][v]);
    }
    a += AROWS ? 1 : AST;
  }

  if (beta == T(0)) {
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) V::store(c + i * ldc + v * L, acc[i][v]);
  } else if (beta == T(1)) {
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v)
        V::store(c + i * ldc + v * L, V::add(acc[i][v], V::load(c + i * ldc + v * L)));
  } else {
    typename V::reg bt = V::set1(beta);
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v)
        V::store(c + i * ldc + v * L, V::fma(bt, V::load(c + i * ldc + v * L), acc[i][v]));
  }
}
