// winograd_avx2.cpp - Winograd F(2x2, 3x3) for float32 with AVX2+FMA
// transforms (compiled with -mavx2 -mfma only here) and the active GEMM
// micro-kernel. See winograd.h for the method and its contract.
//
// Layout, per call:
//   XS  [N][C][Hp][2][RL]  the zero-padded input, each row split into its
//       even and odd columns, so the four columns of every tile in a row of
//       tiles are unit-stride vectors: tile tx reads E[tx], O[tx], E[tx+1],
//       O[tx+1] (8 tiles per vector).
//   Upk [16][kblocks][OC/MR][kc][MR]  the transformed weights, packed as the
//       micro-kernel's A panels (once per call).
// Per block of tiles (whole tile rows or parts, across images):
//   V   [16][C][TBp]  transformed input tiles (rows read in place by the
//       row-offset micro-kernel, no packing);
//   M   [16][OCp][TBp]  the 16 GEMM products.
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu/parallel.h"
#include "gemm/gemm.h"
#include "ops/simd_avx2.h"
#include "ops/winograd.h"

namespace pyconv {
namespace {

using V8 = __m256;

// Inputs and weights of magnitude >= 2^40 decline (see winograd.h): below
// it no intermediate can overflow float for any channel count we accept.
constexpr float kLimit = 1099511627776.0f;  // 2^40

thread_local AlignedBuffer t_xs, t_u, t_v, t_m, t_z;  // owned by the calling thread

struct Geometry {
  i64 TH, TW, Hp, RL, plane, T;  // tiles, padded split rows, floats per (n, c) plane
  i64 MR, NR, OCp, MP, KC, NKB;  // GEMM blocking
  i64 TB, TBp;                   // tiles per block, V/M row length
  Geometry(const Conv2dParams& p, const GemmKernel<float>& K, bool weight_grad = false) {
    TH = (p.OH + 1) / 2;
    TW = (p.OW + 1) / 2;
    Hp = 2 * TH + 2;
    RL = (TW + 9 + 7) & ~i64(7);  // E[0..TW] plus an 8-lane over-read
    plane = Hp * 2 * RL;
    T = p.N * TH * TW;
    MR = K.mr;
    NR = K.nr;
    OCp = (p.OC + MR - 1) / MR * MR;
    MP = OCp / MR;
    const i64 kblocks = (p.C + K.kc - 1) / K.kc;  // equal k blocks (as the GEMM does)
    KC = (p.C + kblocks - 1) / kblocks;
    NKB = (p.C + KC - 1) / KC;
    // Per block, all of Upk (16 * OC * C floats) streams through the GEMMs
    // once and V (16 * C * TB) is written and read back: TB ~ 4 * OC keeps
    // the first to a quarter of the second. V stays between 512 KiB (L2)
    // and 4 MiB (L3), so that each V_xi is L2-resident while the A panels of
    // xi pass over it.
    // (Backward-weight's blocks hold V and Z = A dy A^T, 16 * (C + OC) * TB,
    // and each block reads and writes all of dU, 16 * OC * C.)
    const i64 ch = weight_grad ? std::max(p.C, p.OC) : p.C;
    TB = std::clamp<i64>(4 * (weight_grad ? ch : p.OC), 8192 / ch, 65536 / ch);
    TB = std::max<i64>(NR, TB / NR * NR);
    TB = std::min<i64>(TB, (T + NR - 1) / NR * NR);
    TBp = TB + 16;  // the input transform writes up to 8 lanes past a block
    // Per-xi strides of Upk, V and M: the 16 arrays are read or written
    // together, so their starts are staggered by 64 bytes modulo 4 KiB
    // (equal low address bits would put all 16 streams in one L1 set).
    us = stagger(NKB * MP * KC * MR);
    vs = stagger(p.C * TBp);
    ms = stagger(OCp * TBp);
    ws = stagger(p.OC * p.C);
  }
  i64 us, vs, ms, ws;  // (ws: dU [OC][C] of backward-weight)
  static i64 stagger(i64 n) { return (n + 1023) / 1024 * 1024 + 16; }
};

// The padded, column-split input plane (n, c): zeroed once as a whole, then
// row r = iy + PT's padded column pc = ix + PL goes to (pc % 2 ? O : E)[pc
// / 2] (E, O: that row's two halves); columns past 2*TW + 1 are never read.
// (Zeroing row by row cost a call per row: 12% of a small map's time.)
bool fill_plane(const Conv2dParams& p, const Geometry& g, const float* xc, float* plane) {
  std::memset(plane, 0, sizeof(float) * g.plane);
  const i64 n = std::min(p.W, 2 * g.TW + 2 - p.PL);
  if (n <= 0) return true;
  bool ok = true;
  for (i64 r = std::max<i64>(0, p.PT); r < std::min(g.Hp, p.H + p.PT); ++r) {
    float* E = plane + r * 2 * g.RL;
    float* O = E + g.RL;
    float* even_ix = (p.PL % 2 ? O : E) + p.PL / 2;
    float* odd_ix = ((p.PL + 1) % 2 ? O : E) + (p.PL + 1) / 2;
    ok &= split2_avx2(xc + (r - p.PT) * p.W, n, even_ix, odd_ix, true, kLimit);
  }
  return ok;
}

// U = G g G^T for one 3x3 filter (G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1]).
inline void filter_transform(const float* g, float* u) {
  float t[4][3];  // G g
  for (int j = 0; j < 3; ++j) {
    const float g0 = g[j], g1 = g[3 + j], g2 = g[6 + j];
    t[0][j] = g0;
    t[1][j] = 0.5f * (g0 + g1 + g2);
    t[2][j] = 0.5f * (g0 - g1 + g2);
    t[3][j] = g2;
  }
  for (int i = 0; i < 4; ++i) {  // (G g) G^T
    const float a = t[i][0], b = t[i][1], c = t[i][2];
    u[i * 4 + 0] = a;
    u[i * 4 + 1] = 0.5f * (a + b + c);
    u[i * 4 + 2] = 0.5f * (a - b + c);
    u[i * 4 + 3] = c;
  }
}

// The same for 8 filters at once, lane l holding filter l: g[t] are the
// taps, u[xi] the 16 results.
inline void filter_transform8(const V8* g, V8* u) {
  const V8 h = _mm256_set1_ps(0.5f);
  V8 t[4][3];
  for (int j = 0; j < 3; ++j) {
    const V8 g0 = g[j], g1 = g[3 + j], g2 = g[6 + j];
    t[0][j] = g0;
    t[1][j] = _mm256_mul_ps(h, _mm256_add_ps(_mm256_add_ps(g0, g1), g2));
    t[2][j] = _mm256_mul_ps(h, _mm256_add_ps(_mm256_sub_ps(g0, g1), g2));
    t[3][j] = g2;
  }
  for (int i = 0; i < 4; ++i) {
    const V8 a = t[i][0], b = t[i][1], c = t[i][2];
    u[i * 4 + 0] = a;
    u[i * 4 + 1] = _mm256_mul_ps(h, _mm256_add_ps(_mm256_add_ps(a, b), c));
    u[i * 4 + 2] = _mm256_mul_ps(h, _mm256_add_ps(_mm256_sub_ps(a, b), c));
    u[i * 4 + 3] = c;
  }
}


// Transformed weights of output channels [mp*MR, mp*MR + 6) and input
// channels [c0, c0 + 8) (all inside one k block), written straight into
// their A panels: per xi, an 8 x 6 block [kk][MR]. Returns false if a
// weight is out of range. MR == 6 only (the AVX2 kernel).
// With flipped (see winograd_forward_f32), filter (oc, c) is the reversed
// filter (c, oc) of w, whose 8 filters for c0.. are fs = OC * 9 floats apart.
bool pack_u8_mr6(const Conv2dParams& p, const Geometry& g, const float* w, bool flipped, i64 mp,
                 i64 c0, float* upk) {
  const i64 fs = flipped ? p.OC * 9 : 9;  // floats between consecutive filters
  const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                         _mm256_set1_epi32(static_cast<int>(fs)));
  const V8 lim = _mm256_set1_ps(kLimit);
  V8 bad = _mm256_setzero_ps();
  alignas(32) V8 u[6][16];
  for (int r = 0; r < 6; ++r) {
    const i64 oc = mp * 6 + r;
    if (oc >= p.OC) {
      for (int xi = 0; xi < 16; ++xi) u[r][xi] = _mm256_setzero_ps();
      continue;
    }
    const float* base = flipped ? w + (c0 * p.OC + oc) * 9 : w + (oc * p.C + c0) * 9;
    // The 72 weights two groups ahead (the gathers would wait on memory).
    if (c0 + 24 <= p.C) {
      if (flipped)
        for (int l = 0; l < 8; ++l) _mm_prefetch(reinterpret_cast<const char*>(base + (16 + l) * fs), _MM_HINT_T0);
      else
        for (int l = 0; l < 5; ++l) _mm_prefetch(reinterpret_cast<const char*>(base + 144 + 16 * l), _MM_HINT_T0);
    }
    // Filter l's taps 0..7 are 8 floats at base + fs l: load and transpose;
    // tap 8 is a gather.
    V8 taps[9];
    for (int l = 0; l < 8; ++l) taps[l] = _mm256_loadu_ps(base + fs * l);
    transpose8(taps);
    taps[8] = _mm256_i32gather_ps(base + 8, idx, 4);
    if (flipped) std::reverse(taps, taps + 9);  // tap t of the flipped filter is tap 8 - t
    for (int t = 0; t < 9; ++t) bad = _mm256_or_ps(bad, outside(taps[t], lim));
    filter_transform8(taps, u[r]);
  }
  const i64 kb = c0 / g.KC, kk = c0 % g.KC;
  const bool last_in_panel = kk + 8 == g.KC || c0 + 8 == p.C;
  for (int xi = 0; xi < 16; ++xi) {
    V8 rows[8] = {u[0][xi], u[1][xi], u[2][xi], u[3][xi], u[4][xi], u[5][xi],
                  _mm256_setzero_ps(), _mm256_setzero_ps()};
    transpose8(rows);  // rows[l] = (r = 0..5 of input channel c0 + l, 0, 0)
    float* d = upk + xi * g.us + ((kb * g.MP + mp) * g.KC + kk) * 6;
    // Each 8-float store spills 2 zeros into the next kk row, rewritten by
    // the next store; the panel's last row is stored as 4 + 2 floats so
    // nothing spills into another thread's panel.
    for (int l = 0; l < 7; ++l) _mm256_storeu_ps(d + l * 6, rows[l]);
    if (last_in_panel) {
      _mm_storeu_ps(d + 42, _mm256_castps256_ps128(rows[7]));
      _mm_storel_pi(reinterpret_cast<__m64*>(d + 46), _mm256_extractf128_ps(rows[7], 1));
    } else {
      _mm256_storeu_ps(d + 42, rows[7]);
    }
  }
  return _mm256_movemask_ps(bad) == 0;
}

// Calls fn(n, ty, tx, len, tl) for the runs of tiles [t0, t0 + tn) that lie
// in one row of tiles; tl is the run's first index within the block.
template <typename Fn>
inline void for_each_run(const Geometry& g, i64 t0, i64 tn, Fn fn) {
  // Divide once, then step (small maps have runs of a few tiles, and two
  // divisions per run showed in their profiles).
  i64 n = t0 / (g.TH * g.TW), ty = t0 % (g.TH * g.TW) / g.TW, tx = t0 % g.TW;
  for (i64 t = t0; t < t0 + tn;) {
    const i64 len = std::min(g.TW - tx, t0 + tn - t);
    fn(n, ty, tx, len, t - t0);
    t += len;
    tx = 0;  // the next run starts a row of tiles
    if (++ty == g.TH) {
      ty = 0;
      ++n;
    }
  }
}

// V = B^T d B for 8 tiles per vector; B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1].
inline void input_tiles(const float* base, i64 RL, i64 len, float* v0, i64 xi_stride) {
  for (i64 k = 0; k < len; k += 8) {
    V8 h[4][4];
    for (int i = 0; i < 4; ++i) {
      const float* E = base + i * 2 * RL + k;
      const float* O = E + RL;
      const V8 d0 = _mm256_loadu_ps(E), d1 = _mm256_loadu_ps(O);
      const V8 d2 = _mm256_loadu_ps(E + 1), d3 = _mm256_loadu_ps(O + 1);
      h[i][0] = _mm256_sub_ps(d0, d2);
      h[i][1] = _mm256_add_ps(d1, d2);
      h[i][2] = _mm256_sub_ps(d2, d1);
      h[i][3] = _mm256_sub_ps(d1, d3);
    }
    float* v = v0 + k;
    for (int j = 0; j < 4; ++j) {
      _mm256_storeu_ps(v + (0 * 4 + j) * xi_stride, _mm256_sub_ps(h[0][j], h[2][j]));
      _mm256_storeu_ps(v + (1 * 4 + j) * xi_stride, _mm256_add_ps(h[1][j], h[2][j]));
      _mm256_storeu_ps(v + (2 * 4 + j) * xi_stride, _mm256_sub_ps(h[2][j], h[1][j]));
      _mm256_storeu_ps(v + (3 * 4 + j) * xi_stride, _mm256_sub_ps(h[1][j], h[3][j]));
    }
  }
}

// Writes 8 tiles' (even, odd) output columns interleaved: up to `valid` of
// the 16 floats at y (masked stores are slow on AMD cores).
inline void store_pairs(float* y, i64 valid, V8 a, V8 b) {
  const V8 lo = _mm256_unpacklo_ps(a, b), hi = _mm256_unpackhi_ps(a, b);
  const V8 v0 = _mm256_permute2f128_ps(lo, hi, 0x20), v1 = _mm256_permute2f128_ps(lo, hi, 0x31);
  if (valid >= 16) {
    _mm256_storeu_ps(y, v0);
    _mm256_storeu_ps(y + 8, v1);
    return;
  }
  // 8 + 4 + 2 + 1 stores (a copy loop through a temp cost 14% of a small
  // map's forward: odd widths such as 11 end every tile row here).
  V8 v = v0;
  if (valid >= 8) {
    _mm256_storeu_ps(y, v0);
    y += 8;
    valid -= 8;
    v = v1;
  }
  __m128 h = _mm256_castps256_ps128(v);
  if (valid >= 4) {
    _mm_storeu_ps(y, h);
    y += 4;
    valid -= 4;
    h = _mm256_extractf128_ps(v, 1);
  }
  if (valid >= 2) {
    _mm_storel_pi(reinterpret_cast<__m64*>(y), h);
    y += 2;
    valid -= 2;
    h = _mm_movehl_ps(h, h);
  }
  if (valid >= 1) _mm_store_ss(y, h);
}

// Y = A^T M A + bias for 8 tiles per vector; A^T = [1 1 1 0; 0 1 -1 -1].
inline void output_tiles(const float* m0, i64 xi_stride, i64 len, float bias, float* y0, float* y1,
                         i64 cols_left) {
  const V8 bv = _mm256_set1_ps(bias);
  for (i64 k = 0; k < len; k += 8) {
    V8 s[4][2];
    for (int i = 0; i < 4; ++i) {
      const float* m = m0 + k + i * 4 * xi_stride;
      const V8 a = _mm256_loadu_ps(m), b = _mm256_loadu_ps(m + xi_stride);
      const V8 c = _mm256_loadu_ps(m + 2 * xi_stride), d = _mm256_loadu_ps(m + 3 * xi_stride);
      s[i][0] = _mm256_add_ps(_mm256_add_ps(a, b), c);
      s[i][1] = _mm256_sub_ps(_mm256_sub_ps(b, c), d);
    }
    const i64 valid = std::min(2 * (len - k), cols_left - 2 * k);
    V8 r0[2], r1[2];
    for (int j = 0; j < 2; ++j) {
      r0[j] = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(s[0][j], s[1][j]), s[2][j]), bv);
      r1[j] = _mm256_add_ps(_mm256_sub_ps(_mm256_sub_ps(s[1][j], s[2][j]), s[3][j]), bv);
    }
    store_pairs(y0 + 2 * k, valid, r0[0], r0[1]);
    if (y1) store_pairs(y1 + 2 * k, valid, r1[0], r1[1]);
  }
}

}  // namespace

