"""Check-then-time benchmark harness (the llm.c ``dev/cuda`` pattern).

For every shape and direction the runner

1. **checks** pyconv's result against a float64 reference (torch when it is
   installed, else the NumPy im2col baseline) and marks the row ok / FAIL;
2. **times** pyconv, torch and the NumPy baseline: warm-up calls, then repeats
   until ``reps`` calls or the time budget, and keeps the median (pyconv's and
   torch's calls in alternating blocks);
3. prints the napkin maths: GFLOP/s, % of the measured peak (the single-thread
   micro-kernel peak times the thread count) and time ratios (>1: pyconv is
   faster).

The ``ops`` section does the same for the memory-bound ops (pooling,
activations, softmax, cross-entropy, batch norm, reflect padding): its yardstick
is bandwidth, not FLOPs. Each row reports GB/s for the minimum traffic the op
needs (``OpShape.bytes``: inputs read once, outputs written once) and the
percentage of the STREAM triad bandwidth measured in C++ with the same thread
count (``pyconv._C.triad_gbps``) at the start of the section.

All three libraries run with the same thread count: ``pyconv.set_num_threads``,
``torch.set_num_threads`` and the OpenBLAS pool behind ``numpy.matmul`` (see
:class:`pyconv.bench.baselines.BlasThreads`). Each library is timed in blocks
of calls, so that two thread pools never alternate call by call, and pyconv's
and torch's blocks take turns (four each, :func:`time_fns`): this shared
machine's speed drifts over seconds, and the two medians then come from the
same stretch of time, which keeps the drift out of their ratio.

Determinism: pyconv promises results independent of the thread count. After
the first thread count the runner hashes pyconv's output and, when it matches
the first run bit for bit, reuses that run's check; otherwise it re-checks
against the reference and marks the row with ``*``.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

import pyconv

from . import baselines as B
from .shapes import (ConvShape, GemmShape, OpShape, conv_suite, gemm_suite, ops_suite,
                     parse_descriptor)

__all__ = ["Options", "main", "run", "time_fn", "time_fns", "check_close", "check_close_many"]

DIRECTIONS = ("fwd", "bwd_d", "bwd_w")
SECTIONS = ("conv", "gemm", "ops")
OP_DIRECTIONS = ("fwd", "bwd")
REGRESSION_DROP = 0.10  # --compare flags a GFLOP/s (ops: GB/s) drop larger than this
# pyconv._C.triad_gbps arguments: 3 arrays of 2**25 floats (128 MiB each, far past
# the caches), best pass within 0.5 s.
TRIAD_N = 1 << 25
TRIAD_SECONDS = 0.5


# --------------------------------------------------------------------------
# options
# --------------------------------------------------------------------------
@dataclass
class Options:
    quick: bool = False
    threads: List[int] = field(default_factory=list)  # [] -> pyconv's current count
    dtype: str = "float32"
    directions: Sequence[str] = DIRECTIONS
    sections: Sequence[str] = SECTIONS
    filter: Optional[str] = None
    shapes: List[str] = field(default_factory=list)  # extra descriptors (replace the suite)
    use_torch: bool = True
    use_numpy: bool = True
    reps: Optional[int] = None
    budget: Optional[float] = None
    warmup: Optional[int] = None
    numpy_max_s: Optional[float] = None
    json_path: Optional[str] = None
    compare_path: Optional[str] = None
    fail_on_regression: bool = False
    seed: int = 0

    # Defaults that depend on --quick.
    def n_reps(self) -> int:
        return self.reps if self.reps is not None else (5 if self.quick else 30)

    def t_budget(self) -> float:
        return self.budget if self.budget is not None else (0.15 if self.quick else 1.0)

    def n_warmup(self) -> int:
        return self.warmup if self.warmup is not None else (1 if self.quick else 2)

    def np_max_s(self) -> float:
        # The NumPy baseline is skipped ('-') where one call is estimated to take longer.
        return self.numpy_max_s if self.numpy_max_s is not None else (0.3 if self.quick else 1.5)


# --------------------------------------------------------------------------
# timing and checking
# --------------------------------------------------------------------------
def time_fn(fn: Callable[[], object], reps: int, budget: float, warmup: int = 1,
            min_reps: int = 3) -> float:
    """Median seconds per call: ``warmup`` untimed calls, then up to ``reps`` timed
    calls, stopping early (after at least ``min_reps``) once ``budget`` seconds pass."""
    for _ in range(max(warmup, 0)):
        fn()
    times = []
    t_end = time.perf_counter() + budget
    while len(times) < max(reps, 1):
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        times.append(t1 - t0)
        if t1 > t_end and len(times) >= min(min_reps, reps):
            break
    return statistics.median(times)


def time_fns(fns: Sequence[Callable[[], object]], reps: int, budget: float, warmup: int = 1,
             rounds: int = 4, min_reps: int = 3) -> List[float]:
    """Median seconds per call of each of ``fns``, timed in alternating blocks.

    Each library gets ``rounds`` blocks of calls, the libraries taking turns
    (pyconv, torch, pyconv, torch, ...), each block preceded by untimed calls
    (``warmup`` before the first block, one before the others, so a block
    never times the call that follows the other library's). Together a
    library's blocks hold up to ``reps`` calls and last about ``budget``
    seconds. On a shared machine whose speed drifts over seconds, one block
    per library would hand the drift to the ratio between them; interleaved
    blocks sample both libraries over the same stretch of time."""
    rounds = max(1, min(rounds, reps))
    per_block = -(-max(reps, 1) // rounds)
    block_budget = budget / rounds
    block_min = -(-min(min_reps, reps) // rounds)
    times: List[List[float]] = [[] for _ in fns]
    for rnd in range(rounds):
        for i, fn in enumerate(fns):
            for _ in range(max(warmup, 0) if rnd == 0 else 1):
                fn()
            t_end = time.perf_counter() + block_budget
            for k in range(per_block):
                t0 = time.perf_counter()
                fn()
                t1 = time.perf_counter()
                times[i].append(t1 - t0)
                if t1 > t_end and k + 1 >= block_min:
                    break
    return [statistics.median(t) for t in times]


def rel_err(out: np.ndarray, ref: np.ndarray) -> float:
    """max |out - ref| / max |ref| (inf on a shape mismatch or a non-finite value)."""
    out = np.asarray(out)
    ref = np.asarray(ref)
    if out.shape != ref.shape:
        return math.inf
    if out.size == 0:
        return 0.0
    d = np.abs(out.astype(np.float64) - ref.astype(np.float64)).max()
    if not np.isfinite(d):
        return math.inf
    scale = float(np.abs(ref).max())
    return float(d / scale) if scale > 0 else float(d)


def tolerance(dtype: str) -> float:
    """Allowed rel_err. Inputs are standard normal, so max|ref| ~ sqrt(K); float32
    blocked sums stay near 1e-6 of that for K up to ~1e5."""
    return 1e-4 if dtype == "float32" else 1e-10


def check_close(out: np.ndarray, ref: np.ndarray, dtype: str):
    """(ok, rel_err) against a float64 reference."""
    e = rel_err(out, ref)
    return e <= tolerance(dtype), e


def _as_arrays(out) -> tuple:
    """A result as a tuple of arrays (ops such as max_pool2d return several)."""
    if isinstance(out, (tuple, list)):
        return tuple(np.asarray(o) for o in out)
    return (np.asarray(out),)


def check_close_many(outs, refs, dtype: str):
    """(ok, worst rel_err) over matching outputs; integer outputs (indices) must be equal."""
    outs, refs = _as_arrays(outs), _as_arrays(refs)
    if len(outs) != len(refs):
        return False, math.inf
    err = 0.0
    for o, r in zip(outs, refs):
        if o.dtype.kind in "iub" or r.dtype.kind in "iub":
            e = 0.0 if o.shape == r.shape and np.array_equal(o, r) else math.inf
        else:
            e = rel_err(o, r)
        err = max(err, e)
    return err <= tolerance(dtype), err


def _digest(out) -> str:
    h = hashlib.blake2b(digest_size=16)
    for a in _as_arrays(out):
        h.update(np.ascontiguousarray(a).reshape(-1).view(np.uint8))
    return h.hexdigest()


def _settle(seconds: float = 0.2) -> None:
    """Let OpenBLAS' workers stop spinning before the OpenMP pool is timed again.

    They busy-wait for ~2**28 cycles (~0.1 s) after a call; on 2 cores a spinning
    worker steals a core from pyconv's team, and pyconv calls measured within 50 ms
    of a 2-thread matmul ran 5-10x slower (multiples of the 4 ms scheduler tick)."""
    time.sleep(seconds)


# --------------------------------------------------------------------------
# environment
# --------------------------------------------------------------------------
def _cpu_fields() -> Dict[str, str]:
    out: Dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                if not ln.strip():
                    break  # first processor only
                k, _, v = ln.partition(":")
                out[k.strip()] = v.strip()
    except OSError:
        pass
    return out


def _cpu_model() -> str:
    f = _cpu_fields()
    name = f.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in f:
        name += f" (family {f['cpu family']} model {f.get('model', '?')})"
    return name


def _cpu_simd() -> List[str]:
    flags = set(_cpu_fields().get("flags", "").split())
    return [x for x in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512dq",
                        "avx512vl", "avx512_bf16", "avx512_vnni") if x in flags]


class CpuMonitor:
    """CPU time other processes burned while we ran: on 2 shared cores this is the
    main source of noise, so every table reports it."""

    def __init__(self):
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.start = self._snap()

    @staticmethod
    def _snap():
        try:
            with open("/proc/stat") as f:
                v = [int(t) for t in f.readline().split()[1:]]
            busy = sum(v) - v[3] - (v[4] if len(v) > 4 else 0)  # minus idle and iowait
            with open("/proc/self/stat") as f:
                st = f.read().rsplit(")", 1)[1].split()
            mine = int(st[11]) + int(st[12])  # utime + stime of all our threads
            return time.monotonic(), busy, mine
        except (OSError, ValueError, IndexError):
            return None

    def reset(self) -> None:
        self.start = self._snap()

    def other_cores(self) -> Optional[float]:
        """Average number of cores used by other processes since reset()."""
        end = self._snap()
        if self.start is None or end is None or end[0] <= self.start[0]:
            return None
        elapsed = end[0] - self.start[0]
        if elapsed < 1.0:  # /proc/stat ticks at 100 Hz: too coarse for short spans
            return None
        other = (end[1] - self.start[1]) - (end[2] - self.start[2])
        return min(max(other, 0) / self.hz / elapsed, float(os.cpu_count() or 1))


def _loadavg() -> Optional[float]:
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class Env:
    """Libraries, thread control and the measured peak for one run."""

    def __init__(self, opts: Options):
        self.opts = opts
        self.torch = B.load_torch() if opts.use_torch else None
        self.torch_missing = opts.use_torch and self.torch is None
        self.blas = B.BlasThreads()
        self.initial_threads = pyconv.get_num_threads()
        self.initial_torch_threads = self.torch.get_num_threads() if self.torch else None
        cfg = pyconv.config()
        self.config = cfg
        self.kernel = cfg["sgemm_kernel"] if opts.dtype == "float32" else cfg["dgemm_kernel"]
        self.loadavg = _loadavg()
        self.peak_1t = float(pyconv._C.ukernel_peak_gflops(opts.dtype))
        self.background: Dict[int, Optional[float]] = {}  # threads -> other processes' cores
        self.peak_after: Dict[int, float] = {}  # threads -> 1-thread peak re-measured after
        self.triad: Dict[int, float] = {}  # threads -> STREAM triad GB/s (ops section)

    def measure_triad(self, threads: int) -> float:
        if threads not in self.triad:
            self.triad[threads] = float(pyconv._C.triad_gbps(
                n=TRIAD_N, nthreads=threads, seconds=TRIAD_SECONDS))
        return self.triad[threads]

    def set_threads(self, n: int) -> None:
        pyconv.set_num_threads(n)
        if self.torch is not None:
            self.torch.set_num_threads(n)
        self.blas.set(n)

    def restore(self) -> None:
        pyconv.set_num_threads(self.initial_threads)
        if self.torch is not None:
            self.torch.set_num_threads(self.initial_torch_threads)
        self.blas.restore()

    def meta(self) -> dict:
        t = self.torch
        return {
            "timestamp": datetime.datetime.now().isoformat(timespec="seconds"),
            "host": platform.node(),
            "cpu": _cpu_model(),
            "cpu_count": os.cpu_count(),
            "cpu_simd": _cpu_simd(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": t.__version__ if t is not None else None,
            "blas": self.blas.describe(),
            "pyconv_config": self.config,
            "dtype": self.opts.dtype,
            "kernel": self.kernel,
            "peak_gflops_1thread": self.peak_1t,
            "peak_note": "pyconv._C.ukernel_peak_gflops: single-thread micro-kernel FMA rate on "
                         "L1-resident panels; the n-thread peak is assumed to be n times this",
            "loadavg_at_start": self.loadavg,
            "background_cores": {str(k): v for k, v in self.background.items()},
            "peak_gflops_1thread_after": {str(k): v for k, v in self.peak_after.items()},
            "triad_gbps": {str(k): v for k, v in self.triad.items()},
            "triad_note": f"pyconv._C.triad_gbps(n={TRIAD_N}, nthreads=T, "
                          f"seconds={TRIAD_SECONDS}): best STREAM triad a=b+s*c GB/s (12 bytes per float element, no "
                          "write-allocate) with T threads, measured at the start of the ops "
                          "section; the ops' %triad is against it",
            "quick": self.opts.quick,
            "reps": self.opts.n_reps(),
            "budget_s": self.opts.t_budget(),
            "warmup": self.opts.n_warmup(),
            "sections": list(self.opts.sections),
            "directions": list(self.opts.directions),
            "filter": self.opts.filter,
            "shapes": list(self.opts.shapes),
        }

    def header(self) -> str:
        k = self.kernel
        t = self.torch
        if t is not None:
            tv = f"torch {t.__version__}"
        elif self.torch_missing:
            tv = "torch not installed"
        else:
            tv = "torch off (--no-torch)"
        ref = "torch float64" if t is not None else \
            "NumPy im2col float64 (ops: pyconv.testing.reference_ops)"
        lines = [
            f"pyconv {pyconv.__version__} bench | {self.opts.dtype} | isa {self.config['isa']} "
            f"(supported {','.join(self.config['supported_isas'])}) | {self.config['compiler']}",
            f"kernel {k['name']}  MR={k['mr']} NR={k['nr']} MC={k['mc']} KC={k['kc']} NC={k['nc']}",
            f"cpu {_cpu_model()} ({os.cpu_count()} cpus) | numpy {np.__version__} | {tv}",
            f"{self.blas.describe()} | load average at start {self.loadavg}",
            f"peak: {self.peak_1t:.1f} GFLOP/s measured on 1 thread (micro-kernel, L1-resident); "
            f"n-thread peak assumed = n x {self.peak_1t:.1f}",
            f"check: rel_err = max|pyconv-ref|/max|ref| vs {ref}, tol {tolerance(self.opts.dtype):g}"
            f" | ratios = other ms / pyconv ms (>1: pyconv faster) | median of <= "
            f"{self.opts.n_reps()} reps or {self.opts.t_budget():g} s",
        ]
        return "\n".join(lines)


# --------------------------------------------------------------------------
# results and table
# --------------------------------------------------------------------------
@dataclass
class Row:
    section: str
    name: str
    desc: str
    direction: str
    threads: int
    dtype: str
    flops: float
    ok: Optional[bool] = None
    err: Optional[float] = None
    deterministic: Optional[bool] = None  # bit-identical to the first thread count
    ms: Optional[float] = None
    torch_ms: Optional[float] = None
    numpy_ms: Optional[float] = None
    peak_gflops: float = 0.0
    note: str = ""
    bytes: Optional[float] = None  # ops: minimum bytes moved (OpShape.bytes)
    triad_gbps: Optional[float] = None  # ops: the measured triad bandwidth at this thread count
    key_desc: Optional[str] = None  # the key's descriptor field, when not desc (ops: op:desc)

    @property
    def key(self) -> str:
        d = self.key_desc or self.desc
        return f"{self.section}|{d}|{self.direction}|t{self.threads}|{self.dtype}"

    @property
    def gflops(self) -> Optional[float]:
        return self.flops / (self.ms * 1e6) if self.ms and self.flops else None

    @property
    def gbps(self) -> Optional[float]:
        return self.bytes / (self.ms * 1e6) if self.ms and self.bytes else None

    @property
    def pct_triad(self) -> Optional[float]:
        g = self.gbps
        return 100.0 * g / self.triad_gbps if g is not None and self.triad_gbps else None

    @property
    def rate_field(self) -> str:
        """The throughput --compare watches: GB/s for ops, GFLOP/s otherwise."""
        return "gbps" if self.section == "ops" else "gflops"

    @property
    def rate(self) -> Optional[float]:
        return getattr(self, self.rate_field)

    @property
    def rate_unit(self) -> str:
        return "GB/s" if self.section == "ops" else "GFLOP/s"

    @property
    def pct_peak(self) -> Optional[float]:
        g = self.gflops
        return 100.0 * g / self.peak_gflops if g is not None and self.peak_gflops else None

    @property
    def torch_ratio(self) -> Optional[float]:
        return self.torch_ms / self.ms if self.torch_ms and self.ms else None

    @property
    def numpy_ratio(self) -> Optional[float]:
        return self.numpy_ms / self.ms if self.numpy_ms and self.ms else None

    def to_json(self) -> dict:
        d = {k: getattr(self, k) for k in (
            "section", "name", "desc", "direction", "threads", "dtype", "flops", "ok", "err",
            "deterministic", "ms", "torch_ms", "numpy_ms", "peak_gflops", "note")}
        d.update(key=self.key, gflops=self.gflops, pct_peak=self.pct_peak,
                 torch_ratio=self.torch_ratio, numpy_ratio=self.numpy_ratio)
        if self.section == "ops":
            d.update(bytes=self.bytes, gbps=self.gbps, triad_gbps=self.triad_gbps,
                     pct_triad=self.pct_triad)
        if d["err"] is not None and not math.isfinite(d["err"]):
            d["err"] = None
        return d


class Table:
    """Aligned rows, printed as they are produced. kind "flops" (conv, gemm) or "ops"."""

    def __init__(self, old: Optional[Dict[str, dict]], out=sys.stdout, name_w: int = 12,
                 shape_w: int = 30, kind: str = "flops"):
        self.old = old
        self.out = out
        self.kind = kind
        if kind == "ops":
            self.cols = [("name", name_w, "<"), ("shape", shape_w, "<"), ("dir", 5, "<"),
                         ("check", 12, "<"), ("ms", 9, ">"), ("GB/s", 7, ">"), ("%triad", 6, ">"),
                         ("torch ms", 9, ">"), ("x torch", 7, ">"), ("ufunc ms", 9, ">")]
        else:
            self.cols = [("name", name_w, "<"), ("shape", shape_w, "<"), ("dir", 5, "<"),
                         ("check", 12, "<"), ("ms", 9, ">"), ("GFLOP/s", 8, ">"), ("%peak", 6, ">"),
                         ("torch ms", 9, ">"), ("x torch", 7, ">"), ("x numpy", 7, ">")]
        if old is not None:
            self.cols.append(("vs old", 16, "<"))

    def _fmt(self, cells) -> str:
        parts = []
        for (h, wd, al), c in zip(self.cols, cells):
            parts.append(f"{c:{al}{wd}}")
        return "  ".join(parts).rstrip()

    def header(self) -> None:
        print(self._fmt([c[0] for c in self.cols]), file=self.out)
        print(self._fmt(["-" * c[1] for c in self.cols]), file=self.out)

    def row(self, r: Row) -> None:
        def f(v, spec, suffix=""):
            return "-" if v is None else f"{v:{spec}}{suffix}"

        if r.ok is None:
            check = "-"
        else:
            check = ("ok " if r.ok else "FAIL ") + (f"{r.err:.0e}" if r.err is not None and
                                                    math.isfinite(r.err) else "inf")
            if r.deterministic is False:
                check += "*"
        if self.kind == "ops":
            cells = [r.name, r.desc, r.direction, check, _fmt_ms(r.ms), f(r.gbps, ".1f"),
                     f(r.pct_triad, ".0f"), _fmt_ms(r.torch_ms), f(r.torch_ratio, ".2f"),
                     _fmt_ms(r.numpy_ms)]
        else:
            cells = [r.name, r.desc, r.direction, check, f(r.ms, ".3f"), f(r.gflops, ".1f"),
                     f(r.pct_peak, ".1f"), f(r.torch_ms, ".3f"), f(r.torch_ratio, ".2f"),
                     f(r.numpy_ratio, ".2f")]
        if self.old is not None:
            cells.append(compare_cell(r, self.old.get(r.key)))
        print(self._fmt(cells), file=self.out, flush=True)


def _fmt_ms(v: Optional[float]) -> str:
    """ms with 3 decimals, 4 below 1 ms (the overhead cases take microseconds)."""
    if v is None:
        return "-"
    return f"{v:.3f}" if v >= 1.0 else f"{v:.4f}"


def compare_cell(r: Row, old: Optional[dict]) -> str:
    f = r.rate_field
    if old is None or not old.get(f) or r.rate is None:
        return "new" if old is None else "-"
    change = r.rate / old[f] - 1.0
    s = f"{change * 100:+.0f}%"
    if change < -REGRESSION_DROP:
        s += " REGRESSION"
    return s


def geomean(vals) -> Optional[float]:
    vals = [v for v in vals if v is not None and v > 0 and math.isfinite(v)]
    return math.exp(sum(math.log(v) for v in vals) / len(vals)) if vals else None


# --------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------
def _select(items, opts: Options):
    if not opts.filter:
        return list(items)
    f = opts.filter.lower()
    return [s for s in items if f in s.name.lower() or f in s.desc.lower()]


def conv_shapes(opts: Options) -> List[ConvShape]:
    if opts.shapes:
        base = [parse_descriptor(d, name="custom") for d in opts.shapes]
    else:
        base = conv_suite(opts.quick)
    return _select(base, opts)


def gemm_shapes(opts: Options) -> List[GemmShape]:
    return _select(gemm_suite(opts.quick), opts) if not opts.shapes else []


def ops_shapes(opts: Options) -> List[OpShape]:
    # --shape replaces the suites with conv descriptors: no ops then (as for gemm).
    return _select(ops_suite(opts.quick), opts) if not opts.shapes else []


def op_directions(opts: Options) -> List[str]:
    """--directions for the ops: fwd keeps their forward, any bwd_* their backward."""
    dirs = ["fwd"] if "fwd" in opts.directions else []
    if any(d.startswith("bwd") for d in opts.directions):
        dirs.append("bwd")
    return dirs


def _op_inputs(s: OpShape, dt: np.dtype, seed: int) -> dict:
    """Standard-normal input x and output gradient g (a scalar 1 for the mean
    cross-entropy), plus int64 targets for cross_entropy and the affine
    parameters and running statistics for batch_norm."""
    rng = np.random.default_rng(seed)
    a = {"x": rng.standard_normal(s.x_shape).astype(dt)}
    if s.name == "cross_entropy":
        N, C = s.x_shape
        a["target"] = rng.integers(0, C, N).astype(np.int64)
        a["g"] = np.asarray(1.0, dtype=dt)
    else:
        a["g"] = rng.standard_normal(s.y_shape).astype(dt)
    if s.name == "batch_norm":
        C = s.x_shape[1]
        a["w"] = (1.0 + 0.1 * rng.standard_normal(C)).astype(dt)
        a["b"] = (0.1 * rng.standard_normal(C)).astype(dt)
        a["rm"] = np.zeros(C, dt)
        a["rv"] = np.ones(C, dt)
    return a


def _op_saved(s: OpShape, a: dict) -> None:
    """Add what the backward takes from the forward (computed by pyconv, untimed):
    max_pool2d's indices, the outputs of sigmoid / tanh / softmax / log_softmax,
    batch_norm's save_mean / save_invstd."""
    x = a["x"]
    if s.name == "max_pool2d" and "idx" not in a:
        a["idx"] = pyconv.max_pool2d(x, s.kernel, s.stride, s.pad, return_indices=True)[1]
    elif s.name in ("sigmoid", "tanh", "softmax", "log_softmax") and "y" not in a:
        f = getattr(pyconv, s.name)
        a["y"] = f(x) if s.name in ("sigmoid", "tanh") else f(x, axis=1)
    elif s.name == "batch_norm" and "mean" not in a:
        _, a["mean"], a["invstd"] = pyconv.batch_norm(
            x, a["rm"].copy(), a["rv"].copy(), a["w"], a["b"], training=True,
            momentum=B.BN_MOMENTUM, eps=B.BN_EPS, return_stats=True)


def _pyconv_op_fn(s: OpShape, direction: str, a: dict):
    """A zero-argument callable running one op in pyconv (the form training uses)."""
    op, fwd = s.name, direction == "fwd"
    x, g = a["x"], a["g"]
    if op == "max_pool2d":
        if fwd:
            return lambda: pyconv.max_pool2d(x, s.kernel, s.stride, s.pad, return_indices=True)
        idx = a["idx"]
        return lambda: pyconv.max_pool2d_backward(g, idx, x.shape)
    if op == "avg_pool2d":
        if fwd:
            return lambda: pyconv.avg_pool2d(x, s.kernel, s.stride, s.pad)
        return lambda: pyconv.avg_pool2d_backward(g, x.shape, s.kernel, s.stride, s.pad)
    if op == "adaptive_avg_pool2d":
        if fwd:
            return lambda: pyconv.adaptive_avg_pool2d(x, 1)
        return lambda: pyconv.adaptive_avg_pool2d_backward(g, x.shape)
    if op in ("relu", "gelu"):  # backward from the forward input
        f, fb = getattr(pyconv, op), getattr(pyconv, f"{op}_backward")
        return (lambda: f(x)) if fwd else (lambda: fb(g, x))
    if op in ("sigmoid", "tanh"):  # backward from the forward output
        f, fb = getattr(pyconv, op), getattr(pyconv, f"{op}_backward")
        return (lambda: f(x)) if fwd else (lambda: fb(g, a["y"]))
    if op in ("softmax", "log_softmax"):
        f, fb = getattr(pyconv, op), getattr(pyconv, f"{op}_backward")
        return (lambda: f(x, axis=1)) if fwd else (lambda: fb(g, a["y"], axis=1))
    if op == "cross_entropy":
        t = a["target"]
        if fwd:
            return lambda: pyconv.cross_entropy(x, t)
        return lambda: pyconv.cross_entropy_backward(g, x, t)
    if op == "batch_norm":
        w, b = a["w"], a["b"]
        if fwd:
            rm, rv = a["rm"].copy(), a["rv"].copy()  # updated in place by every call
            return lambda: pyconv.batch_norm(x, rm, rv, w, b, training=True,
                                             momentum=B.BN_MOMENTUM, eps=B.BN_EPS,
                                             return_stats=True)
        mean, invstd = a["mean"], a["invstd"]
        return lambda: pyconv.batch_norm_backward(g, x, w, mean, invstd)
    if op == "pad_reflect":
        p = (s.pad,) * 4
        if fwd:
            return lambda: pyconv.pad(x, p, mode="reflect")
        return lambda: pyconv.pad_backward(g, x.shape, p, mode="reflect")
    raise ValueError(f"unknown op {op!r}")


def _numpy_estimate_s(s: ConvShape, itemsize: int) -> float:
    # Haswell-kernel OpenBLAS does ~30 GFLOP/s on matmul here; im2col moves the
    # column matrix a few times at a few GB/s from NumPy's strided copies.
    return s.flops() / 30e9 + 3 * B.np_cols_bytes(s, itemsize) / 3e9


def _pyconv_conv_fn(direction: str, x, w, dy, s: ConvShape):
    kw = s.conv_kwargs()
    if direction == "fwd":
        return lambda: pyconv.conv2d(x, w, None, **kw)
    if direction == "bwd_d":
        return lambda: pyconv.conv2d_input(x.shape, w, dy, **kw)
    return lambda: pyconv.conv2d_weight(x, w.shape, dy, **kw)


def _numpy_conv_fn(direction: str, x, w, dy, s: ConvShape):
    if direction == "fwd":
        return lambda: B.np_conv2d(x, w, s)
    if direction == "bwd_d":
        return lambda: B.np_conv2d_input(w, dy, s)
    return lambda: B.np_conv2d_weight(x, dy, s)


class Runner:
    def __init__(self, opts: Options, env: Env, old: Optional[Dict[str, dict]]):
        self.opts = opts
        self.env = env
        self.old = old
        self.rows: List[Row] = []
        self.first: Dict[str, tuple] = {}  # key without threads -> (digest, ok, err)

    def _time(self, fn) -> float:
        o = self.opts
        return time_fn(fn, o.n_reps(), o.t_budget(), o.n_warmup())

    def _time_vs_torch(self, r: Row, fn, make_tfn) -> None:
        """r.ms and r.torch_ms from interleaved blocks (time_fns). make_tfn
        builds torch's call (None: pyconv alone); if building it or a first
        call raises, the row notes it and pyconv is timed alone."""
        o, t = self.opts, self.env.torch
        tfn = None
        if t is not None and make_tfn is not None:
            try:
                tfn = make_tfn()
                with t.no_grad():
                    tfn()
            except Exception as e:
                r.note = f"torch raised {type(e).__name__}: {e}"
                tfn = None
        if tfn is None:
            r.ms = self._time(fn) * 1e3
            return

        def torch_call():
            with t.no_grad():
                return tfn()
        r.ms, r.torch_ms = (v * 1e3 for v in time_fns([fn, torch_call], o.n_reps(), o.t_budget(),
                                                        o.n_warmup()))

    def _reference(self, direction, x, w, dy, s):
        x64, w64, dy64 = (a.astype(np.float64) for a in (x, w, dy))
        t = self.env.torch
        if t is not None:
            with t.no_grad():
                return B.torch_conv_fn(t, direction, x64, w64, dy64, s)().numpy()
        return _numpy_conv_fn(direction, x64, w64, dy64, s)()

    def _check(self, r: Row, out, ref_fn, ref_uses_blas: bool) -> None:
        """Mark r ok / FAIL: out (an array or a tuple of them) against ref_fn()'s."""
        k = r.key.rsplit("|t", 1)[0] + "|" + r.dtype
        dig = _digest(out)
        if k in self.first:
            dig0, ok0, err0 = self.first[k]
            if dig == dig0:
                r.ok, r.err, r.deterministic = ok0, err0, True
                return
            r.deterministic = False
        r.ok, r.err = check_close_many(out, ref_fn(), r.dtype)
        self.first.setdefault(k, (dig, r.ok, r.err))
        if ref_uses_blas and r.threads > 1:
            _settle()  # the reference ran on OpenBLAS; pyconv is timed next

    def _op_reference(self, s: OpShape, direction: str, a: dict):
        """float64 reference: torch's op on float64 copies of the inputs, else NumPy."""
        a64 = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in a.items()}
        t = self.env.torch
        if t is not None:
            with t.no_grad():
                return tuple(o.numpy() for o in _as_tensors(B.torch_op_fn(t, s, direction, a64)()))
        return B.np_op_ref(s, direction, a64)

    def ops(self, threads: int, table: Table) -> None:
        o, env = self.opts, self.env
        dt = np.dtype(o.dtype)
        triad = env.triad.get(threads)
        for s in ops_shapes(o):
            a = _op_inputs(s, dt, o.seed)
            for d in op_directions(o):
                r = Row("ops", s.name, s.desc, d, threads, o.dtype, 0.0,
                        bytes=float(s.bytes(d, dt.itemsize)), triad_gbps=triad,
                        key_desc=f"{s.name}:{s.desc}")
                try:
                    if d == "bwd":
                        _op_saved(s, a)
                    fn = _pyconv_op_fn(s, d, a)
                    # The NumPy reference for reflect-pad backward is a BLAS matmul.
                    self._check(r, fn(), lambda: self._op_reference(s, d, a),
                                ref_uses_blas=env.torch is None and s.name == "pad_reflect")
                    self._time_vs_torch(r, fn, lambda: B.torch_op_fn(env.torch, s, d, a))
                except Exception as e:  # report and go on with the other ops
                    r.ok, r.err, r.note = False, math.inf, f"pyconv raised {type(e).__name__}: {e}"
                    self.rows.append(r)
                    table.row(r)
                    continue
                # A bare ufunc on the same input: relu's NumPy equivalent, and the
                # per-call floor for the overhead cases.
                if o.use_numpy and (s.small or (s.name == "relu" and d == "fwd")):
                    x = a["x"]
                    r.numpy_ms = self._time(lambda: np.maximum(x, 0)) * 1e3
                self.rows.append(r)
                table.row(r)

    def conv(self, threads: int, table: Table) -> None:
        o, env = self.opts, self.env
        dt = np.dtype(o.dtype)
        peak = env.peak_1t * threads
        for s in conv_shapes(o):
            rng = np.random.default_rng(o.seed)
            x = rng.standard_normal(s.x_shape).astype(dt)
            w = rng.standard_normal(s.w_shape).astype(dt)
            dy = rng.standard_normal(s.y_shape).astype(dt)
            rows = []
            for d in o.directions:
                r = Row("conv", s.name, s.desc, d, threads, o.dtype, s.flops(), peak_gflops=peak)
                fn = _pyconv_conv_fn(d, x, w, dy, s)
                rows.append(r)
                try:
                    self._check(r, fn(), lambda: self._reference(d, x, w, dy, s),
                                ref_uses_blas=env.torch is None)
                    self._time_vs_torch(r, fn, lambda: B.torch_conv_fn(env.torch, d, x, w, dy, s))
                except Exception as e:  # report and go on with the other shapes
                    r.ok, r.err, r.note = False, math.inf, f"pyconv raised {type(e).__name__}: {e}"
                    continue
            # NumPy last, all directions in one block: its OpenBLAS pool is not
            # the OpenMP pool pyconv and torch share.
            if o.use_numpy:
                if _numpy_estimate_s(s, dt.itemsize) <= o.np_max_s():
                    for r in rows:
                        r.numpy_ms = self._time(_numpy_conv_fn(r.direction, x, w, dy, s)) * 1e3
                    if threads > 1:
                        _settle()
                else:
                    for r in rows:
                        r.note = "numpy skipped (estimated too slow)"
            for r in rows:
                self.rows.append(r)
                table.row(r)

    def gemm(self, threads: int, table: Table) -> None:
        o, env = self.opts, self.env
        dt = np.dtype(o.dtype)
        peak = env.peak_1t * threads
        for g in gemm_shapes(o):
            rng = np.random.default_rng(o.seed)
            a = rng.standard_normal((g.m, g.k)).astype(dt)
            b = rng.standard_normal((g.k, g.n)).astype(dt)
            c = np.empty((g.m, g.n), dt)
            c2 = np.empty((g.m, g.n), dt)
            r = Row("gemm", g.name, g.desc, "gemm", threads, o.dtype, g.flops(), peak_gflops=peak)
            fn = lambda: pyconv.gemm(a, b, out=c)  # noqa: E731
            try:
                self._check(r, fn().copy(), lambda: a.astype(np.float64) @ b.astype(np.float64),
                                ref_uses_blas=True)
                def make_tfn():
                    at, bt, ct = (env.torch.from_numpy(v) for v in (a, b, np.empty_like(c)))
                    return lambda: env.torch.mm(at, bt, out=ct)
                self._time_vs_torch(r, fn, make_tfn)
            except Exception as e:
                r.ok, r.err, r.note = False, math.inf, f"pyconv raised {type(e).__name__}: {e}"
                self.rows.append(r)
                table.row(r)
                continue
            if o.use_numpy:
                r.numpy_ms = self._time(lambda: np.matmul(a, b, out=c2)) * 1e3
                if threads > 1:
                    _settle()
            self.rows.append(r)
            table.row(r)


