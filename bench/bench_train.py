#!/usr/bin/env python
"""Images per second for a full training step and for inference: pyconv against PyTorch.

    python bench/bench_train.py                  # threads 1 and 2, both models
    python bench/bench_train.py --threads 1 --steps 20 --json bench/results/train.json

Models (3x3 convolutions, padding 1, ReLU after every conv and hidden fc):
  lenet    28x28x1, batch 64:  conv32-pool-conv64-pool-fc128-fc10
  cifar    32x32x3, batch 64:  conv32-conv32-pool-conv64-conv64-pool-fc256-fc10

A training step is forward, cross-entropy, backward and an SGD-momentum
update; inference is a forward pass in eval mode. Both libraries get the
same weights and the same batch, and the script first checks that their
losses and weight gradients agree, then times them alternately (median of
``--steps`` steps after warm-up) so machine noise hits both alike.

It also measures the Python overhead per layer: a Sequential of 64 Identity
layers (no compute at all) forward + backward, divided by 64, and the step
time of each model at batch 1, where overhead matters most.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import numpy as np

import pyconv
from pyconv import nn, optim

MODELS = {
    "lenet": dict(input=(1, 28, 28), convs=[(1, 32), "pool", (32, 64), "pool"], fc=[64 * 7 * 7, 128, 10]),
    "cifar": dict(input=(3, 32, 32), convs=[(3, 32), (32, 32), "pool", (32, 64), (64, 64), "pool"],
                  fc=[64 * 8 * 8, 256, 10]),
}


def build(spec, tnn):
    """The spec's model from a module namespace with PyTorch's layer names:
    ``pyconv.nn`` or ``torch.nn`` (same layers, same parameter names)."""
    layers = []
    for c in spec["convs"]:
        if c == "pool":
            layers.append(tnn.MaxPool2d(2))
        else:
            layers += [tnn.Conv2d(c[0], c[1], 3, padding=1), tnn.ReLU()]
    layers.append(tnn.Flatten())
    fc = spec["fc"]
    for i in range(len(fc) - 1):
        layers.append(tnn.Linear(fc[i], fc[i + 1]))
        if i < len(fc) - 2:
            layers.append(tnn.ReLU())
    return tnn.Sequential(*layers)


def build_pyconv(spec):
    return build(spec, nn)


def build_torch(spec, torch):
    return build(spec, torch.nn)


def flops_per_image(spec):
    """Forward multiply-adds x 2 of the convs and fcs."""
    c, h, w = spec["input"]
    total = 0
    for layer in spec["convs"]:
        if layer == "pool":
            h, w = h // 2, w // 2
        else:
            total += 2 * layer[0] * layer[1] * 9 * h * w
    fc = spec["fc"]
    total += sum(2 * fc[i] * fc[i + 1] for i in range(len(fc) - 1))
    return total


class PyconvRunner:
    def __init__(self, spec, batch):
        self.model = build_pyconv(spec)
        self.loss = nn.CrossEntropyLoss()
        self.opt = optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)

    def step(self, x, y):
        self.model.train()
        out = self.model(x)
        loss = self.loss(out, y)
        self.opt.zero_grad()
        self.model.backward(self.loss.backward(), need_input_grad=False)
        self.opt.step()
        return float(loss)

    def infer(self, x):
        self.model.eval()
        return self.model(x)


class TorchRunner:
    def __init__(self, spec, torch, pyconv_model):
        self.torch = torch
        self.model = build_torch(spec, torch)
        sd = {k: torch.from_numpy(v.copy()) for k, v in pyconv_model.state_dict().items()}
        self.model.load_state_dict(sd)
        self.loss = torch.nn.CrossEntropyLoss()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)

    def step(self, x, y):
        self.model.train()
        out = self.model(x)
        loss = self.loss(out, y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss.item()

    def infer(self, x):
        self.model.eval()
        with self.torch.no_grad():
            return self.model(x)


def check(spec, batch, torch):
    """Same weights, same batch: losses and every weight gradient must agree."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch,) + spec["input"]).astype(np.float32)
    y = rng.integers(0, 10, batch)
    pm = build_pyconv(spec)
    tm = TorchRunner(spec, torch, pm).model
    L = nn.CrossEntropyLoss()
    lp = float(L(pm(x), y))
    pm.backward(L.backward())
    out = tm(torch.from_numpy(x))
    lt = torch.nn.functional.cross_entropy(out, torch.from_numpy(y))
    lt.backward()
    lt = float(lt.detach())
    worst = 0.0
    tgrads = {k: p.grad.numpy() for k, p in tm.named_parameters()}
    for k, p in pm.named_parameters():
        g, r = p.grad, tgrads[k]
        worst = max(worst, float(np.abs(g - r).max() / (np.abs(r).max() + 1e-30)))
    ok = abs(lp - lt) <= 1e-4 * max(1.0, abs(lp)) and worst < 1e-3
    return ok, abs(lp - lt), worst


