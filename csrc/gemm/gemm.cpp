// gemm.cpp - packing and the Goto/BLIS loop nest:
//   jc (NC columns of B/C) -> pc (KC of k; pack B) -> ic (MC rows; pack A)
//     -> jr (NR) -> ir (MR) -> micro-kernel
// Threads split the output into a tm x tn grid of tile-aligned blocks; each
// thread runs the serial nest on its block with private packed buffers. The k
// loop is never split, so every C element sees the same sequence of
// operations whatever the thread count: results are bit-identical.
#include "gemm/gemm.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

#include "common.h"
#include "cpu/parallel.h"

#ifdef _OPENMP
#include <omp.h>
#else
inline int omp_get_thread_num() { return 0; }
#endif

namespace pyconv {

template <typename T>
void pack_stream_panel(const T** src, i64 nr, i64 kc, int NR, T* dst) {
  const auto simd = active_gemm_kernel<T>().pack_streams;  // SIMD transposes, if any
  // A partial panel streams zeros for its missing columns, so it takes the
  // SIMD packer too (kc never exceeds a kernel's KC of 256).
  static const T zeros[1024] = {};
  if (simd && NR % 8 == 0 && NR <= 64 && (nr == NR || kc <= 1024)) {
    for (i64 t = nr; t < NR; ++t) src[t] = zeros;
    simd(src, kc, NR, dst);
  } else if (nr == 16 && NR == 16) {
    for (i64 q = 0; q < kc; ++q)
      for (int t = 0; t < 16; ++t) dst[q * 16 + t] = src[t][q];
  } else if (nr == 8 && NR == 8) {
    for (i64 q = 0; q < kc; ++q)
      for (int t = 0; t < 8; ++t) dst[q * 8 + t] = src[t][q];
  } else {
    for (i64 q = 0; q < kc; ++q) {
      for (i64 t = 0; t < nr; ++t) dst[q * NR + t] = src[t][q];
      for (i64 t = nr; t < NR; ++t) dst[q * NR + t] = T(0);
    }
  }
}
template void pack_stream_panel<float>(const float**, i64, i64, int, float*);
template void pack_stream_panel<double>(const double**, i64, i64, int, double*);

namespace {

// Deals kc runs of len contiguous values (run p at src + p * step) out to
// R-wide micro-panels [ceil(len/R)][kc][R], zero-padding the last panel.
// This is packing A when its columns are contiguous (R = MR, a run per k
// step of mc rows) and B when its rows are (R = NR). Steps go in groups of
// 8, panel by panel within a group: the group's runs stay in L1 and each
// panel receives 8 * R values in a row. (Step by step writes one piece to
// every panel at a stride of kc * R; panel by panel over all of kc reads kc
// runs at stride `step` per panel. Both strides tend to be multiples of
// 2 KiB, so either order alone thrashed a few L1 sets.) With prefetch_next,
// the runs that follow (the caller's next block) are fetched meanwhile: short
// runs are too short for the hardware prefetcher.
template <int R, typename T>
inline void pack_runs_fixed(i64 kc, i64 len, const T* src, i64 step, T* dst, bool prefetch_next) {
  const i64 full = len / R, rem = len - full * R, panel = kc * R;
  for (i64 p0 = 0; p0 < kc; p0 += 8) {
    const i64 p1 = std::min<i64>(kc, p0 + 8);
    if (prefetch_next)
      for (i64 p = p0; p < p1; ++p)
        for (i64 b = 0; b < len * i64(sizeof(T)); b += 64)
          __builtin_prefetch(reinterpret_cast<const char*>(src + p * step + len) + b);
    for (i64 ip = 0; ip < full; ++ip) {
      T* d = dst + ip * panel;
      for (i64 p = p0; p < p1; ++p) std::memcpy(d + p * R, src + p * step + ip * R, sizeof(T) * R);
    }
    if (rem) {
      T* d = dst + full * panel;
      for (i64 p = p0; p < p1; ++p) {
        const T* s = src + p * step + full * R;
        i64 i = 0;
        for (; i < rem; ++i) d[p * R + i] = s[i];
        for (; i < R; ++i) d[p * R + i] = T(0);
      }
    }
  }
}

template <typename T>
void pack_runs(int R, i64 kc, i64 len, const T* src, i64 step, T* dst, bool prefetch_next) {
  switch (R) {  // a constant width makes each memcpy a few inline vector moves
    case 4: return pack_runs_fixed<4>(kc, len, src, step, dst, prefetch_next);
    case 6: return pack_runs_fixed<6>(kc, len, src, step, dst, prefetch_next);
    case 8: return pack_runs_fixed<8>(kc, len, src, step, dst, prefetch_next);
    case 14: return pack_runs_fixed<14>(kc, len, src, step, dst, prefetch_next);
    case 16: return pack_runs_fixed<16>(kc, len, src, step, dst, prefetch_next);
    case 32: return pack_runs_fixed<32>(kc, len, src, step, dst, prefetch_next);
  }
  for (i64 p = 0; p < kc; ++p)
    for (i64 i = 0; i < len; i += R)
      for (i64 t = 0; t < R; ++t) dst[i * kc + p * R + t] = i + t < len ? src[p * step + i + t] : T(0);
}

// Packs an mc x kc block of A into MR-row micro-panels: [mc/MR][kc][MR],
// zero-padding the last panel's missing rows.
template <typename T>
void pack_a(int MR, i64 mc, i64 kc, const T* A, i64 rsa, i64 csa, T* dst,
            void (*pack_a6)(const T*, i64, i64, i64, T*) = nullptr) {
  if (pack_a6 && MR == 6 && csa == 1 && rsa != 1) {
    for (i64 i0 = 0; i0 < mc; i0 += 6, dst += kc * 6)
      pack_a6(A + i0 * rsa, rsa, std::min<i64>(6, mc - i0), kc, dst);
    return;
  }
  if (rsa == 1) {  // columns contiguous; prefetch when the block's rows span more than L2
    const bool far = double(csa) * double(kc) * sizeof(T) > double(1 << 20);
    return pack_runs(MR, kc, mc, A, csa, dst, far);
  }
  for (i64 i0 = 0; i0 < mc; i0 += MR) {
    const i64 mr = std::min<i64>(MR, mc - i0);
    const T* src = A + i0 * rsa;
    // Rows of A run along k: read each row, scatter into the panel.
    for (i64 i = 0; i < mr; ++i) {
      const T* s = src + i * rsa;
      T* d = dst + i;
      if (csa == 1)
        for (i64 p = 0; p < kc; ++p) d[p * MR] = s[p];
      else
        for (i64 p = 0; p < kc; ++p) d[p * MR] = s[p * csa];
    }
    for (i64 i = mr; i < MR; ++i)
      for (i64 p = 0; p < kc; ++p) dst[p * MR + i] = T(0);
    dst += kc * MR;
  }
}

// Packs a kc x nc block of B into NR-column micro-panels: [nc/NR][kc][NR],
// zero-padding the last panel's missing columns.
template <typename T>
void pack_b(int NR, i64 kc, i64 nc, const T* B, i64 rsb, i64 csb, T* dst) {
  if (csb == 1) return pack_runs(NR, kc, nc, B, rsb, dst, false);  // rows contiguous
  const i64 panel = kc * NR;
  // Columns of B run along k (e.g. a transposed operand): read the NR
  // column streams side by side and write each panel row whole (writing
  // column by column into the panel ran at a fraction of the speed).
  const T* src[64];
  for (i64 j0 = 0; j0 < nc; j0 += NR, dst += panel) {
    const i64 nr = std::min<i64>(NR, nc - j0);
    for (i64 j = 0; j < nr; ++j) src[j] = B + (j0 + j) * csb;
    if (rsb == 1) {
      pack_stream_panel(src, nr, kc, NR, dst);
    } else {
      for (i64 p = 0; p < kc; ++p) {
        for (i64 j = 0; j < nr; ++j) dst[p * NR + j] = src[j][p * rsb];
        for (i64 j = nr; j < NR; ++j) dst[p * NR + j] = T(0);
      }
    }
  }
}

template <typename T>
struct StridedB {
  const T* B;
  i64 rsb, csb;
  static void pack(const void* ctx, i64 p0, i64 kc, i64 j0, i64 nc, int NR, T* dst) {
    const StridedB* s = static_cast<const StridedB*>(ctx);
    pack_b(NR, kc, nc, s->B + p0 * s->rsb + j0 * s->csb, s->rsb, s->csb, dst);
  }
};

// Splits k into equal blocks of at most kc_max (k = 576 with KC = 256 gives
// 3 x 192 rather than 256 + 256 + 64, whose short block pays the C tile
// load/store for little work). Depends on k only, so results stay
// independent of the thread count.
inline i64 balanced_kc(i64 kc_max, i64 k) {
  const i64 blocks = (k + kc_max - 1) / kc_max;
  return (k + blocks - 1) / blocks;
}

// Edge micro-tiles (nr < NR, or mr < MR without a short kernel) are
// computed into a local tile with beta = 0 and merged, so the kernels only
// ever see full tiles (a short kernel's rows being its full tile). Full tiles
// call the kernel directly (no callable object is built per tile: copying
// one through the stack cost a store-forwarding stall per tile, which
// dominated GEMMs with small k).
template <typename T>
void merge_edge(const T* tmp, int NR, i64 mr, i64 nr, T* c, i64 ldc, T beta) {
  for (i64 i = 0; i < mr; ++i)
    for (i64 j = 0; j < nr; ++j) {
      T* cij = c + i * ldc + j;
      *cij = beta == T(0) ? tmp[i * NR + j] : tmp[i * NR + j] + beta * *cij;
    }
}

// The kernels for a row tile of mr rows and the rows they compute: a
// short pair for a last tile of few rows where the table has one (only
// those rows of C are touched), else the full pair. A tile whose mr is
// less than that (a 1-row tile on a 2-row kernel) goes through a local
// copy and merge_edge, like a partial column panel.
template <typename T>
struct TileKernel {
  ukernel_fn<T> fn;
  ukernel_rows_fn<T> fn_rows;
  i64 rows;
};
template <typename T>
inline TileKernel<T> tile_kernel(const GemmKernel<T>& K, i64 mr) {
  if (const auto* s = short_rows_for(K, mr)) return {s->fn, s->fn_rows, s->rows};
  return {K.fn, K.fn_rows, K.mr};
}

// Columns of B packed at a time. The kernel's NC sizes the packed B block
// for L3, where it waits to be reused by the next MC rows of A. With all of
// m in one row block there is no such reuse: each B panel is used right
// after packing, so a block of about 256 KiB keeps it in L2 (packing 4 MB
// of B for a 49-row product and reading it back from L3 cost more than the
// products). Never changes a result: the k loop is the same.
template <typename T>
inline i64 block_nc(const GemmKernel<T>& K, i64 m) {
  if (m > K.mc) return K.nc;
  const i64 cols = (i64(256) << 10) / (i64(sizeof(T)) * K.kc);
  return std::min<i64>(K.nc, std::max<i64>(K.nr, cols / K.nr * K.nr));
}

// The outer loops of the packed-B nests over columns [n0, n1): blocks of NC
// columns, then slabs of KC along k, each slab's B block packed into bufB
// before body(jc, nc, pc, kc, beta_eff) runs it (beta on the first slab, 1
// after).
template <typename T, typename Body>
inline void for_each_b_block(const GemmKernel<T>& K, i64 n0, i64 n1, i64 k, i64 NC,
                             const BPacker<T>& B, T beta, T* bufB, Body body) {
  const i64 KC = balanced_kc(K.kc, k);
  for (i64 jc = n0; jc < n1; jc += NC) {
    const i64 nc = std::min<i64>(NC, n1 - jc);
    for (i64 pc = 0; pc < k; pc += KC) {
      const i64 kc = std::min<i64>(KC, k - pc);
      B.fn(B.ctx, pc, kc, jc, nc, K.nr, bufB);
      body(jc, nc, pc, kc, pc == 0 ? beta : T(1));
    }
  }
}

// The serial loop nest over the block C[m0:m1, n0:n1] with packed B.
template <typename T>
void gemm_serial(const GemmKernel<T>& K, i64 m0, i64 m1, i64 n0, i64 n1, i64 k, i64 NC,
                 const T* A, i64 rsa, i64 csa, const BPacker<T>& B,
                 T beta, T* C, i64 ldc, T* bufA, T* bufB) {
  const int MR = K.mr, NR = K.nr;
  for_each_b_block(K, n0, n1, k, NC, B, beta, bufB, [&](i64 jc, i64 nc, i64 pc, i64 kc, T beta_eff) {
    for (i64 ic = m0; ic < m1; ic += K.mc) {
      const i64 mc = std::min<i64>(K.mc, m1 - ic);
      pack_a(MR, mc, kc, A + ic * rsa + pc * csa, rsa, csa, bufA, K.pack_a6);
      for (i64 jr = 0; jr < nc; jr += NR) {
        const i64 nr = std::min<i64>(NR, nc - jr);
        const T* bp = bufB + jr * kc;
        for (i64 ir = 0; ir < mc; ir += MR) {
          const T* ap = bufA + ir * kc;
          const i64 mr = std::min<i64>(MR, mc - ir);
          T* c = C + (ic + ir) * ldc + jc + jr;
          const TileKernel<T> tk = tile_kernel(K, mr);
          if (nr == NR && mr == tk.rows) {
            tk.fn(kc, ap, bp, c, ldc, beta_eff);
          } else {
            alignas(64) T tmp[16 * 64];  // mr*nr <= 16*64 for every kernel
            tk.fn(kc, ap, bp, tmp, NR, T(0));
            merge_edge(tmp, NR, mr, nr, c, ldc, beta_eff);
          }
        }
      }
    }
  });
}

// The first NR/2 columns of a packed [kc][NR] panel as a [kc][NR/2] panel.
template <typename T>
void narrow_panel(const T* src, i64 kc, int NR, T* dst) {
  const int h = NR / 2;
  for (i64 p = 0; p < kc; ++p) std::memcpy(dst + p * h, src + p * NR, sizeof(T) * h);
}

// The serial loop nest with A read in place (K.fn_arows; A's rows run along
// k, csa == 1): B is packed as in gemm_serial, A never is, except a last row
// tile of fewer than MR rows (the kernel would read past A's end), packed
// into bufA. Row tiles outside, column panels inside: each A tile is fetched
// once and serves every panel of the B block. A last panel of one or two
// columns (ResNet's 7 x 7 maps: 49 = 3 x 16 + 1) is dot products of the A
// rows with those columns copied out contiguous (K.dot_rows), one of at most
// NR/2 runs the half-width kernel from a narrowed copy; bufH holds either.
template <typename T>
void gemm_arows_serial(const GemmKernel<T>& K, i64 m0, i64 m1, i64 n0, i64 n1, i64 k, i64 NC,
                       const T* A, i64 rsa, const BPacker<T>& B, T beta, T* C, i64 ldc, T* bufA,
                       T* bufB, T* bufH) {
  const int MR = K.mr, NR = K.nr, H = NR / 2;
  for_each_b_block(K, n0, n1, k, NC, B, beta, bufB, [&](i64 jc, i64 nc, i64 pc, i64 kc, T beta_eff) {
    const i64 last = (nc - 1) / NR * NR, rest = nc - last;  // the last panel
    const bool dots = K.dot_rows && rest <= 2, half = !dots && K.fn_arows_half && rest <= H;
    const T* bcols[2] = {bufH, bufH + kc};
    if (dots)
      for (i64 t = 0; t < rest; ++t)
        for (i64 p = 0; p < kc; ++p) bufH[t * kc + p] = bufB[last * kc + p * NR + t];
    if (half) narrow_panel(bufB + last * kc, kc, NR, bufH);
    for (i64 ir = m0; ir < m1; ir += MR) {
      const i64 mr = std::min<i64>(MR, m1 - ir);
      const T* ap = A + ir * rsa + pc;
      const TileKernel<T> tk = tile_kernel(K, mr);  // (for a last tile under MR rows)
      if (mr < MR) pack_a(MR, mr, kc, ap, rsa, i64(1), bufA, K.pack_a6);
      for (i64 jr = 0; jr < nc; jr += NR) {
        const i64 nr = std::min<i64>(NR, nc - jr);
        T* c = C + ir * ldc + jc + jr;
        alignas(64) T tmp[16 * 64];  // mr*nr <= 16*64 for every kernel
        if (dots && jr == last) {
          const T* arows[16];  // MR <= 16
          for (i64 i = 0; i < mr; ++i) arows[i] = ap + i * rsa;
          K.dot_rows(mr, nr, kc, arows, bcols, beta_eff, c, ldc);
        } else if (mr < MR && nr == NR && tk.rows == mr) {
          tk.fn(kc, bufA, bufB + jr * kc, c, ldc, beta_eff);
        } else if (mr < MR) {
          tk.fn(kc, bufA, bufB + jr * kc, tmp, NR, T(0));
          merge_edge(tmp, NR, mr, nr, c, ldc, beta_eff);
        } else if (nr == NR) {
          K.fn_arows(kc, ap, rsa, bufB + jr * kc, c, ldc, beta_eff);
        } else if (half && jr == last) {
          K.fn_arows_half(kc, ap, rsa, bufH, tmp, H, T(0));
          merge_edge(tmp, H, mr, nr, c, ldc, beta_eff);
        } else {
          K.fn_arows(kc, ap, rsa, bufB + jr * kc, tmp, NR, T(0));
          merge_edge(tmp, NR, mr, nr, c, ldc, beta_eff);
        }
      }
    }
  });
}

// merge_edge for wide columns (WideColumns): tile columns jr.. of rows
// c.. that are outputs go to their dense places; the rest are dropped.
template <typename T>
void merge_wide(const T* tmp, int NR, i64 mr, i64 nr, T* c, i64 ldc, i64 jr, const WideColumns& w,
                T beta) {
  i64 oy = jr / w.Wp, ox = jr - oy * w.Wp;
  for (i64 t = 0; t < nr; ++oy, ox = 0) {  // the tile's pieces of each wide row
    const i64 run = std::min(nr - t, w.Wp - ox);
    const i64 valid = std::max<i64>(0, std::min(run, w.OW - ox));
    for (i64 i = 0; i < mr; ++i) {
      const T* s = tmp + i * NR + t;
      T* d = c + i * ldc + oy * w.OW + ox;
      if (beta == T(0))
        for (i64 u = 0; u < valid; ++u) d[u] = s[u];
      else
        for (i64 u = 0; u < valid; ++u) d[u] = s[u] + beta * d[u];
    }
    t += run;
  }
}

// The serial loop nest with B read unpacked through row offsets. Wide
// columns are tiled row by row when wide_row_panels says so (each row's
// part of [n0, n1) from its first column), else in panels from n0.
template <typename T>
void gemm_rows_serial(const GemmKernel<T>& K, i64 m0, i64 m1, i64 n0, i64 n1, i64 k,
                      const T* A, i64 rsa, i64 csa, const T* Bbase, const i64* boff,
                      T beta, T* C, i64 ldc, T* bufA, const WideColumns* wide) {
  const int MR = K.mr, NR = K.nr;
  const i64 KC = balanced_kc(K.kc, k);
  const bool by_rows = wide && wide->by_rows;
  for (i64 pc = 0; pc < k; pc += KC) {
    const i64 kc = std::min<i64>(KC, k - pc);
    const T beta_eff = pc == 0 ? beta : T(1);
    for (i64 ic = m0; ic < m1; ic += K.mc) {
      const i64 mc = std::min<i64>(K.mc, m1 - ic);
      pack_a(MR, mc, kc, A + ic * rsa + pc * csa, rsa, csa, bufA, K.pack_a6);
      // Columns [jr, jr + nr) against every row tile of the block.
      auto panel = [&](i64 jr, i64 nr) {
        const T* bp = Bbase + jr;
        for (i64 ir = 0; ir < mc; ir += MR) {
          const T* ap = bufA + ir * kc;
          const i64 mr = std::min<i64>(MR, mc - ir);
          T* c = C + (ic + ir) * ldc;
          // With wide columns, a full tile inside one output row goes
          // straight to its dense place; others take the edge path.
          const i64 oy = wide ? jr / wide->Wp : 0, ox = wide ? jr - oy * wide->Wp : 0;
          const TileKernel<T> tk = tile_kernel(K, mr);
          if (nr == NR && mr == tk.rows && (!wide || ox + NR <= wide->OW)) {
            tk.fn_rows(kc, ap, bp, boff + pc, wide ? c + oy * wide->OW + ox : c + jr, ldc, beta_eff);
          } else {
            alignas(64) T tmp[16 * 64];
            tk.fn_rows(kc, ap, bp, boff + pc, tmp, NR, T(0));
            if (wide)
              merge_wide(tmp, NR, mr, nr, c, ldc, jr, *wide, beta_eff);
            else
              merge_edge(tmp, NR, mr, nr, c + jr, ldc, beta_eff);
          }
        }
      };
      if (by_rows) {
        for (i64 row = n0 / wide->Wp * wide->Wp; row < n1; row += wide->Wp) {
          const i64 e = std::min(n1, row + wide->OW);
          for (i64 jr = std::max(n0, row); jr < e; jr += NR) panel(jr, std::min<i64>(NR, e - jr));
        }
      } else {
        for (i64 jr = n0; jr < n1; jr += NR) panel(jr, std::min<i64>(NR, n1 - jr));
      }
    }
  }
}

// Packed-buffer storage for the threads of one call, owned by the calling
// thread: concurrent calls from different Python threads never share it.
struct GemmWorkspace {
  std::vector<AlignedBuffer> bufs;
};
thread_local GemmWorkspace t_ws;

// Cost of one block in flop units: its products plus packing its A rows
// and B columns over all of k. A packed element costs about a cycle, in
// which a core does 16 to 32 flops: hence the weight 16.
inline double block_cost(double bm, double bn, double k) {
  return 2.0 * bm * bn * k + 16.0 * (bm + bn) * k;
}

// Chooses a tm x tn block grid (tm * tn == nt) minimising the largest
// block's cost; returns that cost.
double thread_grid(int nt, i64 m, i64 n, i64 k, int MR, int NR, int* tm_out, int* tn_out) {
  const i64 tiles_m = (m + MR - 1) / MR, tiles_n = (n + NR - 1) / NR;
  double best = 1e300;
  int btm = 1, btn = 1;
  for (int tm = 1; tm <= nt; ++tm) {
    if (nt % tm) continue;
    const int tn = nt / tm;
    if (tm > tiles_m || tn > tiles_n) continue;
    const double bm = double((tiles_m + tm - 1) / tm) * MR;
    const double bn = double((tiles_n + tn - 1) / tn) * NR;
    const double cost = block_cost(bm, bn, double(k));
    if (cost < best) { best = cost; btm = tm; btn = tn; }
  }
  *tm_out = btm;
  *tn_out = btn;
  return best;
}

// Splits `tiles` tiles into `parts` near-equal contiguous ranges.
inline i64 split_point(i64 tiles, int parts, int idx, int tile) {
  return (tiles * idx / parts) * tile;
}

// Splits C into a grid of tile-aligned blocks and calls
// body(m0, m1, n0, n1, scratch) for each, with `bytes` of private 64-byte
// aligned scratch per thread (allocated here, outside the parallel region).
// Large products get up to 4 blocks per thread, handed out dynamically, so
// a thread that loses its core to another process does not hold up the
// call, unless the extra blocks' repeated packing costs more than 5% (long
// k with moderate m and n: ResNet's 1x1 layers on 7x7 maps). Each block
// covers the full k range, so the blocking never changes a result.
template <typename T, typename Body>
void parallel_blocks(const GemmKernel<T>& K, i64 m, i64 n, i64 k, int nthreads, std::size_t bytes,
                     Body body) {
  const double flops = 2.0 * double(m) * double(n) * double(k);
  const int nt = nthreads > 0 ? nthreads : threads_for(flops, 4.0e5);
  int tm = 1, tn = 1;
  if (nt > 1) {
    // Per-thread cost with pt blocks each: pt times the largest block.
    const double one = thread_grid(nt, m, n, k, K.mr, K.nr, &tm, &tn);
    const int max_pt = (int)std::max(1.0, std::min(4.0, flops / (nt * 4.0e6)));
    for (int pt = max_pt; pt > 1; pt /= 2) {
      int am, an;
      const double c = pt * thread_grid(nt * pt, m, n, k, K.mr, K.nr, &am, &an);
      if (am * an == nt * pt && c <= 1.05 * one) {
        tm = am;
        tn = an;
        break;
      }
    }
  }
  const int nblocks = tm * tn;
  const int nteam = std::min(nt, nblocks);
  GemmWorkspace& ws = t_ws;
  if ((int)ws.bufs.size() < nteam) ws.bufs.resize(nteam);
  std::vector<char*> base(nteam);
  for (int t = 0; t < nteam; ++t) base[t] = static_cast<char*>(ws.bufs[t].reserve(bytes));
  const i64 tiles_m = (m + K.mr - 1) / K.mr, tiles_n = (n + K.nr - 1) / K.nr;
  auto run = [&](int blk, char* buf) {
    const int bi = blk / tn, bj = blk % tn;
    const i64 m0 = split_point(tiles_m, tm, bi, K.mr);
    const i64 m1 = std::min<i64>(m, split_point(tiles_m, tm, bi + 1, K.mr));
    const i64 n0 = split_point(tiles_n, tn, bj, K.nr);
    const i64 n1 = std::min<i64>(n, split_point(tiles_n, tn, bj + 1, K.nr));
    if (m0 < m1 && n0 < n1) body(m0, m1, n0, n1, buf);
  };
  if (nteam <= 1) {
    for (int blk = 0; blk < nblocks; ++blk) run(blk, base[0]);
    return;
  }
  ExceptionCapture capture;
#pragma omp parallel num_threads(nteam)
  {
    char* buf = base[omp_get_thread_num()];
#pragma omp for schedule(dynamic, 1)
    for (int blk = 0; blk < nblocks; ++blk) capture.run([&] { run(blk, buf); });
  }
  capture.rethrow();
}

// C := beta * C for k == 0.
template <typename T>
void scale_c(i64 m, i64 n, T beta, T* C, i64 ldc) {
  for (i64 i = 0; i < m; ++i)
    for (i64 j = 0; j < n; ++j) {
      T* cij = C + i * ldc + j;
      *cij = beta == T(0) ? T(0) : beta * *cij;
    }
}

inline std::size_t round64(std::size_t b) { return (b + 63) & ~std::size_t(63); }

}  // namespace

namespace {

// Register-tile rows/columns actually computed for an m x n product.
inline double padded_area(i64 m, i64 n, int MR, int NR) {
  return double((m + MR - 1) / MR * MR) * double((n + NR - 1) / NR * NR);
}

thread_local AlignedBuffer t_swap;  // C^T of a swapped product

// C := Ct^T + beta * C, with Ct row-major [n][m] (ld m). 16 x 16 blocks, so
// both sides are read and written along cache lines. nthreads as gemm's.
template <typename T>
void add_transposed(i64 m, i64 n, const T* Ct, T beta, T* C, i64 ldc, int nthreads) {
  constexpr i64 B = 16;
  const i64 bm = (m + B - 1) / B;
  const int by_size = threads_for(double(m) * double(n) * 2 * sizeof(T), 1.0e6);
  const int nt = nthreads > 0 ? std::min(nthreads, by_size) : by_size;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (i64 ib = 0; ib < bm; ++ib) {
    const i64 i0 = ib * B, i1 = std::min(m, i0 + B);
    for (i64 j0 = 0; j0 < n; j0 += B) {
      const i64 j1 = std::min(n, j0 + B);
      for (i64 i = i0; i < i1; ++i) {
        T* c = C + i * ldc;
        if (beta == T(0))
          for (i64 j = j0; j < j1; ++j) c[j] = Ct[j * m + i];
        else
          for (i64 j = j0; j < j1; ++j) c[j] = Ct[j * m + i] + beta * c[j];
      }
    }
  }
}

}  // namespace

// A narrow C (n well under a few NR panels) wastes most of its last column
// tile: 49 columns of a ResNet 7x7 map fill 4 x 16 with 15 to spare. The
// transposed product C^T = B^T A^T puts n on the MR side instead (49 rows:
// 9 x 6 with 5 to spare). Worth it when that computes clearly fewer padded
// elements and k is long enough to pay for transposing the result back.
// Depends on the shape only, and the sum over k for each element is the same
// sequence either way (bit-identical with beta == 0).
bool gemm_swaps(int MR, int NR, i64 m, i64 n, i64 k) {
  constexpr double kMaxScratch = double(i64(1) << 22);  // elements of C^T
  if (n >= 8 * NR || k < 32 || double(m) * double(n) > kMaxScratch) return false;
  return padded_area(n, m, MR, NR) < 0.9 * padded_area(m, n, MR, NR);
}

// A product with few columns uses each A element for only n products, so
// packing A is a large share of it; with A's rows along k (csa == 1) and an
// in-place-A kernel, A is read where it is (gemm_arows_serial). This also
// beats the transposed product of gemm_swaps, whose B' = A^T would be packed
// by transposing (ResNet's 7x7x512 layer at batch 1: 15% of the call).
template <typename T>
bool gemm_reads_a_in_place(const GemmKernel<T>& K, i64 m, i64 n, i64 k, i64 csa) {
  return K.fn_arows && csa == 1 && m >= K.mr && n <= 4 * K.nr && k >= 32;
}
template bool gemm_reads_a_in_place<float>(const GemmKernel<float>&, i64, i64, i64, i64);
template bool gemm_reads_a_in_place<double>(const GemmKernel<double>&, i64, i64, i64, i64);

namespace {

// C := a b (+ C) for k == 1 and beta 0 or 1: the kernel's arithmetic
// exactly (one rounded product added to a +0 accumulator, so a -0 product
// gives +0, then C added), without a register tile per dozen stores. A
// fully connected layer's weight gradient at batch 1.
template <typename T>
void outer_product(i64 m, i64 n, const T* A, i64 rsa, const T* B, i64 csb, T beta, T* C, i64 ldc,
                   int nthreads) {
  const int by_size = threads_for(double(m) * double(n) * 2 * sizeof(T), 1.0e6);
  const int nt = nthreads > 0 ? std::min(nthreads, by_size) : by_size;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (i64 i = 0; i < m; ++i) {
    const T a = A[i * rsa];
    T* __restrict c = C + i * ldc;
    if (csb == 1) {
      const T* __restrict b = B;
      if (beta == T(0))
        for (i64 j = 0; j < n; ++j) c[j] = a * b[j] + T(0);
      else
        for (i64 j = 0; j < n; ++j) c[j] = (a * b[j] + T(0)) + c[j];
    } else {
      for (i64 j = 0; j < n; ++j) {
        const T ab = a * B[j * csb] + T(0);
        c[j] = beta == T(0) ? ab : ab + c[j];
      }
    }
  }
}

}  // namespace

template <typename T>
void gemm(const GemmKernel<T>& K, i64 m, i64 n, i64 k, const T* A, i64 rsa, i64 csa,
          const T* B, i64 rsb, i64 csb, T beta, T* C, i64 ldc, int nthreads) {
  if (m <= 0 || n <= 0) return;
  if (k == 1 && (beta == T(0) || beta == T(1)))
    return outer_product(m, n, A, rsa, B, csb, beta, C, ldc, nthreads);
  // Fewer rows than a register tile (x W^T, dy W of a fully connected layer
  // at batch 1 .. MR-1) would pack all of B for one short tile per panel.
  if (m < K.mr) {
    // B's columns run along k (W's rows in x W^T): C^T = B^T A^T is a narrow
    // product that reads B^T in place (gemm_reads_a_in_place).
    if (rsb == 1 && gemm_reads_a_in_place(K, n, m, k, i64(1))) {
      const StridedB<T> at{A, csa, rsa};  // B' = A^T
      const BPacker<T> bp{&StridedB<T>::pack, &at};
      if (m == 1) return gemm_packed_b(K, n, 1, k, B, csb, i64(1), bp, beta, C, i64(1), nthreads);
      T* Ct = static_cast<T*>(t_swap.reserve(sizeof(T) * std::size_t(m) * std::size_t(n)));
      gemm_packed_b(K, n, m, k, B, csb, i64(1), bp, T(0), Ct, m, nthreads);
      return add_transposed(m, n, Ct, beta, C, ldc, nthreads);
    }
    // B's rows are contiguous (dy W): the row-offset kernel reads them in
    // place; the last n % NR columns are packed as usual (so no tile reads
    // past the end of B's last row). Not when the rows are a multiple of
    // 2 KiB apart: the k rows of a panel would then share a few L1 sets
    // (4096 columns: 2.4x slower than packing).
    if (csb == 1 && n >= K.nr && k >= 32 && (rsb * i64(sizeof(T))) % 2048 != 0) {
      const i64 nm = n / K.nr * K.nr;
      std::vector<i64> boff(k);
      for (i64 p = 0; p < k; ++p) boff[p] = p * rsb;
      gemm_rows(K, m, nm, k, A, rsa, csa, B, boff.data(), beta, C, ldc, nthreads);
      if (nm == n) return;
      const StridedB<T> tail{B + nm, rsb, i64(1)};
      return gemm_packed_b(K, m, n - nm, k, A, rsa, csa, BPacker<T>{&StridedB<T>::pack, &tail}, beta,
                           C + nm, ldc, nthreads);
    }
  }
  if (!gemm_reads_a_in_place(K, m, n, k, csa) && gemm_swaps(K.mr, K.nr, m, n, k)) {
    PYCONV_CHECK(ldc >= n, "gemm: ldc < n");
    T* Ct = static_cast<T*>(t_swap.reserve(sizeof(T) * std::size_t(m) * std::size_t(n)));
    const StridedB<T> at{A, csa, rsa};  // B' = A^T
    gemm_packed_b(K, n, m, k, B, csb, rsb, BPacker<T>{&StridedB<T>::pack, &at}, T(0), Ct, m,
                  nthreads);
    add_transposed(m, n, Ct, beta, C, ldc, nthreads);
    return;
  }
  const StridedB<T> sb{B, rsb, csb};
  gemm_packed_b(K, m, n, k, A, rsa, csa, BPacker<T>{&StridedB<T>::pack, &sb}, beta, C, ldc,
                nthreads);
}

template <typename T>
void gemm_packed_b(const GemmKernel<T>& K, i64 m, i64 n, i64 k, const T* A, i64 rsa, i64 csa,
                   const BPacker<T>& B, T beta, T* C, i64 ldc, int nthreads) {
  if (m <= 0 || n <= 0) return;
  PYCONV_CHECK(ldc >= n, "gemm: ldc < n");
  if (k <= 0) return scale_c(m, n, beta, C, ldc);
  const i64 kc = std::min<i64>(K.kc, k);
  const i64 mc = std::min<i64>(K.mc, ((m + K.mr - 1) / K.mr) * K.mr);
  const i64 NC = block_nc(K, m);
  const i64 nc = std::min<i64>(NC, ((n + K.nr - 1) / K.nr) * K.nr);
  const std::size_t a_bytes = round64(sizeof(T) * std::size_t(mc) * kc);
  const std::size_t b_bytes = sizeof(T) * std::size_t(nc) * kc;
  if (gemm_reads_a_in_place(K, m, n, k, csa)) {
    const std::size_t bb = round64(b_bytes), h_bytes = sizeof(T) * std::size_t(K.nr / 2) * kc;
    parallel_blocks(K, m, n, k, nthreads, a_bytes + bb + h_bytes,
                    [&](i64 m0, i64 m1, i64 n0, i64 n1, char* buf) {
                      gemm_arows_serial(K, m0, m1, n0, n1, k, NC, A, rsa, B, beta, C, ldc,
                                        reinterpret_cast<T*>(buf), reinterpret_cast<T*>(buf + a_bytes),
                                        reinterpret_cast<T*>(buf + a_bytes + bb));
                    });
    return;
  }
  parallel_blocks(K, m, n, k, nthreads, a_bytes + b_bytes,
                  [&](i64 m0, i64 m1, i64 n0, i64 n1, char* buf) {
                    gemm_serial(K, m0, m1, n0, n1, k, NC, A, rsa, csa, B, beta, C, ldc,
                                reinterpret_cast<T*>(buf), reinterpret_cast<T*>(buf + a_bytes));
                  });
}

template <typename T>
void gemm_rows(const GemmKernel<T>& K, i64 m, i64 n, i64 k, const T* A, i64 rsa, i64 csa,
               const T* Bbase, const i64* boff, T beta, T* C, i64 ldc, int nthreads,
               const WideColumns* wide) {
  if (m <= 0 || n <= 0) return;
  PYCONV_CHECK(wide ? wide->OW <= wide->Wp && ldc >= (n + wide->Wp - 1) / wide->Wp * wide->OW
                    : ldc >= n,
               "gemm: ldc too small");
  PYCONV_CHECK(k > 0 || !wide, "gemm: wide columns need k > 0");
  if (k <= 0) return scale_c(m, n, beta, C, ldc);
  const i64 kc = std::min<i64>(K.kc, k);
  const i64 mc = std::min<i64>(K.mc, ((m + K.mr - 1) / K.mr) * K.mr);
  WideColumns w;
  if (wide) {
    w = *wide;
    w.by_rows = wide_row_panels(w, n, K.nr);
  }
  parallel_blocks(K, m, n, k, nthreads, sizeof(T) * std::size_t(mc) * kc,
                  [&](i64 m0, i64 m1, i64 n0, i64 n1, char* buf) {
                    gemm_rows_serial(K, m0, m1, n0, n1, k, A, rsa, csa, Bbase, boff, beta, C, ldc,
                                     reinterpret_cast<T*>(buf), wide ? &w : nullptr);
                  });
}

template <typename T>
double ukernel_peak_gflops(const GemmKernel<T>& K, double seconds) {
  // Panels small enough for L1; C tile reused. Measures the kernel's
  // sustained FMA throughput on one thread.
  const i64 kc = 128;
  AlignedBuffer ba, bb, bc;
  T* a = static_cast<T*>(ba.reserve(sizeof(T) * K.mr * kc));
  T* b = static_cast<T*>(bb.reserve(sizeof(T) * K.nr * kc));
  T* c = static_cast<T*>(bc.reserve(sizeof(T) * K.mr * K.nr));
  for (i64 i = 0; i < K.mr * kc; ++i) a[i] = T(1e-3) * T(i % 7);
  for (i64 i = 0; i < K.nr * kc; ++i) b[i] = T(1e-3) * T(i % 5);
  K.fn(kc, a, b, c, K.nr, T(0));
  using clk = std::chrono::steady_clock;
  double best = 0;
  const auto t_end = clk::now() + std::chrono::duration<double>(seconds);
  while (clk::now() < t_end) {
    const int reps = 2000;
    auto t0 = clk::now();
    for (int r = 0; r < reps; ++r) K.fn(kc, a, b, c, K.nr, T(1));
    const double dt = std::chrono::duration<double>(clk::now() - t0).count();
    const double gf = 2.0 * K.mr * K.nr * kc * reps / dt * 1e-9;
    best = std::max(best, gf);
  }
  volatile T sink = c[0];
  (void)sink;
  return best;
}

template void gemm<float>(const GemmKernel<float>&, i64, i64, i64, const float*, i64, i64,
                          const float*, i64, i64, float, float*, i64, int);
template void gemm<double>(const GemmKernel<double>&, i64, i64, i64, const double*, i64, i64,
                           const double*, i64, i64, double, double*, i64, int);
template void gemm_packed_b<float>(const GemmKernel<float>&, i64, i64, i64, const float*, i64, i64,
                                   const BPacker<float>&, float, float*, i64, int);
template void gemm_packed_b<double>(const GemmKernel<double>&, i64, i64, i64, const double*, i64,
                                    i64, const BPacker<double>&, double, double*, i64, int);
template void gemm_rows<float>(const GemmKernel<float>&, i64, i64, i64, const float*, i64, i64,
                               const float*, const i64*, float, float*, i64, int,
                               const WideColumns*);
template void gemm_rows<double>(const GemmKernel<double>&, i64, i64, i64, const double*, i64, i64,
                                const double*, const i64*, double, double*, i64, int,
                                const WideColumns*);
template double ukernel_peak_gflops<float>(const GemmKernel<float>&, double);
template double ukernel_peak_gflops<double>(const GemmKernel<double>&, double);

}  // namespace pyconv
