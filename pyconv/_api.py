"""The body of the ``pyconv`` package namespace (re-exported by ``pyconv/__init__.py``).

pyconv: fast CPU building blocks for convolutional networks on NumPy arrays.

The compute core is C++ (OpenMP threads, SIMD GEMM micro-kernels chosen at
import from the CPU's features); this package is a thin NumPy layer over it
with PyTorch's names and semantics.
"""
from __future__ import annotations

import os as _os
import warnings as _warnings

from . import _C
from . import functional
from .functional import *  # noqa: F401,F403  (the functional API, listed in functional.__all__)
from . import nn, optim, metrics, data, datasets, train
from .io import CheckpointError, load, save
from .nn.init import manual_seed

__version__ = "0.1.0"

__all__ = list(functional.__all__) + [
    "functional",
    "nn",
    "optim",
    "data",
    "datasets",
    "metrics",
    "train",
    "save",
    "load",
    "CheckpointError",
    "manual_seed",
    "config",
    "get_num_threads",
    "set_num_threads",
    "get_isa",
    "set_isa",
    "get_winograd",
    "set_winograd",
    "supported_isas",
    "__version__",
]

_env_isa = _os.environ.get("PYCONV_ISA", "").strip()
if _env_isa and (_env_isa not in ("ref", "avx2", "avx512") or _env_isa not in _C.supported_isas()):
    _warnings.warn(
        f"PYCONV_ISA={_env_isa!r} is not one of this CPU's ISAs {_C.supported_isas()}; "
        f"using {_C.get_isa()!r}",
        RuntimeWarning,
        stacklevel=2,
    )


def get_num_threads() -> int:
    """Threads used by pyconv's kernels (defaults to OMP_NUM_THREADS or the core count)."""
    return _C.get_num_threads()


def set_num_threads(n: int) -> None:
    """Set the number of threads pyconv's kernels may use (n >= 1). Safe at any time.

    In a child of ``os.fork()`` (multiprocessing's 'fork' start method) pyconv
    always runs single-threaded, so the child cannot hang on the parent's
    OpenMP thread pool; asking for more threads there warns.
    """
    if isinstance(n, bool) or not isinstance(n, (int,)) and not hasattr(n, "__index__"):
        raise TypeError(f"set_num_threads: n must be an int, got {type(n).__name__}")
    n = int(n.__index__())
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    if n > 1 and _C.in_forked_child():
        _warnings.warn(
            "pyconv runs single-threaded in a child of os.fork() (OpenMP's thread pool does "
            "not survive fork); use the 'spawn' or 'forkserver' start method for parallel "
            "workers", RuntimeWarning, stacklevel=2)
    _C.set_num_threads(n)


def supported_isas() -> list:
    """The micro-kernel ISAs this CPU can run, e.g. ['ref', 'avx2', 'avx512']."""
    return list(_C.supported_isas())


def get_isa() -> str:
    """The ISA whose GEMM micro-kernels are in use."""
    return _C.get_isa()


def set_isa(isa: str) -> None:
    """Force the kernel ISA ('ref', 'avx2' or 'avx512'); ValueError if the CPU lacks it.

    The environment variable PYCONV_ISA does the same at import time.
    """
    if not isinstance(isa, str):
        raise TypeError(f"set_isa: isa must be a str, got {type(isa).__name__}")
    _C.set_isa(isa)


def get_winograd() -> bool:
    """Whether float32 3x3 stride-1 convolutions may use Winograd F(2x2, 3x3)."""
    return _C.get_winograd()


def set_winograd(enabled: bool) -> None:
    """Allow (True, the default) or forbid Winograd F(2x2, 3x3) for float32
    3x3, stride-1, ungrouped convolutions with >= 16 input and output
    channels and >= 32 output tiles (dilation 1, or dilation d with padding
    d on sizes d divides), in all three directions. Off, those run as
    implicit GEMM like every other shape: useful to compare algorithms, or
    when Winograd's rounding error (measured up to ~2.3x the direct path's)
    matters. Process-wide.
    """
    if not isinstance(enabled, (bool, int)) or isinstance(enabled, float):
        raise TypeError(f"set_winograd: enabled must be a bool, got {type(enabled).__name__}")
    _C.set_winograd(bool(enabled))


def config() -> dict:
    """What pyconv is running with: ISA, kernels, threads and build."""
    info = dict(_C.build_info())
    return {
        "version": __version__,
        "isa": _C.get_isa(),
        "supported_isas": list(_C.supported_isas()),
        "num_threads": _C.get_num_threads(),
        "winograd": _C.get_winograd(),
        "sgemm_kernel": dict(_C.gemm_kernel_info("float32")),
        "dgemm_kernel": dict(_C.gemm_kernel_info("float64")),
        "compiler": info["compiler"],
        "openmp": info["openmp"],
        "build": info,
    }
