"""Benchmark shape suites: convolution layers named in the benchdnn style, GEMM sizes,
and the memory-bound ops (pooling, activations, softmax, losses, batch norm, pad).

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
from typing import List, Optional, Tuple

__all__ = [
    "ConvShape",
    "GemmShape",
    "parse_descriptor",
    "conv_suite",
    "gemm_suite",
    "OpShape",
    "OPS",
    "ops_suite",
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


# --------------------------------------------------------------------------
# memory-bound ops
# --------------------------------------------------------------------------
# The ops of the "ops" section, in table order. Each runs "fwd" and "bwd".
OPS = ("max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "relu", "sigmoid", "tanh", "gelu",
       "batch_norm", "pad_reflect", "softmax", "log_softmax", "cross_entropy")

_POOLS = ("max_pool2d", "avg_pool2d", "adaptive_avg_pool2d")
_ROWWISE = ("softmax", "log_softmax", "cross_entropy")  # over axis 1 of (N, C) logits


@dataclass(frozen=True)
class OpShape:
    """One memory-bound op on one input shape.

    shape: (N, C, H, W) for pooling, batch norm and pad; (N, C) logits for
    softmax / log_softmax / cross_entropy; any shape for the elementwise ops.
    kernel / stride / pad: the square pooling window (adaptive_avg_pool2d is
    global: output 1x1), or for pad_reflect the padding on each of the 4 sides.
    """

    name: str
    shape: Tuple[int, ...]
    kernel: int = 0
    stride: int = 0
    pad: int = 0

    def __post_init__(self):
        if self.name not in OPS:
            raise ValueError(f"unknown op {self.name!r}; choose from {', '.join(OPS)}")
        need = 4 if self.name in _POOLS + ("batch_norm", "pad_reflect") else \
            2 if self.name in _ROWWISE else None
        if need is not None and len(self.shape) != need:
            raise ValueError(f"{self.name} takes a {need}-d input, got {self.shape}")

    @property
    def x_shape(self) -> Tuple[int, ...]:
        return tuple(self.shape)

    @property
    def y_shape(self) -> Tuple[int, ...]:
        """Output shape (a scalar loss is ())."""
        s = self.shape
        if self.name in ("max_pool2d", "avg_pool2d"):
            o = lambda n: (n + 2 * self.pad - self.kernel) // self.stride + 1  # noqa: E731
            return (s[0], s[1], o(s[2]), o(s[3]))
        if self.name == "adaptive_avg_pool2d":
            return (s[0], s[1], 1, 1)
        if self.name == "pad_reflect":
            return (s[0], s[1], s[2] + 2 * self.pad, s[3] + 2 * self.pad)
        if self.name == "cross_entropy":
            return ()  # reduction='mean'
        return tuple(s)

    @property
    def n_in(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def n_out(self) -> int:
        n = 1
        for d in self.y_shape:
            n *= d
        return n

    @property
    def desc(self) -> str:
        """benchdnn-like: mb<N>ic<C>ih<H>[iw<W>] for 4-d, mb<N>ic<C> for 2-d, n<size> else;
        then kh<K>sh<S>[ph<P>] for a pooling window, oh1 for global pooling, ph<P> for pad."""
        s = self.shape
        if len(s) == 4:
            d = f"mb{s[0]}ic{s[1]}ih{s[2]}" + (f"iw{s[3]}" if s[3] != s[2] else "")
        elif len(s) == 2:
            d = f"mb{s[0]}ic{s[1]}"
        else:
            d = "n" + "x".join(str(v) for v in s)
        if self.name in ("max_pool2d", "avg_pool2d"):
            d += f"kh{self.kernel}sh{self.stride}" + (f"ph{self.pad}" if self.pad else "")
        elif self.name == "adaptive_avg_pool2d":
            d += "oh1"
        elif self.name == "pad_reflect":
            d += f"ph{self.pad}"
        return d

    @property
    def small(self) -> bool:
        """An overhead case: the per-call cost, not bandwidth, decides its time."""
        return self.n_in <= 4096

    def bytes(self, direction: str, itemsize: int) -> float:
        """Bytes the op must move at minimum: each input read once plus each output
        written once (no write-allocate, no second pass; int64 indices / targets 8 B).
        n = input elements, m = output elements, s = itemsize, C = channels."""
        n, m, s = self.n_in, self.n_out, itemsize
        op, fwd = self.name, direction == "fwd"
        if op == "max_pool2d":
            # fwd: read x (n*s), write y (m*s) and the int64 indices (m*8).
            # bwd: read dy (m*s) and the indices (m*8), write dx (n*s); zeroing dx
            #      before the scatter is extra traffic an implementation may avoid.
            return n * s + m * s + m * 8
        if op in ("avg_pool2d", "adaptive_avg_pool2d"):
            # fwd: read x (n*s), write y (m*s); bwd: read dy (m*s), write dx (n*s).
            # (global pooling: m = N*C, so this is ~n*s.)
            return n * s + m * s
        if op in ("relu", "gelu"):
            # fwd: read x, write y: 2*n*s; bwd: read dy and the forward input x, write dx: 3*n*s.
            return (2 if fwd else 3) * n * s
        if op in ("sigmoid", "tanh"):
            # fwd: read x, write y: 2*n*s; bwd: read dy and the forward output y, write dx: 3*n*s.
            return (2 if fwd else 3) * n * s
        if op in ("softmax", "log_softmax"):
            # fwd: read x, write y: 2*n*s (a row of C floats is reread from cache, not memory).
            # bwd: read dy and the forward output y, write dx: 3*n*s.
            return (2 if fwd else 3) * n * s
        if op == "cross_entropy":
            # fwd: read logits (n*s) and int64 targets (N*8), write one scalar (s).
            # bwd: read logits (the softmax is recomputed) and targets, write dlogits: 2*n*s + N*8.
            N = self.shape[0]
            return (n * s + N * 8 + s) if fwd else (2 * n * s + N * 8)
        if op == "batch_norm":
            C = self.shape[1]
            # fwd (training): read x, write y: 2*n*s; per channel read weight, bias,
            #   running mean/var and write running mean/var, save_mean, save_invstd: 8*C*s.
            #   The statistics need x before y can be written, so x is read twice
            #   unless it stays in cache: 3*n*s is the practical floor (67% of this rate).
            # bwd: read dy and x, write dx: 3*n*s; per channel read weight, save_mean,
            #   save_invstd and write dweight, dbias: 5*C*s. The sums over dy and
            #   dy*xhat come first, so dy and x are read twice unless cached: 5*n*s
            #   is the practical floor (60% of this rate).
            return (2 * n * s + 8 * C * s) if fwd else (3 * n * s + 5 * C * s)
        if op == "pad_reflect":
            # fwd: read x (n*s), write the padded y (m*s); bwd: read dy (m*s), write dx (n*s).
            return n * s + m * s
        raise ValueError(f"no byte model for {op!r}")


def _op(name, shape, kernel=0, stride=0, pad=0):
    return OpShape(name, tuple(shape), kernel, stride, pad)


def _ops_4d(shape, pool_k, pool_s, pool_p) -> List[OpShape]:
    return [
        _op("max_pool2d", shape, pool_k, pool_s, pool_p),
        _op("avg_pool2d", shape, 2, 2),
        _op("adaptive_avg_pool2d", shape),
        *(_op(a, shape) for a in ("relu", "sigmoid", "tanh", "gelu")),
        _op("batch_norm", shape),
        _op("pad_reflect", shape, pad=1),
    ]


def _ops_rows(shape) -> List[OpShape]:
    return [_op(a, shape) for a in _ROWWISE]


# Overhead cases: per-call cost dominates; compared with a bare NumPy ufunc call.
_OPS_SMALL: List[OpShape] = [
    _op("relu", (1000,)),
    _op("max_pool2d", (1, 1, 8, 8), 2, 2),
]

# Large activations: CIFAR-sized batch 64 (16 MiB in float32; the max_pool2d
# shape) and ResNet-18 layer 1 at batch 8 (the stem's 3x3/s2 max pool).
_OPS_FULL: List[OpShape] = [
    *_ops_4d((64, 64, 32, 32), 2, 2, 0),
    *_ops_4d((8, 64, 56, 56), 3, 2, 1),
    *_ops_rows((512, 1000)),     # ImageNet logits, batch 512 (2 MiB)
    *_ops_rows((4096, 1000)),    # 16 MiB of logits
    *_ops_rows((65536, 10)),     # many short rows (MNIST/CIFAR-10 classes)
    *_OPS_SMALL,
]

_OPS_QUICK: List[OpShape] = [
    *_ops_4d((64, 64, 32, 32), 2, 2, 0),
    *_ops_rows((4096, 1000)),
    *_OPS_SMALL,
]


def ops_suite(quick: bool = False, names: Optional[List[str]] = None) -> List[OpShape]:
    """The ops cases, optionally only the ops in ``names``."""
    base = list(_OPS_QUICK if quick else _OPS_FULL)
    return [s for s in base if names is None or s.name in names]
