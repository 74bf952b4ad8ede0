"""Float64 direct sliding-window references for conv2d and its gradients.

These are the executable specification the fast path is tested against
(DESIGN.md rule 7: the reference and the fast path are different
algorithms). Nothing here calls pyconv, builds an im2col matrix or runs a
GEMM: every output pixel is computed by sliding the (dilated) kernel window
over the zero-padded input and summing the window's products. The loops run
over output positions (oy, ox); NumPy ``einsum`` only vectorises the batch,
group, channel and kernel-tap axes of one window.

Shapes (dimension letters as in the rest of pyconv)::

    conv2d_ref(x, w, b=None, stride=1, padding=0, dilation=1, groups=1) -> y
        x  (N, C, H, W) or unbatched (C, H, W)
        w  (OC, C/groups, KH, KW)
        b  (OC,) or None
        y  (N, OC, OH, OW), or (OC, OH, OW) for unbatched x; float64

    conv2d_backward_ref(dy, x, w, stride=1, padding=0, dilation=1, groups=1)
        -> (dx, dw, db)
        dy (N, OC, OH, OW)  (or (OC, OH, OW) with unbatched x)
        x  (N, C, H, W)     (or (C, H, W))
        w  (OC, C/groups, KH, KW)
        dx like x, dw like w, db (OC,); all float64

    resolve_padding(H, W, KH, KW, stride, padding, dilation)
        -> (top, bottom, left, right)

    conv2d_output_size(H, W, KH, KW, stride, padding, dilation) -> (OH, OW)

stride and dilation take an int or a pair (vertical, horizontal). padding
takes an int, a pair (vertical, horizontal), a 4-tuple (top, bottom, left,
right), 'valid' (no padding) or 'same' (PyTorch's rule: stride must be 1;
the total padding per axis is d*(k-1), the top/left side gets total // 2 and
the odd unit goes to the bottom/right). Output size per axis:
``O = (I + pad_lo + pad_hi - (d*(k-1) + 1)) // s + 1``.

All arithmetic is float64 whatever the input dtype, so these functions are
the reference for float16/float32/float64 and integer inputs alike.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

__all__ = [
    "conv2d_ref",
    "conv2d_backward_ref",
    "resolve_padding",
    "conv2d_output_size",
]


def _pair(name, v) -> Tuple[int, int]:
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name} must be an int or a pair, got {v!r}")
        a, b = (int(t) for t in v)
    else:
        a = b = int(v)
    if a < 1 or b < 1:
        raise ValueError(f"{name} must be positive, got {v!r}")
    return a, b


def resolve_padding(H: int, W: int, KH: int, KW: int, stride=1, padding=0,
                    dilation=1) -> Tuple[int, int, int, int]:
    """Explicit (top, bottom, left, right) zero padding for the given arguments."""
    sh, sw = _pair("stride", stride)
    dh, dw = _pair("dilation", dilation)
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0, 0, 0
        if padding == "same":
            if (sh, sw) != (1, 1):
                raise ValueError(f"padding='same' needs stride 1, got {stride!r}")
            th, tw = dh * (KH - 1), dw * (KW - 1)  # total padding per axis
            return th // 2, th - th // 2, tw // 2, tw - tw // 2
        raise ValueError(f"unknown padding string {padding!r}")
    if isinstance(padding, (tuple, list)):
        if len(padding) == 2:
            ph, pw = (int(p) for p in padding)
            pads = (ph, ph, pw, pw)
        elif len(padding) == 4:
            pads = tuple(int(p) for p in padding)
        else:
            raise ValueError(f"padding must have 1, 2 or 4 entries, got {padding!r}")
    else:
        p = int(padding)
        pads = (p, p, p, p)
    if min(pads) < 0:
        raise ValueError(f"padding must be non-negative, got {padding!r}")
    return pads


def conv2d_output_size(H: int, W: int, KH: int, KW: int, stride=1, padding=0,
                       dilation=1) -> Tuple[int, int]:
    """(OH, OW) of a convolution; ValueError if the kernel does not fit."""
    sh, sw = _pair("stride", stride)
    dh, dw = _pair("dilation", dilation)
    pt, pb, pl, pr = resolve_padding(H, W, KH, KW, stride, padding, dilation)
    ekh, ekw = dh * (KH - 1) + 1, dw * (KW - 1) + 1
    Hp, Wp = H + pt + pb, W + pl + pr
    if Hp < ekh or Wp < ekw:
        raise ValueError(f"kernel extent ({ekh}, {ekw}) exceeds padded input ({Hp}, {Wp})")
    return (Hp - ekh) // sh + 1, (Wp - ekw) // sw + 1


class _Geom:
    """Everything the two loops need, resolved once."""

    def __init__(self, x_shape, w_shape, stride, padding, dilation, groups):
        if len(x_shape) != 4 or len(w_shape) != 4:
            raise ValueError(f"x and w must be 4-d, got {x_shape} and {w_shape}")
        self.N, self.C, self.H, self.W = x_shape
        self.OC, self.Cg, self.KH, self.KW = w_shape
        self.G = int(groups)
        if self.G < 1 or self.C % self.G or self.OC % self.G or self.C // self.G != self.Cg:
            raise ValueError(
                f"inconsistent channels: x {x_shape}, w {w_shape}, groups={groups}")
        self.OCg = self.OC // self.G
        self.sh, self.sw = _pair("stride", stride)
        self.dh, self.dw = _pair("dilation", dilation)
        self.pt, self.pb, self.pl, self.pr = resolve_padding(
            self.H, self.W, self.KH, self.KW, stride, padding, dilation)
        self.OH, self.OW = conv2d_output_size(
            self.H, self.W, self.KH, self.KW, stride, padding, dilation)
        self.Hp = self.H + self.pt + self.pb
        self.Wp = self.W + self.pl + self.pr
        self.ekh = self.dh * (self.KH - 1) + 1  # dilated kernel extent
        self.ekw = self.dw * (self.KW - 1) + 1

    def window(self, oy: int, ox: int):
        """Index of output pixel (oy, ox)'s receptive field in the padded image:
        KH x KW taps, dilation apart, starting at (oy*sh, ox*sw)."""
        iy, ix = oy * self.sh, ox * self.sw
        return (Ellipsis, slice(iy, iy + self.ekh, self.dh), slice(ix, ix + self.ekw, self.dw))


def _f64(a) -> np.ndarray:
    return np.array(a, dtype=np.float64, copy=True)


def conv2d_ref(x, w, b: Optional[np.ndarray] = None, stride=1, padding=0, dilation=1,
               groups: int = 1) -> np.ndarray:
    """y[n, o, oy, ox] = b[o] + sum_{c, ky, kx} x_pad[n, g*Cg + c, oy*sh + ky*dh, ox*sw + kx*dw]
    * w[o, c, ky, kx], with g = o // (OC/groups), in float64."""
    x, w = _f64(x), _f64(w)
    unbatched = x.ndim == 3
    if unbatched:
        x = x[None]
    g = _Geom(x.shape, w.shape, stride, padding, dilation, groups)
    # Explicit zero-padded copy of the input, split by group.
    xp = np.zeros((g.N, g.C, g.Hp, g.Wp))
    xp[:, :, g.pt:g.pt + g.H, g.pl:g.pl + g.W] = x
    xp = xp.reshape(g.N, g.G, g.Cg, g.Hp, g.Wp)
    wg = w.reshape(g.G, g.OCg, g.Cg, g.KH, g.KW)
    y = np.empty((g.N, g.G, g.OCg, g.OH, g.OW))
    with np.errstate(invalid="ignore", over="ignore"):  # inf/NaN propagate silently
        for oy in range(g.OH):
            for ox in range(g.OW):
                patch = xp[g.window(oy, ox)]  # (N, G, Cg, KH, KW)
                y[:, :, :, oy, ox] = np.einsum("ngckl,gockl->ngo", patch, wg)
    y = y.reshape(g.N, g.OC, g.OH, g.OW)
    if b is not None:
        b = _f64(b)
        if b.shape != (g.OC,):
            raise ValueError(f"b must have shape ({g.OC},), got {b.shape}")
        y += b[None, :, None, None]
    return y[0] if unbatched else y


