#!/usr/bin/env python
"""conv2d fwd / bwd_d / bwd_w over the benchdnn-style shape suite.

A thin wrapper over ``python -m pyconv.bench --section conv``; every option of
that CLI works here, e.g.

    python bench/bench_conv2d.py --quick
    python bench/bench_conv2d.py --threads 1,2 --filter r18 --json bench/results/conv.json
    python bench/bench_conv2d.py --shape mb8ic64ih56oc64kh3ph1 --directions bwd_w
"""
import sys

from pyconv.bench.runner import main

if __name__ == "__main__":
    sys.exit(main(["--section", "conv", *sys.argv[1:]], prog="bench/bench_conv2d.py"))
