// im2col.h - the column transform of convolution and its adjoint.
//
// For one image x[C][H][W] and output rows [oy0, oy1):
//   col[r][(oy - oy0) * OW + ox] = x[c][oy*SH - PT + ky*DH][ox*SW - PL + kx*DW]
// with r = (c*KH + ky)*KW + kx, and 0 where the tap falls in padding.
// col2im is the exact adjoint: it ADDS each col entry back into dx.
// nthreads <= 0 picks a count from the work size; 1 runs serially (for use
// inside an outer parallel loop).
#pragma once
#include "common.h"

namespace pyconv {

// The output columns ox in [lo, hi) whose tap ix = ox*SW + off lies in [0, W).
inline void valid_range(i64 W, i64 OW, i64 SW, i64 off, i64* lo, i64* hi) {
  i64 l = off >= 0 ? 0 : (-off + SW - 1) / SW;       // ox*SW + off >= 0
  i64 h = (W - 1 - off) < 0 ? -1 : (W - 1 - off) / SW;  // ox*SW + off <= W-1
  *lo = l < OW ? l : OW;
  const i64 hh = h + 1 < OW ? h + 1 : OW;
  *hi = hh > *lo ? hh : *lo;
}

// x: [C][H][W]; col: [C*KH*KW][ldcol] (ldcol >= (oy1-oy0)*OW)
template <typename T>
void im2col_rows(const Conv2dParams& p, const T* x, i64 oy0, i64 oy1, T* col, i64 ldcol,
                 int nthreads = 0);

// col: [C*KH*KW][ldcol]; dx: [C][H][W], accumulated into (dx += col2im(col)).
template <typename T>
void col2im_rows(const Conv2dParams& p, const T* col, i64 ldcol, i64 oy0, i64 oy1, T* dx,
                 int nthreads = 0);

// Implicit im2col: a GEMM B-packer (see BPacker in gemm/gemm.h) that packs
// B = im2col(x) for one image and one group straight from the image, so the
// column matrix is never materialised. Row p of B is (c, ky, kx) with c in
// [0, Cg); column j is output position (j / OW, j % OW). Padding may be
// negative here (the taps are bounds-checked), which backward-data uses.
// Columns may span several images: column j is image j / OHW of the chunk
// (images img_stride elements apart), position j % OHW.
template <typename T>
struct Im2colB {
  const Conv2dParams* p;
  const T* x;          // [Cg][H][W]: the group's first channel of the first image
  i64 img_stride = 0;  // elements between consecutive images (C*H*W)
};
template <typename T>
void im2col_pack_b(const void* ctx, i64 p0, i64 kc, i64 j0, i64 nc, int NR, T* dst);

}  // namespace pyconv