def _label(r: Row) -> str:
    """How a row is named in the summaries (ops share descriptors: add the op)."""
    return f"{r.name} {r.desc}" if r.section == "ops" else r.desc


def _as_tensors(out) -> tuple:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _print_geomeans(rows: List[Row], threads: int, out=sys.stdout) -> None:
    rs = [r for r in rows if r.threads == threads and r.section != "ops"]
    groups = {}
    for r in rs:
        groups.setdefault(r.direction, []).append(r)
    for label, attr in (("torch ms / pyconv ms", "torch_ratio"), ("numpy ms / pyconv ms", "numpy_ratio")):
        parts = []
        for d in (*DIRECTIONS, "gemm"):
            if d in groups:
                gm = geomean(getattr(r, attr) for r in groups[d])
                parts.append(f"{d} {'-' if gm is None else f'{gm:.2f}x'}")
        allg = geomean(getattr(r, attr) for r in rs if r.section == "conv")
        if allg is not None:
            parts.append(f"all conv {allg:.2f}x")
        if all(p.endswith(" -") for p in parts):
            continue  # that library was not run
        print(f"geomean {label} (threads={threads}): " + "  ".join(parts), file=out)


def _print_ops_summary(rows: List[Row], threads: int, out=sys.stdout) -> None:
    """Geomean torch ratios, then the rows worth a look: large cases under 50% of
    triad, and rows where torch is faster."""
    rs = [r for r in rows if r.threads == threads and r.section == "ops"]
    if not rs:
        return
    parts = []
    for d in OP_DIRECTIONS:
        gm = geomean(r.torch_ratio for r in rs if r.direction == d)
        if gm is not None:
            parts.append(f"{d} {gm:.2f}x")
    gm = geomean(r.torch_ratio for r in rs)
    if gm is not None:
        parts.append(f"all ops {gm:.2f}x")
        print(f"geomean torch ms / pyconv ms (ops, threads={threads}): " + "  ".join(parts),
              file=out)
    big = [r for r in rs if r.bytes and r.bytes >= 1 << 20]  # >= 1 MiB: bandwidth cases
    low = sorted((r for r in big if r.pct_triad is not None and r.pct_triad < 50),
                 key=lambda r: r.pct_triad)
    if low:
        print(f"below 50% of triad ({len(low)} of {len(big)} cases >= 1 MiB, worst first): "
              + _some(f"{r.name} {r.direction} {r.desc} {r.pct_triad:.0f}%" for r in low),
              file=out)
    slow = sorted((r for r in rs if r.torch_ratio is not None and r.torch_ratio < 1),
                  key=lambda r: r.torch_ratio)
    if slow:
        print(f"torch faster ({len(slow)} of {len(rs)}, worst first): "
              + _some(f"{r.name} {r.direction} {r.desc} {r.torch_ratio:.2f}x" for r in slow),
              file=out)


