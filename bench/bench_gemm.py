#!/usr/bin/env python
"""pyconv.gemm against numpy.matmul (and torch.mm) on square and conv-shaped GEMMs.

A thin wrapper over ``python -m pyconv.bench --section gemm``; every option of
that CLI works here, e.g.

    python bench/bench_gemm.py --quick
    python bench/bench_gemm.py --threads 1,2 --dtype float64
"""
import sys

from pyconv.bench.runner import main

if __name__ == "__main__":
    sys.exit(main(["--section", "gemm", *sys.argv[1:]], prog="bench/bench_gemm.py"))
