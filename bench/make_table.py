"""Render a `python -m pyconv.bench --json` file as the README's markdown table.

    python bench/make_table.py bench/results/FILE.json [--threads 1]
    python bench/make_table.py bench/results/FILE.json --gemm      # GEMM rows, 1 and 2 threads
    python bench/make_table.py bench/results/FILE.json --ops       # memory-bound ops, 1 thread
    python bench/make_table.py --train bench/results/TRAIN.json    # bench_train.py results
    python bench/make_table.py bench/results/FILE.json --chart OUT.png [--threads 2]
                                                   # bar chart: x torch per shape and direction
    python bench/make_table.py bench/results/FILE.json --scaling [conv|gemm|ops|all]
                                                   # 1 -> 2 thread speed-up of every shape

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
    ap.add_argument("json", nargs="?")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--gemm", action="store_true", help="the GEMM table instead")
    ap.add_argument("--ops", action="store_true", help="the memory-bound ops table instead")
    ap.add_argument("--train", help="render a bench_train.py JSON file instead")
    ap.add_argument("--scaling", nargs="?", const="conv", choices=("conv", "gemm", "ops", "all"),
                    help="1 -> 2 thread speed-up (1-thread time / 2-thread time) per shape and "
                         "direction, pyconv and torch, for one section (default conv) or all")
    ap.add_argument("--chart", metavar="PNG",
                    help="write a bar chart of the conv torch ratios (needs matplotlib) instead")
    args = ap.parse_args(argv)
    if args.train:
        return train_table(json.load(open(args.train)))
    data = json.load(open(args.json))
    if args.scaling:
        return scaling_table(data, args.scaling)
    if args.chart:
        return conv_chart(data, args.threads, args.chart)
    if args.gemm:
        return gemm_table(data)
    if args.ops:
        return ops_table(data)
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


def conv_chart(data, threads, path):
    """Grouped bars: torch ms / pyconv ms for each conv shape (x axis) and
    direction (one bar each), with the break-even line at 1."""
    from pyconv.plot import plot_bars

    rows = OrderedDict()
    for r in data["results"]:
        if r["section"] == "conv" and r["threads"] == threads and r.get("torch_ratio"):
            rows.setdefault(f"{r['name']} mb{r['desc'].split('mb')[1].split('ic')[0]}", {})[
                r["direction"]] = r["torch_ratio"]
    if not rows:
        raise SystemExit(f"no conv rows with torch ratios at threads={threads}")
    labels = list(rows)
    series = {d: [rows[k].get(d) for k in labels] for d in ("fwd", "bwd_d", "bwd_w")}
    plot_bars(labels, series, path=path, ylabel="torch time / pyconv time (> 1: pyconv faster)",
              title=f"conv2d vs PyTorch {data['meta'].get('torch') or ''}, {threads} thread(s)",
              reference=("break-even", 1.0), annotate=False, log=True)
    print(f"wrote {path}")


def scaling_table(data, section):
    """Per shape and direction: 1-thread ms / 2-thread ms for pyconv and for
    torch (the same run), and their geometric means per section."""
    pairs = OrderedDict()
    for r in data["results"]:
        if r.get("ms") and (section == "all" or r["section"] == section):
            pairs.setdefault((r["section"], r["name"], r["desc"], r["direction"]), {})[r["threads"]] = r
    rows = [(k, v[1], v[2]) for k, v in pairs.items() if 1 in v and 2 in v]
    if not rows:
        raise SystemExit("no entries measured at both 1 and 2 threads")
    gm = {}
    conv = OrderedDict()
    listed = []
    for (sec, name, desc, d), a, b in rows:
        sp = a["ms"] / b["ms"]
        tp = a["torch_ms"] / b["torch_ms"] if a.get("torch_ms") and b.get("torch_ms") else None
        gm.setdefault(sec, ([], []))[0].append(sp)
        if tp:
            gm[sec][1].append(tp)
        cell = f"{sp:.2f}x" + (f" ({tp:.2f}x)" if tp else "")
        if sec == "conv":
            conv.setdefault((name, desc), {})[d] = cell
        else:
            listed.append(f"| {sec} | {name} | `{desc}` | {d} | {cell} |")
    if conv:  # one row per conv shape
        print("| layer | shape | fwd | bwd_d | bwd_w |")
        print("|---|---|---|---|---|")
        for (name, desc), d in conv.items():
            print(f"| {name} | `{desc}` | " + " | ".join(d.get(k, "-") for k in ("fwd", "bwd_d", "bwd_w")) + " |")
        print()
    if listed:
        print("| section | name | shape | dir | 1 -> 2 threads |")
        print("|---|---|---|---|---|")
        print("\n".join(listed))
        print()
    print("cells: pyconv's 1-thread time / 2-thread time (torch's in parentheses)")
    for sec, (p, t) in gm.items():
        g = lambda v: math.exp(sum(map(math.log, v)) / len(v))
        print(f"{sec}: geometric mean speed-up 1 -> 2 threads: pyconv {g(p):.2f}x"
              + (f", torch {g(t):.2f}x" if t else "") + f" ({len(p)} entries)")


def gemm_table(data):
    by = OrderedDict()
    for r in data["results"]:
        if r["section"] == "gemm":
            by.setdefault((r["name"], r["desc"]), {})[r["threads"]] = r
    print("| GEMM | shape | 1 thread GFLOP/s (% peak) | x torch | x NumPy | 2 threads GFLOP/s | x torch |")
    print("|---|---|---|---|---|---|---|")
    for (name, desc), v in by.items():
        a, b = v.get(1), v.get(2)
        if not a or not b:
            continue
        print(f"| {name} | `{desc}` | {a['gflops']:.0f} ({a['pct_peak']:.0f}%) | {a['torch_ratio']:.2f} "
              f"| {a['numpy_ratio']:.2f} | {b['gflops']:.0f} | {b['torch_ratio']:.2f} |")


def ops_table(data, threads=1):
    print("| op | shape | dir | GB/s | % of triad | x torch |")
    print("|---|---|---|---|---|---|")
    for r in data["results"]:
        if r["section"] != "ops" or r["threads"] != threads or not r.get("gbps"):
            continue
        if r["bytes"] < 1 << 20:  # tiny-tensor overhead rows
            continue
        t = f"{r['torch_ratio']:.2f}" if r.get("torch_ratio") else "-"
        print(f"| {r['name']} | `{r['desc']}` | {r['direction']} | {r['gbps']:.1f} | "
              f"{r['pct_triad']:.0f}% | {t} |")


def train_table(tr):
    print("| model (batch 64) | threads | train img/s | torch | ratio | infer img/s | torch | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for r in tr["rows"]:
        print(f"| {r['model']} | {r['threads']} | {r['train_pyconv_img_s']:.0f} | "
              f"{r['train_torch_img_s']:.0f} | {r['train_ratio']:.2f} | {r['infer_pyconv_img_s']:.0f} | "
              f"{r['infer_torch_img_s']:.0f} | {r['infer_ratio']:.2f} |")


if __name__ == "__main__":
    main()