def _some(items, n: int = 8) -> str:
    items = list(items)
    more = f", ... {len(items) - n} more" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def load_doc(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def load_results(path: str) -> Dict[str, dict]:
    return {r["key"]: r for r in load_doc(path).get("results", [])}


def run(opts: Options, out=sys.stdout) -> dict:
    """Run the selected sections for each thread count; returns the JSON document."""
    old_doc = load_doc(opts.compare_path) if opts.compare_path else None
    old = {r["key"]: r for r in old_doc.get("results", [])} if old_doc is not None else None
    env = Env(opts)
    print(env.header(), file=out)
    if env.torch_missing:
        print("note: torch is not installed; torch columns show '-' and NumPy float64 is the "
              "reference", file=out)
    runner = Runner(opts, env, old)
    threads_list = opts.threads or [env.initial_threads]
    mon = CpuMonitor()
    try:
        for t in threads_list:
            mon.reset()
            env.set_threads(t)
            print(f"\n== threads={t}  peak {env.peak_1t * t:.1f} GFLOP/s "
                  f"(= {t} x {env.peak_1t:.1f} measured on 1 thread) ==", file=out)
            items = (conv_shapes(opts) if "conv" in opts.sections else []) + \
                (gemm_shapes(opts) if "gemm" in opts.sections else [])
            if items:
                table = Table(old, out, max([12] + [len(i.name) for i in items]),
                              max([22] + [len(i.desc) for i in items]))
                table.header()
                if "conv" in opts.sections:
                    runner.conv(t, table)
                if "gemm" in opts.sections:
                    runner.gemm(t, table)
                _print_geomeans(runner.rows, t, out)
            op_items = ops_shapes(opts) if "ops" in opts.sections else []
            if op_items and op_directions(opts):
                triad = env.measure_triad(t)
                print(f"\n-- ops (memory-bound) | triad {triad:.1f} GB/s with {t} thread(s): "
                      f"pyconv._C.triad_gbps, a=b+s*c on 3 x {TRIAD_N * 4 >> 20} MiB, "
                      f"12 B/element, best of {TRIAD_SECONDS:g} s --", file=out)
                print("GB/s = minimum bytes (inputs read once + outputs written once) / time; "
                      "%triad = GB/s / triad (cache-resident cases can pass 100); "
                      "ufunc ms = np.maximum(x, 0) on the same input", file=out)
                table = Table(old, out, max([12] + [len(i.name) for i in op_items]),
                              max([22] + [len(i.desc) for i in op_items]), kind="ops")
                table.header()
                runner.ops(t, table)
                _print_ops_summary(runner.rows, t, out)
            bg = env.background[t] = mon.other_cores()
            if bg is not None:
                warn = "  <- timings are noisy: the cores were shared" if bg > 0.1 else ""
                print(f"background: other processes used {bg:.2f} cores on average during this "
                      f"table{warn}", file=out)
            # Slowdowns from outside this VM (a busy host) do not show in /proc/stat;
            # a re-measured peak does.
            pk = env.peak_after[t] = float(pyconv._C.ukernel_peak_gflops(opts.dtype))
            drift = pk / env.peak_1t - 1.0
            warn = "  <- the machine itself got slower/faster: compare with care" \
                if abs(drift) > 0.05 else ""
            print(f"peak re-measured after this table: {pk:.1f} GFLOP/s ({drift * 100:+.0f}% vs "
                  f"start){warn}", file=out)
    finally:
        env.restore()

    rows = runner.rows
    fails = [r for r in rows if r.ok is False]
    nondet = [r for r in rows if r.deterministic is False]
    if nondet:
        print(f"\n* {len(nondet)} result(s) differ bitwise from the first thread count: "
              + ", ".join(f"{_label(r)} {r.direction} t{r.threads}" for r in nondet), file=out)
    if fails:
        print(f"\nFAILED checks ({len(fails)}): "
              + ", ".join(f"{_label(r)} {r.direction} t{r.threads} err={r.err:.1e}"
                            + (f" ({r.note})" if r.note else "") for r in fails),
              file=out)
    regressions = []
    if old is not None:
        matched = [r for r in rows if r.key in old]
        for r in matched:
            og = old[r.key].get(r.rate_field)
            if og and r.rate is not None and r.rate < (1 - REGRESSION_DROP) * og:
                regressions.append((r, og))
        print(f"\ncompare with {opts.compare_path}: {len(matched)} of {len(rows)} entries matched, "
              f"{len(regressions)} REGRESSION(s) (GFLOP/s, ops: GB/s, down > "
              f"{REGRESSION_DROP:.0%})", file=out)
        # Context for judging them: did the machine (peak) or torch move too?
        op = old_doc.get("meta", {}).get("peak_gflops_1thread")
        if op:
            print(f"  measured 1-thread peak: old {op:.1f}, now {env.peak_1t:.1f} GFLOP/s "
                  f"({(env.peak_1t / op - 1) * 100:+.0f}%)", file=out)
        old_triad = old_doc.get("meta", {}).get("triad_gbps") or {}
        for t, v in sorted(env.triad.items()):
            ov = old_triad.get(str(t))
            if ov:
                print(f"  measured triad, {t} thread(s): old {ov:.1f}, now {v:.1f} GB/s "
                      f"({(v / ov - 1) * 100:+.0f}%)", file=out)
        td = geomean(r.torch_ms / old[r.key]["torch_ms"] for r in matched
                     if r.torch_ms and old[r.key].get("torch_ms"))
        if td is not None:
            note = ("  <- torch slowed as much: likely a slower machine, not pyconv"
                    if td > 1 + REGRESSION_DROP else "")
            print(f"  torch time now / old (geomean over matched entries): {td:.2f}x{note}",
                  file=out)
        for r, og in regressions:
            print(f"  REGRESSION {r.section} {r.name} {r.desc} {r.direction} t{r.threads}: "
                  f"{og:.1f} -> {r.rate:.1f} {r.rate_unit} ({(r.rate / og - 1) * 100:+.0f}%)",
                  file=out)

    doc = {"meta": env.meta(), "results": [r.to_json() for r in rows]}
    doc["meta"]["threads"] = threads_list
    doc["meta"]["regressions"] = [r.key for r, _ in regressions]
    doc["meta"]["failed"] = [r.key for r in fails]
    if opts.json_path:
        d = os.path.dirname(os.path.abspath(opts.json_path))
        os.makedirs(d, exist_ok=True)
        with open(opts.json_path, "w") as f:
            json.dump(doc, f, indent=1)
        print(f"\nwrote {opts.json_path}", file=out)
    return doc


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------
def _csv(kind, allowed=None, conv=str):
    def parse(text):
        items = [conv(t.strip()) for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"empty {kind} list")
        if allowed is not None:
            bad = [i for i in items if i not in allowed]
            if bad:
                raise argparse.ArgumentTypeError(
                    f"unknown {kind} {','.join(bad)}; choose from {','.join(allowed)}")
        return items
    return parse


def _threads(text):
    try:
        items = _csv("threads", conv=int)(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--threads takes comma-separated ints, got {text!r}")
    if any(n < 1 for n in items):
        raise argparse.ArgumentTypeError(f"thread counts must be >= 1, got {text!r}")
    return items


def build_parser(prog: str = "python -m pyconv.bench") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Check pyconv against torch / NumPy, then time it: conv2d fwd, bwd_d, "
                    "bwd_w over a benchdnn-style shape suite, GEMM, and the memory-bound ops "
                    "(pooling, activations, softmax, cross-entropy, batch norm, pad) against "
                    "the measured STREAM triad bandwidth.",
        epilog="Descriptors follow benchdnn: dh/dw count holes (dh1 = dilation 2). "
               "Ratios are other_ms / pyconv_ms, so > 1 means pyconv is faster.")
    p.add_argument("--quick", action="store_true", help="smoke run: a few shapes, few reps (seconds)")
    p.add_argument("--threads", type=_threads, default=[],
                   help="comma-separated thread counts, one table each (default: pyconv's current)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--directions", type=_csv("direction", DIRECTIONS), default=list(DIRECTIONS),
                   help="subset of fwd,bwd_d,bwd_w (ops: fwd keeps their forward, any bwd_* "
                        "their backward)")
    p.add_argument("--section", dest="sections", type=_csv("section", SECTIONS),
                   default=list(SECTIONS), help="subset of conv,gemm,ops")
    p.add_argument("--filter", help="keep shapes whose name (ops: the op) or descriptor contains "
                                    "this substring")
    p.add_argument("--shape", dest="shapes", action="append", default=[], metavar="DESC",
                   help="benchmark this descriptor instead of the suite (repeatable), "
                        "e.g. mb8ic64ih56oc64kh3ph1")
    p.add_argument("--no-torch", dest="use_torch", action="store_false", help="skip torch")
    p.add_argument("--no-numpy", dest="use_numpy", action="store_false",
                   help="skip the NumPy baseline (and the ops' ufunc column)")
    p.add_argument("--reps", type=int, help="max timed calls per entry (default 30; quick 5)")
    p.add_argument("--budget", type=float,
                   help="seconds per library per entry before stopping early (default 1.0; quick 0.15)")
    p.add_argument("--warmup", type=int, help="untimed calls first (default 2; quick 1)")
    p.add_argument("--numpy-max-s", type=float, dest="numpy_max_s",
                   help="skip the NumPy conv baseline when one call is estimated to take longer "
                        "(default 1.5; quick 0.3)")
    p.add_argument("--json", dest="json_path", metavar="PATH", help="write all results as JSON")
    p.add_argument("--compare", dest="compare_path", metavar="OLD.json",
                   help="flag entries whose GFLOP/s (ops: GB/s) dropped > 10%% versus this earlier "
                        "--json file")
    p.add_argument("--fail-on-regression", action="store_true",
                   help="exit with status 1 when --compare finds a REGRESSION")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv=None, prog: str = "python -m pyconv.bench") -> int:
    """CLI entry point; returns the exit status (1 on a failed check or, with
    --fail-on-regression, a regression)."""
    ns = build_parser(prog).parse_args(argv)
    opts = Options(**vars(ns))
    if opts.compare_path and not os.path.exists(opts.compare_path):
        print(f"error: --compare file {opts.compare_path!r} does not exist", file=sys.stderr)
        return 2
    if opts.shapes and "conv" not in opts.sections:
        print("error: --shape needs the conv section", file=sys.stderr)
        return 2
    try:
        for d in opts.shapes:
            parse_descriptor(d)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        doc = run(opts)
    except BrokenPipeError:  # `... | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    if doc["meta"]["failed"]:
        return 1
    if opts.fail_on_regression and doc["meta"]["regressions"]:
        return 1
    return 0
