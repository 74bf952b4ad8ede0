"""Render a `python -m pyconv.bench --json` file as the README's markdown table.

    python bench/make_table.py bench/results/FILE.json [--threads 1]

One row per shape: GFLOP/s, % of the measured peak and the torch ratio
(torch ms / pyconv ms, > 1 means pyconv is faster) for fwd, bwd_d and
bwd_w, plus per-direction geometric means of the torch ratio.
"""
import argparse
import json
import math
from collections import OrderedDict


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("json")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    data = json.load(open(args.json))
    rows = OrderedDict()
    ratios = {"fwd": [], "bwd_d": [], "bwd_w": []}
    for r in data["results"]:
        if r["section"] != "conv" or r["threads"] != args.threads:
            continue
        rows.setdefault((r["name"], r["desc"]), {})[r["direction"]] = r
        if r.get("torch_ratio"):
            ratios[r["direction"]].append(r["torch_ratio"])
    peak = next((r["peak_gflops"] for r in data["results"] if r["threads"] == args.threads), None)
    print(f"threads={args.threads}, measured peak {peak:.1f} GFLOP/s; cells: GFLOP/s (% of peak) x torch\n")
    print("| layer | shape | fwd | bwd_d | bwd_w |")
    print("|---|---|---|---|---|")
    for (name, desc), d in rows.items():
        cells = []
        for k in ("fwd", "bwd_d", "bwd_w"):
            r = d.get(k)
            if r is None or not r.get("gflops"):
                cells.append("-")
                continue
            t = f" x{r['torch_ratio']:.2f}" if r.get("torch_ratio") else ""
            cells.append(f"{r['gflops']:.0f} ({r['pct_peak']:.0f}%){t}")
        print(f"| {name} | `{desc}` | " + " | ".join(cells) + " |")
    gm = {k: math.exp(sum(map(math.log, v)) / len(v)) for k, v in ratios.items() if v}
    print("\ngeometric mean of torch ms / pyconv ms: " +
          ", ".join(f"{k} {v:.2f}x" for k, v in gm.items()))


if __name__ == "__main__":
    main()
