#!/usr/bin/env python
"""Memory-bound ops (pooling, activations, softmax, cross-entropy, batch norm, pad)
against the measured STREAM triad bandwidth.

A thin wrapper over ``python -m pyconv.bench --section ops``; every option of
that CLI works here, e.g.

    python bench/bench_ops.py --quick
    python bench/bench_ops.py --threads 1,2 --filter pool --json bench/results/ops.json
    python bench/bench_ops.py --directions fwd
"""
import sys

from pyconv.bench.runner import main

if __name__ == "__main__":
    sys.exit(main(["--section", "ops", *sys.argv[1:]], prog="bench/bench_ops.py"))