def conv2d_backward_ref(dy, x, w, stride=1, padding=0, dilation=1, groups: int = 1):
    """Gradients of ``sum(conv2d_ref(x, w, b) * dy)``: returns (dx, dw, db) in float64.

    dx is built by scattering each output pixel's dy * w back onto its
    receptive field (then cropping the padding away); dw accumulates
    dy * window over every output pixel; db sums dy over N, OH and OW.
    """
    dy, x, w = _f64(dy), _f64(x), _f64(w)
    unbatched = x.ndim == 3
    if unbatched:
        x = x[None]
        if dy.ndim == 3:
            dy = dy[None]
    g = _Geom(x.shape, w.shape, stride, padding, dilation, groups)
    if dy.shape != (g.N, g.OC, g.OH, g.OW):
        raise ValueError(f"dy must have shape {(g.N, g.OC, g.OH, g.OW)}, got {dy.shape}")
    xp = np.zeros((g.N, g.C, g.Hp, g.Wp))
    xp[:, :, g.pt:g.pt + g.H, g.pl:g.pl + g.W] = x
    xp = xp.reshape(g.N, g.G, g.Cg, g.Hp, g.Wp)
    wg = w.reshape(g.G, g.OCg, g.Cg, g.KH, g.KW)
    dyg = dy.reshape(g.N, g.G, g.OCg, g.OH, g.OW)
    dxp = np.zeros_like(xp)
    dwg = np.zeros_like(wg)
    with np.errstate(invalid="ignore", over="ignore"):  # inf/NaN propagate silently
        for oy in range(g.OH):
            for ox in range(g.OW):
                win = g.window(oy, ox)
                d = dyg[:, :, :, oy, ox]  # (N, G, OCg)
                # The taps of one window are distinct pixels, so += on the view is exact.
                dxp[win] += np.einsum("ngo,gockl->ngckl", d, wg)
                dwg += np.einsum("ngo,ngckl->gockl", d, xp[win])
    dx = dxp.reshape(g.N, g.C, g.Hp, g.Wp)[:, :, g.pt:g.pt + g.H, g.pl:g.pl + g.W].copy()
    dw = dwg.reshape(w.shape)
    db = dy.sum(axis=(0, 2, 3))
    return (dx[0] if unbatched else dx), dw, db
