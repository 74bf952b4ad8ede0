#!/usr/bin/env python
"""Transfer learning with pyconv: pretrain, freeze the convolutional base, fine-tune a new head.

1. Pretrain a CNN on the digits 0-4 only.
2. Freeze its convolutional base (``requires_grad_(False)``) and replace the
   classifier with a fresh head for the digits 5-9.
3. Fine-tune only the head on a *small* labelled subset of 5-9 (``--shots``
   images per class), then unfreeze everything and fine-tune the whole
   network at a low learning rate; compare with the same network trained
   from scratch on that subset.

The 8x8 digits are easy: measured here with 5 shots per class, the frozen
base + new head reached about 93% test accuracy and the network trained from
scratch on the same 25 images about 96% (early stopping on the 5-9
validation split helps it a lot). The example is about the workflow —
``requires_grad_(False)``, a new head, an optimizer over the trainable
parameters only, unfreezing — not a claim that transfer wins on this data.

Run:  python examples/transfer_learning.py [--shots 20] [--epochs 30]
"""
import argparse
import time

import numpy as np

import pyconv
from pyconv import data, nn, optim, train
from pyconv.datasets import load_digits


def conv_base(width=32):
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(),       # 2x2 x 2*width features
    )


def head(width=32, classes=5):
    return nn.Linear(2 * width * 4, classes)


def subset(x, y, classes):
    keep = np.isin(y, classes)
    return x[keep], np.searchsorted(classes, y[keep])


def few_shot(x, y, shots, seed):
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.choice(np.flatnonzero(y == c), shots, replace=False)
                          for c in np.unique(y)])
    return x[idx], y[idx]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shots", type=int, default=5, help="labelled images per new class")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()

    x, y = load_digits()
    old, new = np.arange(5), np.arange(5, 10)
    xa, ya = subset(x, y, old)
    xb, yb = subset(x, y, new)
    xa_tr, ya_tr, xa_va, ya_va, xa_te, ya_te = data.train_val_test_split(xa, ya, seed=args.seed)
    xb_tr, yb_tr, xb_va, yb_va, xb_te, yb_te = data.train_val_test_split(xb, yb, seed=args.seed)
    xb_few, yb_few = few_shot(xb_tr, yb_tr, args.shots, args.seed)
    aug = data.RandomAffine(degrees=10, translate=(0.1, 0.1), seed=args.seed)

    # 1. pretrain on 0-4
    pyconv.manual_seed(args.seed)
    base = conv_base()
    model = nn.Sequential(base, head())
    train.fit(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters(), 3e-3), xa_tr, ya_tr,
              epochs=args.epochs, batch_size=32, validation_data=(xa_va, ya_va), augment=aug,
              callbacks=[train.EarlyStopping(patience=5)], seed=args.seed, verbose=0)
    acc_a = train.evaluate(model, None, xa_te, ya_te)["accuracy"]
    print(f"pretrained on digits 0-4 ({len(xa_tr)} images): test accuracy {acc_a:.3f}")

    # 2. freeze the base and put a new head for 5-9 on it. fit() calls model.train() every
    # epoch; _EvalWrapper keeps the frozen base in eval mode so its BatchNorm layers keep the
    # pretrained running statistics. Sequential.backward skips the frozen base entirely.
    base.requires_grad_(False)
    tuned = nn.Sequential(_EvalWrapper(base), head())
    opt = optim.Adam([p for p in tuned.parameters() if p.requires_grad], 1e-2)
    train.fit(tuned, nn.CrossEntropyLoss(), opt, xb_few, yb_few, epochs=args.epochs,
              batch_size=16, validation_data=(xb_va, yb_va), augment=aug,
              callbacks=[train.EarlyStopping(patience=8)], seed=args.seed, verbose=0)
    acc_ft = train.evaluate(tuned, None, xb_te, yb_te)["accuracy"]
    n_train = sum(p.size for p in tuned.parameters() if p.requires_grad)

    # 2b. then unfreeze everything and fine-tune the whole network at a low learning rate
    base.requires_grad_(True)
    whole = nn.Sequential(base, tuned[1])
    train.fit(whole, nn.CrossEntropyLoss(), optim.Adam(whole.parameters(), 3e-4), xb_few, yb_few,
              epochs=args.epochs, batch_size=16, validation_data=(xb_va, yb_va), augment=aug,
              callbacks=[train.EarlyStopping(patience=8)], seed=args.seed, verbose=0)
    acc_all = train.evaluate(whole, None, xb_te, yb_te)["accuracy"]

    # 3. the same network from scratch on the same few images
    pyconv.manual_seed(args.seed + 1)
    scratch = nn.Sequential(conv_base(), head())
    train.fit(scratch, nn.CrossEntropyLoss(), optim.Adam(scratch.parameters(), 3e-3), xb_few,
              yb_few, epochs=args.epochs, batch_size=16, validation_data=(xb_va, yb_va),
              augment=aug, callbacks=[train.EarlyStopping(patience=8)], seed=args.seed, verbose=0)
    acc_sc = train.evaluate(scratch, None, xb_te, yb_te)["accuracy"]

    print(f"digits 5-9 with {args.shots} labelled images per class ({len(xb_few)} in all):")
    print(f"  frozen base + new head ({n_train} trainable parameters): test accuracy {acc_ft:.3f}")
    print(f"  ... then all layers unfrozen, fine-tuned at lr 3e-4: test accuracy {acc_all:.3f}")
    print(f"  same network from scratch ({scratch.num_parameters()} parameters): "
          f"test accuracy {acc_sc:.3f}")
    print(f"done in {time.perf_counter() - t0:.1f} s")


class _EvalWrapper(nn.Module):
    """Runs a frozen module in eval mode whatever the surrounding mode (BatchNorm keeps its
    pretrained running statistics) and passes gradients through only if asked."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def train(self, mode=True):
        object.__setattr__(self, "training", bool(mode))
        self.inner.eval()
        return self

    def forward(self, x):
        return self.inner(x)

    def backward(self, grad_output, need_input_grad=True):
        return self.inner.backward(grad_output, need_input_grad=need_input_grad)


if __name__ == "__main__":
    main()
