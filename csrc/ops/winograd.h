// winograd.h - float32 3x3 stride-1 convolution by Winograd F(2x2, 3x3)
// (Lavin & Gray 2016): 16 multiplies per 2x2 output tile instead of 36.
//
//   y = A^T [ (G g G^T) (.) (B^T d B) ] A   per 4x4 input tile d, 2x2 output
//
// Tiles are processed in blocks: the input transform writes V[16][C][tiles],
// 16 GEMMs M_xi[OC][tiles] = U_xi[OC][C] * V_xi[C][tiles] run on the packed
// micro-kernels (U packed once per call), and the output transform adds the
// bias and writes y. Every output is computed the same way whatever the
// thread count (threads split channels, GEMM panels and output channels of
// a block, never a reduction), so results are bit-identical at 1 and N
// threads.
//
// Accuracy: the transforms use only 0, +-1/2 and +-1; the largest error
// measured 0.6-2.3x that of the direct path (test_winograd.py requires < 4x
// and the float32 tolerance). Values of magnitude >= 2^40, inf and NaN
// would not cancel the way the direct sum does (inf - inf = NaN in other
// outputs of the tile), so such inputs or weights make the call decline and
// the direct path runs.
#pragma once
#include <atomic>

#include "common.h"

namespace pyconv {

// Process-wide switch (pyconv.set_winograd): on by default.
inline std::atomic<bool> g_winograd_enabled{true};

// The shapes Winograd runs for: 3x3, stride 1, dilation 1, one group,
// non-negative padding, and enough channels and 2x2 output tiles that the
// transforms pay (the weight transform costs about as much as the GEMMs
// save on 16 tiles: ResNet's 7x7 maps at batch 1).
inline bool winograd_shape(const Conv2dParams& p) {
  return p.KH == 3 && p.KW == 3 && p.SH == 1 && p.SW == 1 && p.DH == 1 && p.DW == 1 &&
         p.G == 1 && p.PT >= 0 && p.PL >= 0 && p.C >= 16 && p.OC >= 16 &&
         p.N * ((p.OH + 1) / 2) * ((p.OW + 1) / 2) >= 32;
}

// Dilation D > 1 with 'same'-style padding D on sizes divisible by D splits
// into D x D independent undilated problems: output phase (qy, qx) reads
// only input phase (qy, qx), with a plain 3x3 kernel and padding 1. The
// ops split x (and dy) into those phases, run the sub-problem below as one
// batch of N*D*D images, and interleave the result back.
inline Conv2dParams winograd_phase_problem(const Conv2dParams& p) {
  Conv2dParams s = p;
  const i64 D = p.DH;
  s.N = p.N * D * D;
  s.H = p.H / D;
  s.W = p.W / D;
  s.OH = p.OH / D;
  s.OW = p.OW / D;
  s.PT = s.PL = 1;
  s.DH = s.DW = 1;
  return s;
}
inline bool winograd_dilated(const Conv2dParams& p) {
  const i64 D = p.DH;
  return D > 1 && p.DW == D && p.KH == 3 && p.KW == 3 && p.SH == 1 && p.SW == 1 && p.G == 1 &&
         p.PT == D && p.PL == D && p.OH == p.H && p.OW == p.W && p.H % D == 0 && p.W % D == 0 &&
         winograd_shape(winograd_phase_problem(p));
}
inline bool winograd_any(const Conv2dParams& p) { return winograd_shape(p) || winograd_dilated(p); }

// Runs y = conv2d(x, w, b) (b nullable) for a winograd_any(p) and returns
// true, or returns false without a result (y possibly partly written) when
// the active ISA has no kernel for it or a value is out of range (above).
// With w_flipped, w is the weight of the convolution whose backward-data p
// is ([p.C][p.OC][3][3]), read as p's weight w'[o][c][t] = w[c][o][8 - t]
// (the same values, so the same result, with no transposed copy).
bool winograd_forward_f32(const Conv2dParams& p, const float* x, const float* w, const float* b,
                          float* y, bool w_flipped = false);

// dy, x -> dw for a winograd_any(p), by the adjoint transforms; false
// (dw possibly partly written) under the same conditions.
bool winograd_backward_weight_f32(const Conv2dParams& p, const float* dy, const float* x,
                                  float* dw);

#if defined(PYCONV_X86)
bool winograd_forward_f32_avx2(const Conv2dParams& p, const float* x, const float* w,
                               const float* b, float* y, bool w_flipped);
bool winograd_backward_weight_f32_avx2(const Conv2dParams& p, const float* dy, const float* x,
                                       float* dw);
#endif

}  // namespace pyconv
