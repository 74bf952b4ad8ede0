"""The main job: train a small CNN on scikit-learn's bundled 8x8 digits and report.

``python -m pyconv`` (or the ``pyconv`` console script) runs :func:`main`:

1. load the 1,797 digits (no download) and split them 70/10/20, stratified;
2. standardise with statistics of the training split only;
3. train a small CNN with random affine augmentation, Adam, a cosine
   learning-rate schedule and early stopping on the validation loss
   (best weights restored; the best checkpoint is saved atomically);
4. report test accuracy and a per-class precision / recall / F1 table;
5. save the learning curves, the confusion matrix and the misclassified test
   digits as PNGs (when matplotlib is installed);
6. print a short speed report (training and inference images per second,
   the kernels and threads in use).
"""
from __future__ import annotations

import argparse
import os
import time
from typing import List, Optional

import numpy as np


def build_model(width: int = 32, dropout: float = 0.25):
    """conv-bn-relu x2, pool, conv-bn-relu, pool, dropout, linear: 8x8x1 -> 10 classes."""
    from . import nn

    w = width
    return nn.Sequential(
        nn.Conv2d(1, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(),
        nn.Conv2d(w, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(),
        nn.MaxPool2d(2),                                          # 8x8 -> 4x4
        nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(),
        nn.MaxPool2d(2),                                          # 4x4 -> 2x2
        nn.Flatten(), nn.Dropout(dropout),
        nn.Linear(2 * w * 4, 10),
    )


def _parser():
    ap = argparse.ArgumentParser(
        prog="pyconv",
        description="Train a small CNN on the bundled 8x8 digits and report accuracy, "
                    "plots and speed. Other commands: `pyconv bench`, `pyconv info`.")
    ap.add_argument("--epochs", type=int, default=40, help="maximum epochs (default 40)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--patience", type=int, default=8, help="early-stopping patience (epochs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="pyconv threads (default: all cores)")
    ap.add_argument("--out", default="pyconv-demo", help="folder for PNGs, CSV log and checkpoint")
    ap.add_argument("--no-plots", action="store_true", help="skip the PNGs")
    ap.add_argument("--quiet", action="store_true", help="no per-epoch output")
    return ap


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    t_start = time.perf_counter()
    import pyconv
    from . import data, metrics, nn, optim, train
    from .datasets import DIGITS_CLASSES, load_digits

    if args.threads:
        pyconv.set_num_threads(args.threads)
    cfg = pyconv.config()
    print(f"pyconv {cfg['version']}: {cfg['isa']} kernels ({cfg['sgemm_kernel']['name']}), "
          f"{cfg['num_threads']} threads, {cfg['compiler']}")

    x, y = load_digits()
    x_tr, y_tr, x_va, y_va, x_te, y_te = data.train_val_test_split(
        x, y, fractions=(0.7, 0.1, 0.2), stratify=True, seed=args.seed)
    print(f"digits: {len(x)} images 8x8, split 70/10/20 -> train {len(x_tr)}, "
          f"val {len(x_va)}, test {len(x_te)}")
    scaler = data.Standardize(per_channel=True).fit(x_tr)
    x_tr, x_va, x_te = (scaler.transform(a) for a in (x_tr, x_va, x_te))
    augment = data.RandomAffine(degrees=12, translate=(0.1, 0.1), scale=(0.9, 1.1),
                                seed=args.seed)

    pyconv.manual_seed(args.seed)
    model = build_model()
    loss = nn.CrossEntropyLoss()
    opt = optim.Adam(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = optim.CosineAnnealingLR(opt, T_max=args.epochs)
    os.makedirs(args.out, exist_ok=True)
    ckpt = os.path.join(args.out, "best.npz")
    callbacks = [train.EarlyStopping(monitor="val_loss", patience=args.patience),
                 train.ModelCheckpoint(ckpt, monitor="val_loss", save_best_only=True),
                 train.LearningRateScheduler(sched),
                 train.CSVLogger(os.path.join(args.out, "history.csv"))]
    print(f"model: {model.num_parameters():,} parameters; Adam lr {args.lr}, cosine schedule, "
          f"early stopping (patience {args.patience}), up to {args.epochs} epochs")
    t0 = time.perf_counter()
    hist = train.fit(model, loss, opt, x_tr, y_tr, epochs=args.epochs, batch_size=args.batch_size,
                     validation_data=(x_va, y_va), callbacks=callbacks, augment=augment,
                     seed=args.seed, verbose=0 if args.quiet else 1)
    t_train = time.perf_counter() - t0
    best_epoch, best_val = hist.best("val_loss")
    print(f"trained {len(hist)} epochs in {t_train:.1f} s; best val_loss {best_val:.4f} at "
          f"epoch {best_epoch} (weights restored, checkpoint {ckpt})")

    scores = train.predict(model, x_te)
    t_pred = float("inf")
    for _ in range(3):  # best of three: the first call also sizes scratch buffers
        t0 = time.perf_counter()
        train.predict(model, x_te)
        t_pred = min(t_pred, time.perf_counter() - t0)
    pred = scores.argmax(1)
    acc = metrics.accuracy(y_te, pred)
    print(f"\ntest accuracy: {acc * 100:.2f}% ({int((pred == y_te).sum())}/{len(y_te)})\n")
    print(metrics.classification_report(y_te, pred, class_names=DIGITS_CLASSES))
    cm = metrics.confusion_matrix(y_te, pred, num_classes=10)

    if not args.no_plots:
        try:
            from . import plot
            paths = [os.path.join(args.out, n) for n in
                     ("curves.png", "confusion_matrix.png", "misclassified.png")]
            hist.plot(paths[0])
            plot.plot_confusion_matrix(cm, class_names=DIGITS_CLASSES, path=paths[1],
                                       title=f"digits test set, accuracy {acc * 100:.1f}%")
            plot.plot_misclassified(scaler.inverse_transform(x_te), y_te, pred,
                                    class_names=DIGITS_CLASSES, scores=scores, path=paths[2])
            print("\nsaved " + ", ".join(paths))
        except ImportError as e:
            print(f"\nplots skipped: {e}")

    n_seen = sum(len(x_tr) for _ in hist.epoch)
    train_time = sum(hist.history["time"])
    print("\nspeed:")
    print(f"  training   {n_seen / train_time:,.0f} images/s "
          f"({train_time / len(hist):.2f} s per epoch incl. validation, augmentation on)")
    print(f"  inference  {len(x_te) / t_pred:,.0f} images/s ({len(x_te)} test images in "
          f"{t_pred * 1e3:.1f} ms)")
    print(f"  total wall time {time.perf_counter() - t_start:.1f} s on {cfg['num_threads']} "
          f"threads ({cfg['isa']})")
    return 0
