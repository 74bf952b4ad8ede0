"""pyconv's benchmark suite: check against torch / NumPy first, then time.

Run it with ``python -m pyconv.bench`` (or ``pyconv bench``); ``--help`` lists
the options and ``--quick`` is a smoke run of a few seconds; ``--section ops``
times the memory-bound ops against the measured triad bandwidth. See
``bench/README.md`` in the repository for the workflow.
"""
from .runner import Options, main, run, time_fn
from .shapes import (ConvShape, GemmShape, OpShape, conv_suite, gemm_suite, ops_suite,
                     parse_descriptor)

__all__ = [
    "ConvShape",
    "GemmShape",
    "OpShape",
    "Options",
    "conv_suite",
    "gemm_suite",
    "main",
    "ops_suite",
    "parse_descriptor",
    "run",
    "time_fn",
]
