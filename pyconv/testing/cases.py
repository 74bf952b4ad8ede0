"""The conv2d test grid, shared by tests/test_conv2d.py and tests/test_conv2d_torch.py.

``conv2d_grid()`` returns a list of :class:`ConvCase`: a representative
subset of the cross product

    stride   1, 2, 3, (1, 2)
    padding  0, 1, 2, (0, 1), 'same', 'valid'    ('same' only with stride 1)
    dilation 1, 2, (2, 1)
    groups   1, 2, depthwise (channel multiplier 1 and 2)
    kernel   1x1, 3x3, 2x3, 5x1, 7x7

in which every (kernel, groups, dilation) triple appears once, the 21 valid
(stride, padding) pairs are dealt round it (so each appears about three
times) and also appear once each on a 3x3 kernel, with non-square odd and
even input sizes and batch sizes 1, 2 and 3. A few hand-made cases on top
reach the compiled core's distinct code paths (1x1 shortcut, wide stride-1
forward, batched small planes, stride-1 backward-data as a flipped
convolution, padding larger than the kernel extent, output of one pixel).

Shapes are small: the float64 direct-loop reference runs in Python over
output pixels.
"""
from __future__ import annotations

import itertools
import zlib
from dataclasses import dataclass
from typing import List, Tuple, Union

import numpy as np

from .reference import conv2d_output_size, resolve_padding

IntOrPair = Union[int, Tuple[int, int]]

STRIDES = (1, 2, 3, (1, 2))
PADDINGS = (0, 1, 2, (0, 1), "same", "valid")
DILATIONS = (1, 2, (2, 1))
KERNELS = ((1, 1), (3, 3), (2, 3), (5, 1), (7, 7))
# name -> (C, OC, groups)
GROUPINGS = {
    "g1": (3, 4, 1),
    "g2": (4, 6, 2),
    "dw1": (3, 3, 3),  # depthwise, channel multiplier 1
    "dw2": (3, 6, 3),  # depthwise, channel multiplier 2
}
STRIDE_PADDING = [(s, p) for s in STRIDES for p in PADDINGS if p != "same" or s == 1]


def _pair(v) -> Tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _fmt(v) -> str:
    if isinstance(v, tuple):
        return "x".join(str(t) for t in v)
    return str(v)