bool winograd_forward_f32_avx2(const Conv2dParams& p, const float* x, const float* w,
                               const float* b, float* y, bool w_flipped) {
  const GemmKernel<float>& K = active_gemm_kernel<float>();
  if (K.isa == Isa::ref || !K.fn_rows) return false;
  if (w_flipped && double(p.OC) * 9 * 8 >= 2147483647.0) return false;  // gather offsets are int32
  const Geometry g(p, K);
  const i64 C = p.C, OC = p.OC, MR = g.MR, NR = g.NR;
  float* xs = static_cast<float*>(t_xs.reserve(checked_bytes(p.N * C, g.plane, sizeof(float))));
  float* upk = static_cast<float*>(t_u.reserve(checked_bytes(16, g.us, sizeof(float))));
  const double flops = 2.0 * p.N * OC * C * 9 * p.OH * p.OW;
  const int nt = threads_for(flops);
  const i64 nblocks = (g.T + g.TB - 1) / g.TB;
  const bool own_blocks = nt > 1 && nblocks >= 4 * nt;  // else threads share each block
  const int nbuf = own_blocks ? nt : 1;
  float* vb = static_cast<float*>(t_v.reserve(checked_bytes(16 * nbuf, g.vs, sizeof(float))));
  float* mb = static_cast<float*>(t_m.reserve(checked_bytes(16 * nbuf, g.ms, sizeof(float))));
  std::vector<i64> boff(C);
  for (i64 c = 0; c < C; ++c) boff[c] = c * g.TBp;

  // The three phases of a block of tiles [t0, t0 + tn), in buffers v, m.
  auto input_phase = [&](i64 c, i64 t0, i64 tn, float* v) {
    for_each_run(g, t0, tn, [&](i64 n, i64 ty, i64 tx, i64 len, i64 tl) {
      const float* base = xs + (n * C + c) * g.plane + 2 * ty * 2 * g.RL + tx;
      input_tiles(base, g.RL, len, v + c * g.TBp + tl, g.vs);
    });
  };
  auto gemm_phase = [&](i64 q, i64 tn, const float* v, float* m) {
    const i64 xi = q / g.MP, mp = q % g.MP;
    const float* vx = v + xi * g.vs;
    float* mx = m + xi * g.ms + mp * MR * g.TBp;
    // A last panel of OC % MR rows runs a short kernel where there is one
    // (its rows up to the panel's MR are scratch, never read).
    const auto* sr = short_rows_for(K, std::min(MR, OC - mp * MR));
    const ukernel_rows_fn<float> fn = sr ? sr->fn_rows : K.fn_rows;
    for (i64 kb = 0; kb < g.NKB; ++kb) {
      const i64 kc = std::min(g.KC, C - kb * g.KC);
      const float* ap = upk + xi * g.us + (kb * g.MP + mp) * g.KC * MR;
      for (i64 jr = 0; jr < tn; jr += NR)
        fn(kc, ap, vx + jr, boff.data() + kb * g.KC, mx + jr, g.TBp, kb == 0 ? 0.0f : 1.0f);
    }
  };
  auto output_phase = [&](i64 oc, i64 t0, i64 tn, const float* m) {
    for_each_run(g, t0, tn, [&](i64 n, i64 ty, i64 tx, i64 len, i64 tl) {
      float* y0 = y + ((n * OC + oc) * p.OH + 2 * ty) * p.OW + 2 * tx;
      float* y1 = 2 * ty + 1 < p.OH ? y0 + p.OW : nullptr;
      output_tiles(m + oc * g.TBp + tl, g.ms, len, b ? b[oc] : 0.0f, y0, y1, p.OW - 2 * tx);
    });
  };
  std::atomic<bool> bad{false};
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    // The padded, split input planes.
#pragma omp for schedule(static) nowait
    for (i64 i = 0; i < p.N * C; ++i) {
      if (!fill_plane(p, g, x + i * p.H * p.W, xs + i * g.plane))
        bad.store(true, std::memory_order_relaxed);
    }
    // The transformed weights, packed as A panels; rows past OC are zero.
#pragma omp for schedule(static)
    for (i64 mp = 0; mp < g.MP; ++mp) {
      for (i64 c = 0; c < C;) {
        if (MR == 6 && c + 8 <= C && c % g.KC + 8 <= g.KC) {
          if (!pack_u8_mr6(p, g, w, w_flipped, mp, c, upk)) bad.store(true, std::memory_order_relaxed);
          c += 8;
          continue;
        }
        float u[16][16];  // [r][xi], r < MR <= 16
        for (i64 r = 0; r < MR; ++r) {
          const i64 oc = mp * MR + r;
          if (oc >= OC) {
            std::fill(u[r], u[r] + 16, 0.0f);
            continue;
          }
          float flip[9];
          const float* wk = w + (oc * C + c) * 9;
          if (w_flipped) {
            for (int t = 0; t < 9; ++t) flip[t] = w[(c * OC + oc) * 9 + 8 - t];
            wk = flip;
          }
          for (int t = 0; t < 9; ++t)
            if (!(wk[t] < kLimit && wk[t] > -kLimit)) bad.store(true, std::memory_order_relaxed);
          filter_transform(wk, u[r]);
        }
        const i64 kb = c / g.KC, kk = c % g.KC;
        for (int xi = 0; xi < 16; ++xi) {
          float* d = upk + xi * g.us + ((kb * g.MP + mp) * g.KC + kk) * MR;
          for (i64 r = 0; r < MR; ++r) d[r] = u[r][xi];
        }
        ++c;
      }
    }
    // (the implicit barrier above makes `bad` final for every thread)
    if (!bad.load(std::memory_order_relaxed)) {
      if (own_blocks) {
        // Enough blocks to go round: each thread runs whole blocks in its
        // own V and M, with no barrier between the phases.
#ifdef _OPENMP
        const int me = omp_get_thread_num();
#else
        const int me = 0;
#endif
        float* v = vb + me * 16 * g.vs;
        float* m = mb + me * 16 * g.ms;
#pragma omp for schedule(dynamic, 1)
        for (i64 t0 = 0; t0 < g.T; t0 += g.TB) {
          const i64 tn = std::min(g.TB, g.T - t0);
          for (i64 c = 0; c < C; ++c) input_phase(c, t0, tn, v);
          for (i64 q = 0; q < 16 * g.MP; ++q) gemm_phase(q, tn, v, m);
          for (i64 oc = 0; oc < OC; ++oc) output_phase(oc, t0, tn, m);
        }
      } else {
        for (i64 t0 = 0; t0 < g.T; t0 += g.TB) {
          const i64 tn = std::min(g.TB, g.T - t0);
#pragma omp for schedule(static)
          for (i64 c = 0; c < C; ++c) input_phase(c, t0, tn, vb);
#pragma omp for schedule(static)
          for (i64 q = 0; q < 16 * g.MP; ++q) gemm_phase(q, tn, vb, mb);
#pragma omp for schedule(static)
          for (i64 oc = 0; oc < OC; ++oc) output_phase(oc, t0, tn, mb);
        }
      }
    }
  }
  return !bad.load();
}

