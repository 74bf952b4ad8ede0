#!/usr/bin/env python
"""The same CNN trained in pyconv and in PyTorch, side by side: accuracy and speed.

Both networks start from the same weights (pyconv's initial state dict is
loaded into the torch model), see the same mini-batches in the same order
and use the same optimizer settings (SGD with momentum, or --adam), so their
losses follow each other closely; float32 rounding differs, so they drift
apart slowly rather than match bit for bit. The script prints per-epoch
losses and accuracies of both, and the training and inference throughput.

Needs torch (``pip install torch==2.13.0``) and scikit-learn (the digits).

Run:  python examples/pyconv_vs_torch.py [--epochs 15] [--threads 2] [--adam]
"""
import argparse
import time

import numpy as np

import pyconv
from pyconv import data, nn, optim
from pyconv.datasets import load_digits


def pyconv_net():
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))


def torch_net(torch):
    t = torch.nn
    return t.Sequential(
        t.Conv2d(1, 32, 3, padding=1), t.ReLU(),
        t.Conv2d(32, 32, 3, padding=1), t.ReLU(), t.MaxPool2d(2),
        t.Conv2d(32, 64, 3, padding=1), t.ReLU(), t.MaxPool2d(2),
        t.Flatten(), t.Linear(256, 128), t.ReLU(), t.Linear(128, 10))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--adam", action="store_true", help="Adam(lr=1e-3) instead of SGD(0.05, momentum 0.9)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        raise SystemExit("this example needs torch: pip install torch==2.13.0")
    threads = args.threads or pyconv.get_num_threads()
    pyconv.set_num_threads(threads)
    torch.set_num_threads(threads)

    x, y = load_digits()
    x_tr, y_tr, x_te, y_te = data.train_val_test_split(x, y, fractions=(0.8, 0.2), seed=args.seed)

    pyconv.manual_seed(args.seed)
    pm = pyconv_net()
    tm = torch_net(torch)
    tm.load_state_dict({k: torch.from_numpy(v) for k, v in pm.state_dict().items()})
    if args.adam:
        popt = optim.Adam(pm.parameters(), lr=1e-3)
        topt = torch.optim.Adam(tm.parameters(), lr=1e-3)
    else:
        popt = optim.SGD(pm.parameters(), lr=0.05, momentum=0.9)
        topt = torch.optim.SGD(tm.parameters(), lr=0.05, momentum=0.9)
    ploss, tloss = nn.CrossEntropyLoss(), torch.nn.CrossEntropyLoss()
    loader = data.BatchLoader(x_tr, y_tr, batch_size=args.batch_size, shuffle=True, seed=args.seed)

    print(f"{len(x_tr)} training / {len(x_te)} test digits, batch {args.batch_size}, "
          f"{threads} threads, {'Adam' if args.adam else 'SGD momentum'}")
    print(f"{'epoch':>5} | {'pyconv loss':>11} {'acc':>6} {'s':>5} | {'torch loss':>10} {'acc':>6} {'s':>5}")
    tp_total = tt_total = 0.0
    for epoch in range(1, args.epochs + 1):
        batches = list(loader)
        # pyconv
        pm.train()
        t0 = time.perf_counter()
        lp = 0.0
        for xb, yb in batches:
            out = pm(xb)
            lp += float(ploss(out, yb)) * len(yb)
            popt.zero_grad()
            pm.backward(ploss.backward(), need_input_grad=False)
            popt.step()
        tp = time.perf_counter() - t0
        # torch
        tm.train()
        t0 = time.perf_counter()
        lt = 0.0
        for xb, yb in batches:
            xt, yt = torch.from_numpy(xb), torch.from_numpy(yb)
            out = tm(xt)
            loss = tloss(out, yt)
            topt.zero_grad()
            loss.backward()
            topt.step()
            lt += float(loss.detach()) * len(yb)
        tt = time.perf_counter() - t0
        tp_total += tp
        tt_total += tt
        pm.eval()
        tm.eval()
        acc_p = float(np.mean(pm(x_te).argmax(1) == y_te))
        with torch.no_grad():
            acc_t = float(np.mean(tm(torch.from_numpy(x_te)).numpy().argmax(1) == y_te))
        print(f"{epoch:>5} | {lp / len(x_tr):>11.4f} {acc_p:>6.3f} {tp:>5.2f} | "
              f"{lt / len(x_tr):>10.4f} {acc_t:>6.3f} {tt:>5.2f}")

    # inference throughput on the whole test set, best of 5
    def best(fn, n=5):
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return min(ts)
    xt_te = torch.from_numpy(x_te)
    ip = best(lambda: pm(x_te))
    with torch.no_grad():
        it = best(lambda: tm(xt_te))
    n_img = len(x_tr) * args.epochs
    print(f"\ntest accuracy: pyconv {acc_p:.3f}, torch {acc_t:.3f}")
    print(f"training:  pyconv {n_img / tp_total:,.0f} img/s, torch {n_img / tt_total:,.0f} img/s "
          f"(pyconv/torch speed {tt_total / tp_total:.2f}x)")
    print(f"inference: pyconv {len(x_te) / ip:,.0f} img/s, torch {len(x_te) / it:,.0f} img/s "
          f"({it / ip:.2f}x)")


if __name__ == "__main__":
    main()