def timed(fn, steps):
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_model(name, spec, batch, threads, steps, torch):
    pyconv.set_num_threads(threads)
    if torch is not None:
        torch.set_num_threads(threads)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((batch,) + spec["input"]).astype(np.float32)
    y = rng.integers(0, 10, batch)
    pyconv.manual_seed(0)
    pr = PyconvRunner(spec, batch)
    tr = TorchRunner(spec, torch, pr.model) if torch is not None else None
    tx = torch.from_numpy(x) if torch is not None else None
    ty = torch.from_numpy(y) if torch is not None else None
    res = {"model": name, "batch": batch, "threads": threads}
    for kind in ("train", "infer"):
        if kind == "train":
            pf, tf = (lambda: pr.step(x, y)), (lambda: tr.step(tx, ty)) if tr else None
        else:
            pf, tf = (lambda: pr.infer(x)), (lambda: tr.infer(tx)) if tr else None
        for _ in range(3):  # warm-up: caches, thread pools, allocator
            pf()
            if tf:
                tf()
        # alternate short rounds so slow phases of a noisy machine hit both
        pt, tt = [], []
        for _ in range(max(1, steps // 5)):
            pt.append(timed(pf, 5))
            if tf:
                tt.append(timed(tf, 5))
        p_s = min(pt)
        res[f"{kind}_pyconv_img_s"] = batch / p_s
        res[f"{kind}_pyconv_ms"] = p_s * 1e3
        if tf:
            t_s = min(tt)
            res[f"{kind}_torch_img_s"] = batch / t_s
            res[f"{kind}_torch_ms"] = t_s * 1e3
            res[f"{kind}_ratio"] = t_s / p_s
    f = flops_per_image(spec)
    res["train_gflops"] = 3 * f * res["train_pyconv_img_s"] / 1e9
    res["infer_gflops"] = f * res["infer_pyconv_img_s"] / 1e9
    return res


def overhead_per_layer(steps=200):
    """Seconds of framework overhead per layer (forward + backward), no compute."""
    m = nn.Sequential(*[nn.Identity() for _ in range(64)])
    x = np.zeros((1, 1), np.float32)

    def run():
        m(x)
        m.backward(x)
    for _ in range(10):
        run()
    return timed(run, steps) / 64


def relu_overhead(steps=500):
    """A tiny ReLU layer (fwd + bwd on 16 floats): wrapper plus kernel call cost."""
    m = nn.ReLU()
    x = np.ones((1, 16), np.float32)

    def run():
        m(x)
        m.backward(x)
    for _ in range(10):
        run()
    return timed(run, steps)


def tiny_calls(number=20000, repeat=7):
    """Seconds per call of the issue's tiny cases next to a bare NumPy ufunc:
    relu on 1,000 floats, conv2d of a 1x1x8x8 image with a 3x3 filter, and
    np.maximum(a, 0) on the same 1,000 floats (best of `repeat` runs)."""
    import timeit
    a = np.linspace(-1, 1, 1000, dtype=np.float32)
    x = np.ones((1, 1, 8, 8), np.float32)
    w = np.ones((1, 1, 3, 3), np.float32)
    cases = {"ufunc": lambda: np.maximum(a, 0), "relu": lambda: pyconv.relu(a),
             "conv2d": lambda: pyconv.conv2d(x, w)}
    return {k: min(timeit.repeat(f, number=number, repeat=repeat)) / number for k, f in cases.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="bench/bench_train.py", description=__doc__.split("\n")[0])
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--models", default="lenet,cifar")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    torch = None
    if not args.no_torch:
        try:
            import torch  # noqa: F811
        except ImportError:
            print("torch is not installed: timing pyconv alone", file=sys.stderr)
    threads = [int(t) for t in args.threads.split(",")]
    names = args.models.split(",")
    cfg = pyconv.config()
    print(f"pyconv {cfg['version']} isa={cfg['isa']} | torch {torch.__version__ if torch else '-'} | "
          f"{platform.processor() or platform.machine()} | batch {args.batch}")
    if torch is not None:
        for n in names:
            ok, dl, dg = check(MODELS[n], 8, torch)
            print(f"check {n}: loss diff {dl:.2e}, worst grad rel. diff {dg:.2e} -> "
                  f"{'ok' if ok else 'MISMATCH'}")
            if not ok:
                return 1
    rows = []
    hdr = (f"{'model':<6} {'thr':>3} | {'train img/s':>11} {'torch':>9} {'ratio':>6} "
           f"{'GFLOP/s':>7} | {'infer img/s':>11} {'torch':>9} {'ratio':>6}")
    print(hdr)
    print("-" * len(hdr))
    for n in names:
        for t in threads:
            r = bench_model(n, MODELS[n], args.batch, t, args.steps, torch)
            rows.append(r)

            def g(k, spec):
                return format(r[k], spec) if k in r else "-"
            print(f"{n:<6} {t:>3} | {g('train_pyconv_img_s', '11.0f')} {g('train_torch_img_s', '9.0f')} "
                  f"{g('train_ratio', '6.2f')} {g('train_gflops', '7.1f')} | "
                  f"{g('infer_pyconv_img_s', '11.0f')} {g('infer_torch_img_s', '9.0f')} "
                  f"{g('infer_ratio', '6.2f')}", flush=True)
    pyconv.set_num_threads(1)
    small = []
    for n in names:
        r = bench_model(n, MODELS[n], 1, 1, args.steps, torch)
        small.append(r)
    ov = overhead_per_layer()
    rl = relu_overhead()
    tc = tiny_calls()
    print()
    print(f"Python overhead per layer (Identity, fwd+bwd): {ov * 1e6:.2f} us; "
          f"tiny ReLU layer fwd+bwd: {rl * 1e6:.2f} us")
    print(f"tiny calls: relu(1000 floats) {tc['relu'] * 1e6:.2f} us, conv2d(1x1x8x8, 3x3) "
          f"{tc['conv2d'] * 1e6:.2f} us; NumPy ufunc np.maximum(1000 floats, 0) {tc['ufunc'] * 1e6:.2f} us "
          f"-> {tc['relu'] / tc['ufunc']:.2f}x and {tc['conv2d'] / tc['ufunc']:.2f}x the ufunc")
    for r in small:
        nl = len(build_pyconv(MODELS[r["model"]]))
        extra = (f", torch {r['train_torch_ms']:.2f} ms (ratio {r['train_ratio']:.2f})"
                 if "train_torch_ms" in r else "")
        print(f"batch 1 {r['model']}: train step {r['train_pyconv_ms']:.2f} ms{extra}; "
              f"{nl} layers x {ov * 1e6:.1f} us = {nl * ov * 1e3:.3f} ms of layer overhead")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": cfg, "torch": torch.__version__ if torch else None,
                       "rows": rows, "batch1": small, "overhead_per_layer_s": ov,
                       "relu_layer_s": rl, "tiny_calls_s": tc}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