namespace {

// Z = A dY A^T for 8 tiles per vector from the split rows of dy (even and
// odd columns of output rows 2ty, 2ty + 1); A = [1 0; 1 1; 1 -1; 0 -1].
inline void dy_tiles(const float* e0, const float* o0, const float* e1, const float* o1, i64 len,
                     float* z0, i64 xi_stride) {
  for (i64 k = 0; k < len; k += 8) {
    const V8 a = _mm256_loadu_ps(e0 + k), b = _mm256_loadu_ps(o0 + k);
    const V8 c = _mm256_loadu_ps(e1 + k), d = _mm256_loadu_ps(o1 + k);
    const V8 zero = _mm256_setzero_ps();
    const V8 pr[4][2] = {{a, b},
                         {_mm256_add_ps(a, c), _mm256_add_ps(b, d)},
                         {_mm256_sub_ps(a, c), _mm256_sub_ps(b, d)},
                         {_mm256_sub_ps(zero, c), _mm256_sub_ps(zero, d)}};
    float* z = z0 + k;
    for (int i = 0; i < 4; ++i) {
      const V8 pp = pr[i][0], q = pr[i][1];
      _mm256_storeu_ps(z + (i * 4 + 0) * xi_stride, pp);
      _mm256_storeu_ps(z + (i * 4 + 1) * xi_stride, _mm256_add_ps(pp, q));
      _mm256_storeu_ps(z + (i * 4 + 2) * xi_stride, _mm256_sub_ps(pp, q));
      _mm256_storeu_ps(z + (i * 4 + 3) * xi_stride, _mm256_sub_ps(zero, q));
    }
  }
}

// dW = G^T dU G for one (oc, c): dU read at stride xi_stride.
inline void weight_untransform(const float* du, i64 xi_stride, float* dw) {
  float t[3][4];  // G^T dU, G^T = [1 .5 .5 0; 0 .5 -.5 0; 0 .5 .5 1]
  for (int k = 0; k < 4; ++k) {
    const float u0 = du[(0 * 4 + k) * xi_stride], u1 = du[(1 * 4 + k) * xi_stride];
    const float u2 = du[(2 * 4 + k) * xi_stride], u3 = du[(3 * 4 + k) * xi_stride];
    t[0][k] = u0 + 0.5f * (u1 + u2);
    t[1][k] = 0.5f * (u1 - u2);
    t[2][k] = 0.5f * (u1 + u2) + u3;
  }
  for (int i = 0; i < 3; ++i) {
    dw[i * 3 + 0] = t[i][0] + 0.5f * (t[i][1] + t[i][2]);
    dw[i * 3 + 1] = 0.5f * (t[i][1] - t[i][2]);
    dw[i * 3 + 2] = 0.5f * (t[i][1] + t[i][2]) + t[i][3];
  }
}

// B[t][c] = V_xi[c][t] for the dU GEMM: each column c is a row of V.
struct VColumns {
  const float* v;
  i64 ld;
  void (*simd)(const float* const*, i64, int, float*);
  static void pack(const void* ctx, i64 p0, i64 kc, i64 j0, i64 nc, int NR, float* dst) {
    const VColumns& s = *static_cast<const VColumns*>(ctx);
    const float* src[64];
    for (i64 jp = 0; jp < nc; jp += NR, dst += kc * NR) {
      const i64 nr = std::min<i64>(NR, nc - jp);
      for (i64 t = 0; t < nr; ++t) src[t] = s.v + (j0 + jp + t) * s.ld + p0;
      if (s.simd && nr == NR && NR % 8 == 0) {
        s.simd(src, kc, NR, dst);
      } else {
        for (i64 q = 0; q < kc; ++q) {
          for (i64 t = 0; t < nr; ++t) dst[q * NR + t] = src[t][q];
          for (i64 t = nr; t < NR; ++t) dst[q * NR + t] = 0.0f;
        }
      }
    }
  }
};

}  // namespace

