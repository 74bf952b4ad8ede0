"""Benchmark shape suites: convolution layers named in the benchdnn style, and GEMM sizes.

Descriptor grammar (oneDNN benchdnn, ``benchdnn --conv``)::

    [g<G>]mb<N>ic<C>ih<H>[iw<W>]oc<OC>kh<KH>[kw<KW>][sh<SH>][sw<SW>][ph<PH>][pw<PW>][dh<DH>][dw<DW>]

A field is left out when it has its default (groups 1, stride 1, padding 0,
no dilation) or, for the ``w`` fields, when it equals its ``h`` twin. As in
benchdnn, **dh/dw count the holes**: ``dh1`` is PyTorch ``dilation=2`` and
``dh0`` (the default) is an ordinary convolution. Everything else is
PyTorch's meaning (``ph`` is the symmetric padding per side).

Example: ``mb8ic64ih56oc64kh3ph1`` is ResNet-18 layer 1 at batch 8.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import List, Tuple

__all__ = [
    "ConvShape",
    "GemmShape",
    "parse_descriptor",
    "conv_suite",
    "gemm_suite",
]


@dataclass(frozen=True)
class ConvShape:
    """One conv2d problem. stride/pad/dil are (h, w) pairs in PyTorch's meaning."""

    name: str
    N: int
    C: int
    H: int
    W: int
    OC: int
    KH: int
    KW: int
    stride: Tuple[int, int] = (1, 1)
    pad: Tuple[int, int] = (0, 0)
    dil: Tuple[int, int] = (1, 1)
    groups: int = 1

    @property
    def OH(self) -> int:
        return (self.H + 2 * self.pad[0] - self.dil[0] * (self.KH - 1) - 1) // self.stride[0] + 1

    @property
    def OW(self) -> int:
        return (self.W + 2 * self.pad[1] - self.dil[1] * (self.KW - 1) - 1) // self.stride[1] + 1

    @property
    def x_shape(self) -> Tuple[int, int, int, int]:
        return (self.N, self.C, self.H, self.W)

    @property
    def w_shape(self) -> Tuple[int, int, int, int]:
        return (self.OC, self.C // self.groups, self.KH, self.KW)

    @property
    def y_shape(self) -> Tuple[int, int, int, int]:
        return (self.N, self.OC, self.OH, self.OW)

    def flops(self) -> float:
        """2*N*OC*(C/G)*KH*KW*OH*OW: the same count for fwd, bwd_d and bwd_w."""
        return 2.0 * self.N * self.OC * (self.C // self.groups) * self.KH * self.KW * self.OH * self.OW

    def conv_kwargs(self) -> dict:
        return dict(stride=self.stride, padding=self.pad, dilation=self.dil, groups=self.groups)

    @property
    def desc(self) -> str:
        s = f"g{self.groups}" if self.groups != 1 else ""
        s += f"mb{self.N}ic{self.C}ih{self.H}"
        if self.W != self.H:
            s += f"iw{self.W}"
        s += f"oc{self.OC}kh{self.KH}"
        if self.KW != self.KH:
            s += f"kw{self.KW}"
        sh, sw = self.stride
        ph, pw = self.pad
        dh, dw = self.dil[0] - 1, self.dil[1] - 1
        for key, v, twin, default in (("sh", sh, None, 1), ("sw", sw, sh, 1),
                                      ("ph", ph, None, 0), ("pw", pw, ph, 0),
                                      ("dh", dh, None, 0), ("dw", dw, dh, 0)):
            if twin is None:
                if v != default:
                    s += f"{key}{v}"
            elif v != twin:
                s += f"{key}{v}"
        return s

    def with_batch(self, n: int, name: str = None) -> "ConvShape":
        return replace(self, N=n, name=name or self.name)


_FIELD = re.compile(r"([a-z]+)(\d+)")
_KNOWN = {"g", "mb", "ic", "ih", "iw", "oc", "oh", "ow", "kh", "kw", "sh", "sw", "ph", "pw", "dh", "dw"}


def parse_descriptor(desc: str, name: str = None) -> ConvShape:
    """ConvShape from a benchdnn descriptor such as ``g32mb1ic32ih112oc32kh3ph1``.

    An optional benchdnn name suffix (``_n"resnet:conv1"`` or ``n...``) is not
    supported; pass ``name`` instead. oh/ow are accepted and checked.
    """
    text = desc.strip()
    pos, f = 0, {}
    for m in _FIELD.finditer(text):
        if m.start() != pos:
            break
        key = m.group(1)
        if key not in _KNOWN:
            raise ValueError(f"unknown field {key!r} in descriptor {desc!r}")
        if key in f:
            raise ValueError(f"field {key!r} given twice in descriptor {desc!r}")
        f[key] = int(m.group(2))
        pos = m.end()
    if pos != len(text):
        raise ValueError(f"cannot parse descriptor {desc!r} at {text[pos:]!r}")
    for req in ("ic", "oc", "ih", "kh"):
        if req not in f:
            raise ValueError(f"descriptor {desc!r} lacks the required field {req!r}")
    sh = f.get("sh", 1)
    ph = f.get("ph", 0)
    dh = f.get("dh", 0)
    s = ConvShape(
        name=name or desc,
        N=f.get("mb", 1), C=f["ic"], H=f["ih"], W=f.get("iw", f["ih"]), OC=f["oc"],
        KH=f["kh"], KW=f.get("kw", f["kh"]),
        stride=(sh, f.get("sw", sh)), pad=(ph, f.get("pw", ph)),
        dil=(dh + 1, f.get("dw", dh) + 1), groups=f.get("g", 1),
    )
    if s.C % s.groups or s.OC % s.groups:
        raise ValueError(f"descriptor {desc!r}: g{s.groups} must divide ic{s.C} and oc{s.OC}")
    if s.OH < 1 or s.OW < 1:
        raise ValueError(f"descriptor {desc!r} gives an empty output ({s.OH}x{s.OW})")
    if "oh" in f and f["oh"] != s.OH or "ow" in f and f["ow"] != s.OW:
        raise ValueError(f"descriptor {desc!r}: oh/ow disagree with the computed {s.OH}x{s.OW}")
    return s


def _c(name, desc):
    return parse_descriptor(desc, name)


# The full suite. Names are "<net>.<layer>[.mb<N>]"; the descriptor says the rest.
_FULL: List[ConvShape] = [
    # ResNet-18 3x3 stages, batch 1 and 8.
    _c("r18.l1", "mb1ic64ih56oc64kh3ph1"),
    _c("r18.l1", "mb8ic64ih56oc64kh3ph1"),
    _c("r18.l2", "mb1ic128ih28oc128kh3ph1"),
    _c("r18.l2", "mb8ic128ih28oc128kh3ph1"),
    _c("r18.l3", "mb1ic256ih14oc256kh3ph1"),
    _c("r18.l3", "mb8ic256ih14oc256kh3ph1"),
    _c("r18.l4", "mb1ic512ih7oc512kh3ph1"),
    _c("r18.l4", "mb8ic512ih7oc512kh3ph1"),
    # The 7x7 stride-2 stem.
    _c("r18.stem", "mb1ic3ih224oc64kh7sh2ph3"),
    _c("r18.stem", "mb8ic3ih224oc64kh7sh2ph3"),
    # Stride-2 3x3 (ResNet-18 layer-2 entry) and the stride-2 1x1 downsample.
    _c("r18.l2.s2", "mb1ic64ih56oc128kh3sh2ph1"),
    _c("r18.l2.s2", "mb8ic64ih56oc128kh3sh2ph1"),
    _c("r18.l2.ds", "mb8ic64ih56oc128kh1sh2"),
    # 1x1 (ResNet-50 bottleneck reduce / expand).
    _c("r50.1x1.red", "mb1ic256ih56oc64kh1"),
    _c("r50.1x1.red", "mb8ic256ih56oc64kh1"),
    _c("r50.1x1.exp", "mb8ic64ih56oc256kh1"),
    _c("r50.1x1.l4", "mb8ic512ih7oc2048kh1"),
    # Depthwise 3x3 (MobileNet).
    _c("mbv1.dw1", "g32mb1ic32ih112oc32kh3ph1"),
    _c("mbv1.dw1", "g32mb8ic32ih112oc32kh3ph1"),
    _c("mbv1.dw13", "g512mb1ic512ih14oc512kh3ph1"),
    _c("mbv1.dw13", "g512mb8ic512ih14oc512kh3ph1"),
    # Dilation 2 (DeepLab-style atrous 3x3).
    _c("dil2", "mb1ic256ih28oc256kh3ph2dh1"),
    _c("dil2", "mb8ic128ih28oc128kh3ph2dh1"),
    # MNIST-sized, batch 64.
    _c("mnist.c1", "mb64ic1ih28oc32kh3"),
    _c("mnist.c2", "mb64ic32ih13oc64kh3"),
    # CIFAR-sized, batch 64.
    _c("cifar.c1", "mb64ic3ih32oc32kh3ph1"),
    _c("cifar.c2", "mb64ic32ih32oc32kh3ph1"),
    _c("cifar.c3", "mb64ic32ih16oc64kh3ph1"),
    _c("cifar.c4", "mb64ic64ih8oc128kh3ph1"),
]

# A smoke subset that runs in seconds, touching each code path once:
# 3x3 big-spatial, 3x3 small-spatial, 7x7/s2, 1x1, depthwise, dilation, MNIST.
_QUICK_DESCS = [
    "mb1ic64ih56oc64kh3ph1",
    "mb8ic512ih7oc512kh3ph1",
    "mb1ic3ih224oc64kh7sh2ph3",
    "mb1ic256ih56oc64kh1",
    "g32mb1ic32ih112oc32kh3ph1",
    "mb1ic256ih28oc256kh3ph2dh1",
    "mb1ic64ih56oc128kh3sh2ph1",
    "mb64ic32ih13oc64kh3",
]


def conv_suite(quick: bool = False) -> List[ConvShape]:
    if not quick:
        return list(_FULL)
    by_desc = {s.desc: s for s in _FULL}
    return [by_desc[d] for d in _QUICK_DESCS]


@dataclass(frozen=True)
class GemmShape:
    """C[m, n] = A[m, k] @ B[k, n]."""

    name: str
    m: int
    n: int
    k: int

    @property
    def desc(self) -> str:
        return f"m{self.m}n{self.n}k{self.k}"

    def flops(self) -> float:
        return 2.0 * self.m * self.n * self.k


_GEMM_FULL: List[GemmShape] = [
    GemmShape("square", 128, 128, 128),
    GemmShape("square", 256, 256, 256),
    GemmShape("square", 512, 512, 512),
    GemmShape("square", 1024, 1024, 1024),
    GemmShape("square", 2048, 2048, 2048),
    # im2col forward GEMMs of the conv suite: [OC, C*KH*KW] @ [C*KH*KW, OH*OW].
    GemmShape("r18.l1.fwd", 64, 3136, 576),
    GemmShape("r18.l2.fwd", 128, 784, 1152),
    GemmShape("r18.l3.fwd", 256, 196, 2304),
    GemmShape("r18.l4.fwd", 512, 49, 4608),
    GemmShape("r18.stem.fwd", 64, 12544, 147),
    GemmShape("r50.1x1.l4", 2048, 49, 512),
    # backward-weight shape of r18.l1 at batch 1: [OC, OHW] @ [OHW, C*9].
    GemmShape("r18.l1.bwd_w", 64, 576, 3136),
    # Linear layers: batch x in @ in x out.
    GemmShape("fc.mnist", 64, 128, 9216),
    GemmShape("fc.r18", 8, 1000, 512),
]

_GEMM_QUICK = ["m256n256k256", "m1024n1024k1024", "m64n3136k576", "m512n49k4608"]


def gemm_suite(quick: bool = False) -> List[GemmShape]:
    if not quick:
        return list(_GEMM_FULL)
    by_desc = {s.desc: s for s in _GEMM_FULL}
    return [by_desc[d] for d in _GEMM_QUICK]