@dataclass(frozen=True)
class ConvCase:
    """One conv2d configuration; ``id`` doubles as the pytest id."""

    id: str
    N: int
    C: int
    H: int
    W: int
    OC: int
    KH: int
    KW: int
    stride: IntOrPair = 1
    padding: Union[IntOrPair, str] = 0
    dilation: IntOrPair = 1
    groups: int = 1
    bias: bool = True

    @property
    def kwargs(self) -> dict:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups)

    @property
    def x_shape(self):
        return (self.N, self.C, self.H, self.W)

    @property
    def w_shape(self):
        return (self.OC, self.C // self.groups, self.KH, self.KW)

    @property
    def y_shape(self):
        OH, OW = conv2d_output_size(self.H, self.W, self.KH, self.KW, self.stride,
                                    self.padding, self.dilation)
        return (self.N, self.OC, OH, OW)

    def arrays(self, seed: int = 0):
        """(x, w, b, dy) in float64 from a seed derived from the id; b is None without bias."""
        rng = np.random.default_rng(zlib.crc32(self.id.encode()) + seed)
        x = rng.standard_normal(self.x_shape)
        w = rng.standard_normal(self.w_shape)
        b = rng.standard_normal(self.OC) if self.bias else None
        dy = rng.standard_normal(self.y_shape)
        return x, w, b, dy


def _make(name, N, C, OC, groups, k, stride, padding, dilation, extra_h, extra_w, bias=True):
    """A case whose input is just large enough for the kernel, plus extra_h/extra_w."""
    KH, KW = k
    (dh, dw) = _pair(dilation)
    # Padding depends on the kernel only (not on H, W), so resolve it on a dummy size.
    pt, pb, pl, pr = resolve_padding(1, 1, KH, KW, stride, padding, dilation)
    H = max(1, dh * (KH - 1) + 1 - pt - pb) + extra_h
    W = max(1, dw * (KW - 1) + 1 - pl - pr) + extra_w
    cid = (f"{name}-n{N}c{C}oc{OC}g{groups}-{H}x{W}-k{KH}x{KW}-s{_fmt(stride)}"
           f"-p{_fmt(padding)}-d{_fmt(dilation)}" + ("" if bias else "-nobias"))
    return ConvCase(cid, N, C, H, W, OC, KH, KW, stride, padding, dilation, groups, bias)


def conv2d_grid() -> List[ConvCase]:
    cases = []
    # Every (kernel, grouping, dilation) once, the (stride, padding) pairs dealt round.
    for i, (k, gname, d) in enumerate(itertools.product(KERNELS, GROUPINGS, DILATIONS)):
        C, OC, G = GROUPINGS[gname]
        s, p = STRIDE_PADDING[(8 * i) % len(STRIDE_PADDING)]
        N = (1, 2, 3, 1, 2)[i % 5]
        cases.append(_make(gname, N, C, OC, G, k, s, p, d, extra_h=(3 * i) % 5,
                           extra_w=1 + (7 * i) % 6, bias=(i % 7 != 3)))
    # Every (stride, padding) pair once on a 3x3 kernel with groups 1 and 2.
    for j, (s, p) in enumerate(STRIDE_PADDING):
        C, OC, G = GROUPINGS[("g1", "g2")[j % 2]]
        cases.append(_make("sp", 1 + j % 3, C, OC, G, (3, 3), s, p, 1, extra_h=2 + j % 4,
                           extra_w=5 - j % 3))
    # Hand-made cases for the core's code paths.
    cases += [
        # 1x1 stride-1 unpadded: a plain GEMM on the NCHW rows (large and small planes).
        ConvCase("pointwise-big", 2, 5, 16, 17, 7, 1, 1),
        ConvCase("pointwise-small-batched", 3, 6, 5, 3, 4, 1, 1, groups=2),
        ConvCase("pointwise-strided", 2, 5, 9, 8, 3, 1, 1, stride=2, padding=1),
        # stride 1, K = C/G*KH*KW >= 32: the wide padded-plane forward (N=1: not batched).
        ConvCase("wide-n1", 1, 8, 17, 19, 5, 3, 3, padding=1),
        ConvCase("wide-n2-dil", 2, 8, 18, 16, 6, 3, 3, padding=2, dilation=2),
        ConvCase("wide-same-even", 1, 9, 16, 17, 4, 2, 4, padding="same", dilation=(1, 3)),
        # stride 1 and C/G >= 8: backward-data as a convolution with flipped weights,
        # including padding beyond the kernel extent (negative padding inside the core).
        ConvCase("flip-bwd", 2, 16, 16, 17, 4, 3, 3, padding=(0, 1), groups=2),
        ConvCase("flip-bwd-negpad", 1, 8, 9, 10, 3, 1, 3, padding=2),
        ConvCase("flip-bwd-negpad-batched", 2, 8, 5, 4, 3, 1, 3, padding=2),
        # many small images: batched GEMM over images.
        ConvCase("batched-many", 9, 4, 6, 7, 5, 3, 3, padding=1),
        ConvCase("batched-strided", 5, 6, 7, 9, 4, 3, 2, stride=(2, 1), padding=(1, 0),
                 groups=2),
        # depthwise on a larger plane, strided, and channel multiplier 3.
        ConvCase("depthwise-big", 2, 8, 20, 17, 16, 5, 5, stride=2, padding=2, groups=8),
        ConvCase("depthwise-mult3", 2, 4, 9, 8, 12, 3, 3, padding=1, dilation=(1, 2), groups=4),
        # two input channels but one output channel per group.
        ConvCase("groups-c2-oc1", 2, 6, 7, 8, 3, 3, 3, padding=1, groups=3),
        # kernel extent == padded input: one output pixel; stride larger than kernel.
        ConvCase("one-pixel", 2, 3, 7, 7, 4, 7, 7),
        ConvCase("one-pixel-padded", 1, 2, 3, 5, 3, 5, 7, padding=1),
        ConvCase("stride-gt-kernel", 2, 3, 10, 11, 2, 1, 1, stride=3),
        ConvCase("stride-gt-kernel-2x2", 1, 3, 11, 10, 2, 2, 2, stride=(3, 4), padding=1),
        # padding larger than the kernel extent: outputs that see only padding.
        ConvCase("pad-gt-kernel", 2, 3, 4, 5, 2, 2, 2, padding=3, stride=2),
        # 1x1 image.
        ConvCase("image-1x1", 3, 4, 1, 1, 5, 1, 1),
        ConvCase("image-1x1-padded", 2, 4, 1, 1, 5, 3, 3, padding=1),
    ]
    ids = [c.id for c in cases]
    assert len(set(ids)) == len(ids), "duplicate case ids"
    return cases