// Backward-weight by the adjoint of the forward transform:
//   dU_xi[oc][c] = sum over tiles of Z_xi[oc][t] V_xi[c][t],  Z = A dY A^T,
//   dW = G^T dU G,
// where dY is the 2x2 dy tile (zeros past the output edge). The tile sum is
// the GEMM's k; blocks of tiles accumulate into dU in block order, and
// threads split the 16 GEMMs, so bits do not depend on the thread count.
bool winograd_backward_weight_f32_avx2(const Conv2dParams& p, const float* dy, const float* x,
                                       float* dw) {
  const GemmKernel<float>& K = active_gemm_kernel<float>();
  if (K.isa == Isa::ref) return false;
  const Geometry g(p, K, true);
  const i64 C = p.C, OC = p.OC;
  float* xs = static_cast<float*>(t_xs.reserve(checked_bytes(p.N * C, g.plane, sizeof(float))));
  float* du = static_cast<float*>(t_u.reserve(checked_bytes(16, g.ws, sizeof(float))));
  float* vb = static_cast<float*>(t_v.reserve(checked_bytes(16, g.vs, sizeof(float))));
  const i64 zs = Geometry::stagger(OC * g.TBp);
  float* zb = static_cast<float*>(t_z.reserve(checked_bytes(16, zs, sizeof(float))));
  const double flops = 2.0 * p.N * OC * C * 9 * p.OH * p.OW;
  const int nt = threads_for(flops);
  const i64 rowbuf = g.TW + 16;  // split dy rows: 4 per thread
  std::vector<float> split_all(std::size_t(nt) * 4 * rowbuf);
  std::atomic<bool> bad{false};
  ExceptionCapture capture;
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
#ifdef _OPENMP
    float* sp = split_all.data() + std::size_t(omp_get_thread_num()) * 4 * rowbuf;
#else
    float* sp = split_all.data();
#endif
#pragma omp for schedule(static)
    for (i64 i = 0; i < p.N * C; ++i) {
      if (!fill_plane(p, g, x + i * p.H * p.W, xs + i * g.plane))
        bad.store(true, std::memory_order_relaxed);
    }
    for (i64 t0 = 0; t0 < g.T && !bad.load(std::memory_order_relaxed); t0 += g.TB) {
      const i64 tn = std::min(g.TB, g.T - t0);
#pragma omp for schedule(static) nowait
      for (i64 c = 0; c < C; ++c)
        for_each_run(g, t0, tn, [&](i64 n, i64 ty, i64 tx, i64 len, i64 tl) {
          const float* base = xs + (n * C + c) * g.plane + 2 * ty * 2 * g.RL + tx;
          input_tiles(base, g.RL, len, vb + c * g.TBp + tl, g.vs);
        });
#pragma omp for schedule(static)
      for (i64 oc = 0; oc < OC; ++oc) {
        bool ok = true;
        for_each_run(g, t0, tn, [&](i64 n, i64 ty, i64 tx, i64 len, i64 tl) {
          float* e0 = sp;
          float* o0 = sp + rowbuf;
          float* e1 = sp + 2 * rowbuf;
          float* o1 = sp + 3 * rowbuf;
          const i64 cnt = std::min(2 * len, p.OW - 2 * tx);
          const bool row1 = 2 * ty + 1 < p.OH;
          const float* d0 = dy + ((n * OC + oc) * p.OH + 2 * ty) * p.OW + 2 * tx;
          // zeros past the split values, up to the vectors' reach
          const i64 ne = (cnt + 1) / 2, no = cnt / 2, reach = len + 8;
          for (float* a : {e0, e1}) std::fill(a + (a == e0 || row1 ? ne : 0), a + reach, 0.0f);
          for (float* a : {o0, o1}) std::fill(a + (a == o0 || row1 ? no : 0), a + reach, 0.0f);
          ok &= split2_avx2(d0, cnt, e0, o0, true, kLimit);
          if (row1) ok &= split2_avx2(d0 + p.OW, cnt, e1, o1, true, kLimit);
          dy_tiles(e0, o0, e1, o1, len, zb + oc * g.TBp + tl, zs);
        });
        if (!ok) bad.store(true, std::memory_order_relaxed);
      }
      // (the barrier above: V and Z complete, `bad` final for this block)
      if (bad.load(std::memory_order_relaxed)) break;
      const VColumns cols_proto{nullptr, g.TBp, K.pack_streams};
#pragma omp for schedule(static)
      for (i64 xi = 0; xi < 16; ++xi)
        capture.run([&] {  // (the GEMM may allocate its workspace: bad_alloc)
          VColumns cols = cols_proto;
          cols.v = vb + xi * g.vs;
          const BPacker<float> B{&VColumns::pack, &cols};
          gemm_packed_b(K, OC, C, tn, zb + xi * zs, g.TBp, 1, B, t0 == 0 ? 0.0f : 1.0f,
                        du + xi * g.ws, C, 1);
        });
    }
    if (!bad.load(std::memory_order_relaxed)) {
#pragma omp for schedule(static)
      for (i64 oc = 0; oc < OC; ++oc)
        for (i64 c = 0; c < C; ++c)
          weight_untransform(du + oc * C + c, g.ws, dw + (oc * C + c) * 9);
    }
  }
  capture.rethrow();
  return !bad.load();
}

}  // namespace pyconv
