"""Training API: ``fit`` / ``evaluate`` / ``predict``, callbacks, history and hyper-parameter search.

A Keras-style loop over pyconv modules, losses and optimizers::

    history = fit(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters(), 1e-3),
                  x_train, y_train, epochs=30, batch_size=64,
                  validation_data=(x_val, y_val),
                  callbacks=[EarlyStopping(patience=5), ModelCheckpoint("best.npz", save_best_only=True)],
                  seed=0)
    history.plot("curves.png")

Epochs and batches are numbered from 1 in logs and errors. Every epoch is
one pass over a seeded permutation of the training set; with the same seed
(and seeded augmentations) a run is bit-identical, and a run resumed from a
checkpoint (``resume_from=``) continues exactly as if never interrupted: the
checkpoint holds the model, optimizer, scheduler, callbacks, shuffling and
dropout RNG states, augmentation state, history and epoch.

A non-finite loss stops training with :class:`NonFiniteLossError` naming the
epoch and batch where it first appeared.
"""
from __future__ import annotations

import csv
import itertools
import math
import os
import sys
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from . import io as _io
from . import metrics as _metrics
from .nn import init as _init
from .nn.module import Module
from .optim import LRScheduler, Optimizer, ReduceLROnPlateau, clip_grad_norm_

__all__ = [
    "fit", "evaluate", "predict", "History", "NonFiniteLossError",
    "Callback", "EarlyStopping", "ModelCheckpoint", "LearningRateScheduler", "CSVLogger",
    "LambdaCallback", "grid_search", "random_search", "SearchResult",
]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the epoch and batch."""


# --------------------------------------------------------------------------
# history
# --------------------------------------------------------------------------
class History:
    """Per-epoch logs of a :func:`fit` run.

    ``history.history`` maps 'loss', 'val_loss', each metric and its 'val_'
    twin, 'lr' and 'time' (seconds) to lists with one value per epoch;
    ``history.epoch`` lists the epoch numbers (from 1).
    """

    def __init__(self, history: Optional[Dict[str, List[float]]] = None, epoch=None):
        self.history: Dict[str, List[float]] = {k: list(v) for k, v in (history or {}).items()}
        self.epoch: List[int] = list(epoch or [])
        self.stopped_epoch: Optional[int] = None

    def append(self, epoch: int, logs: Dict[str, float]) -> None:
        n = len(self.epoch)
        self.epoch.append(int(epoch))
        for k, v in logs.items():
            self.history.setdefault(k, [math.nan] * n).append(float(v))
        for k, v in self.history.items():
            if len(v) < n + 1:
                v.append(math.nan)

    def __getitem__(self, key: str) -> List[float]:
        return self.history[key]

    def __len__(self) -> int:
        return len(self.epoch)

    def best(self, monitor: str = "val_loss", mode: str = "auto") -> Tuple[int, float]:
        """(epoch, value) of the best epoch for ``monitor``."""
        if monitor not in self.history:
            raise KeyError(f"History has no {monitor!r}; it has {sorted(self.history)}")
        vals = np.asarray(self.history[monitor], dtype=np.float64)
        sign = -1.0 if _mode(mode, monitor) == "max" else 1.0
        i = int(np.nanargmin(sign * vals))
        return self.epoch[i], float(vals[i])

    def plot(self, path=None, metrics=None):
        """Train / validation curves per metric (needs matplotlib); saves a PNG if ``path``."""
        from .plot import plot_history
        if metrics is None:  # everything but the wall time per epoch
            metrics = [k for k in self.history if k != "time" and not k.startswith("val_")]
        return plot_history(self, path=path, metrics=metrics)

    def state_dict(self) -> dict:
        return {"history": {k: list(v) for k, v in self.history.items()}, "epoch": list(self.epoch)}

    def __repr__(self) -> str:
        last = {k: round(v[-1], 4) for k, v in self.history.items() if v and k != "time"}
        return f"History(epochs={len(self.epoch)}, last={last})"


def _mode(mode: str, monitor: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode != "auto":
        return mode
    base = monitor[4:] if monitor.startswith("val_") else monitor
    return "min" if "loss" in base or base in ("lr", "time") else "max"


# --------------------------------------------------------------------------
# callbacks
# --------------------------------------------------------------------------
class Callback:
    """Base class. Hooks get ``trainer`` (see :class:`_Trainer`) and the logs dict.

    ``on_epoch_end`` may set ``trainer.stop_training = True``. ``on_epoch_saved``
    runs after every callback has seen the epoch (checkpoints are written
    there, so they capture the final state of the epoch). ``state_dict`` /
    ``load_state_dict`` let checkpoints resume a callback exactly.
    """

    def on_train_begin(self, trainer) -> None: ...
    def on_epoch_begin(self, trainer, epoch: int) -> None: ...
    def on_batch_end(self, trainer, batch: int, logs: Dict[str, float]) -> None: ...
    def on_epoch_end(self, trainer, epoch: int, logs: Dict[str, float]) -> None: ...
    def on_epoch_saved(self, trainer, epoch: int, logs: Dict[str, float]) -> None: ...
    def on_train_end(self, trainer) -> None: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class _Monitor(Callback):
    def __init__(self, monitor: str, mode: str, min_delta: float = 0.0):
        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be a str, got {type(monitor).__name__}")
        self.monitor = monitor
        self.mode = _mode(mode, monitor)
        if not min_delta >= 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta!r}")
        self.min_delta = float(min_delta)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch: Optional[int] = None

    def _value(self, logs):
        if self.monitor not in logs:
            raise KeyError(f"{type(self).__name__}: monitor {self.monitor!r} is not in the logs "
                           f"{sorted(logs)}; pass validation data for 'val_' metrics")
        return float(logs[self.monitor])

    def _improved(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def state_dict(self):
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state):
        self.best = float(state["best"])
        self.best_epoch = state["best_epoch"]


class EarlyStopping(_Monitor):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    With ``restore_best_weights`` (default) the model ends with the weights of
    its best epoch (also when training ran to the last epoch).
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0,
                 mode: str = "auto", restore_best_weights: bool = True, verbose: int = 0):
        super().__init__(monitor, mode, min_delta)
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be an int >= 0, got {patience!r}")
        self.patience = patience
        self.restore_best_weights = bool(restore_best_weights)
        self.verbose = verbose
        self.wait = 0
        self.best_weights = None
        self.stopped_epoch: Optional[int] = None

    def on_train_begin(self, trainer):
        if trainer.start_epoch == 1:
            self.wait = 0
            self.best = math.inf if self.mode == "min" else -math.inf
            self.best_weights = None
            self.best_epoch = None
        self.stopped_epoch = None

    def on_epoch_end(self, trainer, epoch, logs):
        value = self._value(logs)
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = trainer.model.state_dict()
            return
        self.wait += 1
        if self.wait > self.patience:
            self.stopped_epoch = epoch
            trainer.stop_training = True
            if self.verbose:
                trainer.log(f"EarlyStopping: no improvement in {self.monitor} for "
                            f"{self.wait} epochs; best {self.best:.5g} at epoch {self.best_epoch}")

    def on_train_end(self, trainer):
        if self.restore_best_weights and self.best_weights is not None \
                and self.best_epoch != trainer.epoch:
            trainer.model.load_state_dict(self.best_weights)
            if self.verbose:
                trainer.log(f"EarlyStopping: restored the weights of epoch {self.best_epoch}")

    def state_dict(self):
        s = super().state_dict()
        s.update(wait=self.wait, best_weights=self.best_weights)
        return s

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.wait = int(state["wait"])
        self.best_weights = state["best_weights"]


class ModelCheckpoint(_Monitor):
    """Save a full checkpoint after each epoch (or only on improvement of ``monitor``).

    ``path`` may contain ``{epoch}`` and any log key, e.g.
    ``'ckpt/epoch{epoch:03d}-{val_loss:.3f}.npz'``. The file (written
    atomically) holds the model, optimizer, scheduler, callbacks, RNG states,
    history and epoch; pass it to ``fit(..., resume_from=path)`` to continue,
    or load the weights alone with ``model.load_state_dict(pyconv.load(path)['model'])``.
    With ``weights_only=True`` the file holds just the model's state dict.
    """

    def __init__(self, path, monitor: str = "val_loss", save_best_only: bool = False,
                 mode: str = "auto", weights_only: bool = False, verbose: int = 0):
        super().__init__(monitor, mode)
        self.path = os.fspath(path)
        self.save_best_only = bool(save_best_only)
        self.weights_only = bool(weights_only)
        self.verbose = verbose
        self.last_saved: Optional[str] = None

    def on_epoch_saved(self, trainer, epoch, logs):
        if self.save_best_only:
            value = self._value(logs)
            if not self._improved(value):
                return
            self.best, self.best_epoch = value, epoch
        try:
            path = self.path.format(epoch=epoch, **logs)
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"ModelCheckpoint: cannot format path {self.path!r} with epoch and "
                             f"logs {sorted(logs)}: {e}") from None
        obj = trainer.model.state_dict() if self.weights_only else trainer.checkpoint()
        _io.save(obj, path)
        self.last_saved = path
        if self.verbose:
            trainer.log(f"ModelCheckpoint: saved {path}")


class LearningRateScheduler(Callback):
    """Step a :mod:`pyconv.optim` scheduler after every epoch.

    ``ReduceLROnPlateau`` is stepped with the monitored value (default
    'val_loss', or 'loss' when there is no validation data).
    """

    def __init__(self, scheduler: LRScheduler, monitor: Optional[str] = None):
        if not isinstance(scheduler, LRScheduler):
            raise TypeError(f"LearningRateScheduler needs a pyconv.optim scheduler, got "
                            f"{type(scheduler).__name__}")
        self.scheduler = scheduler
        self.monitor = monitor

    def on_epoch_end(self, trainer, epoch, logs):
        if isinstance(self.scheduler, ReduceLROnPlateau):
            key = self.monitor or ("val_loss" if "val_loss" in logs else "loss")
            if key not in logs:
                raise KeyError(f"LearningRateScheduler: monitor {key!r} is not in the logs {sorted(logs)}")
            self.scheduler.step(logs[key])
        else:
            self.scheduler.step()

    def state_dict(self):
        return {"scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state):
        self.scheduler.load_state_dict(state["scheduler"])


class CSVLogger(Callback):
    """Append one row per epoch (epoch and every log value) to a CSV file.

    Each row is flushed and fsync'ed as it is written, so a crash loses at most
    the epoch in progress. ``append=False`` starts a new file, except when
    resuming (then rows after the checkpoint's epoch are dropped first).
    """

    def __init__(self, path, append: bool = False, separator: str = ","):
        self.path = os.fspath(path)
        self.append = bool(append)
        self.separator = separator
        self._keys: Optional[List[str]] = None

    def on_train_begin(self, trainer):
        self._keys = None
        resuming = trainer.start_epoch > 1
        if resuming and os.path.exists(self.path):
            with open(self.path, newline="") as f:
                rows = list(csv.reader(f, delimiter=self.separator))
            if rows:
                self._keys = rows[0][1:]
                keep = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) < trainer.start_epoch]
                with open(self.path, "w", newline="") as f:
                    csv.writer(f, delimiter=self.separator).writerows(keep)
        elif not self.append and os.path.exists(self.path):
            os.unlink(self.path)
        elif self.append and os.path.exists(self.path):
            with open(self.path, newline="") as f:
                first = next(csv.reader(f, delimiter=self.separator), None)
            if first:
                self._keys = first[1:]

    def on_epoch_end(self, trainer, epoch, logs):
        d = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(d, exist_ok=True)
        new = not os.path.exists(self.path) or os.path.getsize(self.path) == 0
        if self._keys is None:
            self._keys = list(logs)
        with open(self.path, "a", newline="") as f:
            w = csv.writer(f, delimiter=self.separator)
            if new:
                w.writerow(["epoch"] + self._keys)
            w.writerow([epoch] + [repr(float(logs[k])) if k in logs else "" for k in self._keys])
            f.flush()
            os.fsync(f.fileno())


class LambdaCallback(Callback):
    """A callback from plain functions: ``LambdaCallback(on_epoch_end=lambda trainer, epoch, logs: ...)``."""

    def __init__(self, **hooks):
        names = {"on_train_begin", "on_epoch_begin", "on_batch_end", "on_epoch_end",
                 "on_epoch_saved", "on_train_end"}
        bad = set(hooks) - names
        if bad:
            raise TypeError(f"LambdaCallback: unknown hooks {sorted(bad)}; known: {sorted(names)}")
        for k, f in hooks.items():
            setattr(self, k, f)


# --------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------
def _check_xy(x, y, name="x"):
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"{name} must have a batch dimension and at least one more, got shape {x.shape}")
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric, got dtype {x.dtype}")
    if y is not None:
        y = np.asarray(y)
        if y.shape[:1] != x.shape[:1]:
            raise ValueError(f"{name} has {x.shape[0]} samples but its targets have "
                             f"{y.shape[0] if y.ndim else 'no'} (shape {y.shape})")
    return x, y


def _positive(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    return int(v)


def _use_bar(verbose) -> bool:
    if verbose != 1:
        return False
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return sys.stderr.isatty()


class _Trainer:
    """The state of one :func:`fit` run, handed to callbacks."""

    def __init__(self, model, loss, optimizer, history, verbose):
        self.model = model
        self.loss = loss
        self.optimizer = optimizer
        self.history = history
        self.verbose = verbose
        self.stop_training = False
        self.epoch = 0
        self.start_epoch = 1
        self.rng: Optional[np.random.Generator] = None
        self.augment = None
        self.callbacks: List[Callback] = []

    def log(self, msg: str) -> None:
        if self.verbose:
            print(msg, file=sys.stderr if _use_bar(self.verbose) else sys.stdout, flush=True)

    def checkpoint(self) -> dict:
        aug = getattr(self.augment, "get_state", None)
        return {
            "format": "pyconv-checkpoint",
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "callbacks": {f"{i}:{type(c).__name__}": c.state_dict() for i, c in enumerate(self.callbacks)},
            "history": self.history.state_dict(),
            "rng": {"shuffle": self.rng.bit_generator.state, "global": _init.get_rng_state(),
                    "augment": aug() if aug else None},
        }

    def restore(self, ckpt) -> None:
        if isinstance(ckpt, (str, os.PathLike)):
            ckpt = _io.load(ckpt)
        if not isinstance(ckpt, dict) or ckpt.get("format") != "pyconv-checkpoint":
            raise ValueError("resume_from must be a checkpoint written by ModelCheckpoint "
                             "(weights_only=False) or a dict from trainer.checkpoint()")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        saved = ckpt["callbacks"]
        mine = {f"{i}:{type(c).__name__}": c for i, c in enumerate(self.callbacks)}
        if set(saved) != set(mine):
            raise ValueError(f"resume_from: the checkpoint has callbacks {sorted(saved)} but this "
                             f"run has {sorted(mine)}; pass the same callbacks to resume exactly")
        for k, c in mine.items():
            c.load_state_dict(saved[k])
        h = ckpt["history"]
        self.history.history = {k: list(v) for k, v in h["history"].items()}
        self.history.epoch = list(h["epoch"])
        self.rng.bit_generator.state = ckpt["rng"]["shuffle"]
        _init.set_rng_state(ckpt["rng"]["global"])
        aug_state = ckpt["rng"]["augment"]
        if aug_state is not None:
            if not hasattr(self.augment, "set_state"):
                raise ValueError("resume_from: the checkpoint holds an augmentation state but "
                                 "this run has no augmentation with set_state()")
            self.augment.set_state(aug_state)
        self.epoch = int(ckpt["epoch"])
        self.start_epoch = self.epoch + 1


def _backward(model, grad):
    """model.backward(grad), telling pyconv modules that no input gradient is wanted."""
    try:
        return model.backward(grad, need_input_grad=False)
    except TypeError as e:
        if "need_input_grad" not in str(e):
            raise
        return model.backward(grad)  # a user module whose backward takes only grad_output


def _metric_fns(metrics) -> List[Tuple[str, Callable]]:
    if metrics is None:
        return []
    if isinstance(metrics, str) or callable(metrics):
        metrics = (metrics,)
    return [_metrics.get_metric(m) for m in metrics]


def _run_batches(model, loss, x, y, batch_size, metric_fns, prefix=""):
    """Forward-only pass in batches: (logs, outputs)."""
    n = x.shape[0]
    outs = []
    total = 0.0
    for s in range(0, n, batch_size):
        out = model(x[s:s + batch_size])
        if loss is not None:
            total += float(loss(out, y[s:s + batch_size])) * (min(n, s + batch_size) - s)
        outs.append(np.asarray(out))
    scores = np.concatenate(outs) if outs else np.empty((0,))
    logs = {}
    if loss is not None:
        logs[prefix + "loss"] = total / max(n, 1)
    for name, fn in metric_fns:
        logs[prefix + name] = float(fn(y, scores))
    return logs, scores


def fit(model: Module, loss: Module, optimizer: Optimizer, x, y, epochs: int = 10,
        batch_size: int = 32, validation_data=None, validation_split: float = 0.0,
        metrics=("accuracy",), callbacks: Sequence[Callback] = (), seed: Optional[int] = None,
        verbose: int = 1, augment=None, shuffle: bool = True, scheduler: Optional[LRScheduler] = None,
        clip_grad_norm: Optional[float] = None, resume_from=None) -> History:
    """Train ``model`` on (x, y) and return its :class:`History`.

    * ``validation_data=(x_val, y_val)``, or ``validation_split`` (the last
      fraction of x, taken before shuffling, as in Keras).
    * ``metrics``: names ('accuracy', 'top5', 'precision', 'recall', 'f1') or
      callables ``fn(y_true, scores) -> float``; logged for train and validation.
    * ``callbacks``: :class:`EarlyStopping`, :class:`ModelCheckpoint`,
      :class:`LearningRateScheduler`, :class:`CSVLogger`, or your own.
    * ``scheduler``: shorthand for ``callbacks=[LearningRateScheduler(scheduler)]``.
    * ``augment``: a callable applied to each training batch (e.g.
      ``pyconv.data.Compose([...])``); its ``get_state``/``set_state`` go into checkpoints.
    * ``seed``: seeds the shuffling and pyconv's global generator (dropout).
    * ``verbose``: 0 silent, 1 a progress bar on a terminal (one line per
      epoch otherwise), 2 one line per epoch.
    * ``clip_grad_norm``: clip the global gradient norm before each step.
    * ``resume_from``: a checkpoint path (or dict) from :class:`ModelCheckpoint`;
      training continues after its epoch up to ``epochs``.
    """
    if not isinstance(model, Module):
        raise TypeError(f"fit: model must be a pyconv.nn.Module, got {type(model).__name__}")
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"fit: optimizer must be a pyconv.optim optimizer, got {type(optimizer).__name__}")
    if not callable(loss):
        raise TypeError(f"fit: loss must be a loss module such as nn.CrossEntropyLoss(), got {loss!r}")
    epochs = _positive("epochs", epochs)
    batch_size = _positive("batch_size", batch_size)
    x, y = _check_xy(x, y)
    if validation_data is not None and validation_split:
        raise ValueError("fit: give validation_data or validation_split, not both")
    if validation_split:
        if not 0.0 < float(validation_split) < 1.0:
            raise ValueError(f"validation_split must be in (0, 1), got {validation_split!r}")
        n_val = int(round(x.shape[0] * float(validation_split)))
        if n_val < 1 or n_val >= x.shape[0]:
            raise ValueError(f"validation_split={validation_split} leaves {n_val} of "
                             f"{x.shape[0]} samples for validation")
        validation_data = (x[-n_val:], y[-n_val:])
        x, y = x[:-n_val], y[:-n_val]
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("validation_data must be a pair (x_val, y_val)")
        xv, yv = _check_xy(*validation_data, name="validation_data x")
    if x.shape[0] == 0:
        raise ValueError("fit: the training set is empty")
    metric_fns = _metric_fns(metrics)
    callbacks = list(callbacks)
    for c in callbacks:
        if not isinstance(c, Callback):
            raise TypeError(f"fit: callbacks must be Callback instances, got {type(c).__name__}")
    if scheduler is not None:
        callbacks.append(LearningRateScheduler(scheduler))
    if clip_grad_norm is not None and not clip_grad_norm > 0:
        raise ValueError(f"clip_grad_norm must be positive, got {clip_grad_norm!r}")

    history = History()
    trainer = _Trainer(model, loss, optimizer, history, verbose)
    trainer.callbacks = callbacks
    trainer.augment = augment
    trainer.rng = np.random.default_rng(seed)
    if seed is not None:
        _init.manual_seed(int(seed))
    if resume_from is not None:
        trainer.restore(resume_from)
    for c in callbacks:
        c.on_train_begin(trainer)

    n = x.shape[0]
    nb = -(-n // batch_size)
    bar_ok = _use_bar(verbose)
    for epoch in range(trainer.start_epoch, epochs + 1):
        trainer.epoch = epoch
        for c in callbacks:
            c.on_epoch_begin(trainer, epoch)
        t0 = time.perf_counter()
        model.train()
        order = trainer.rng.permutation(n) if shuffle else np.arange(n)
        total, outs = 0.0, []
        bar = None
        if bar_ok:
            from tqdm.auto import tqdm
            bar = tqdm(total=nb, desc=f"Epoch {epoch}/{epochs}", unit="batch", leave=True,
                       dynamic_ncols=True)
        for b in range(nb):
            idx = order[b * batch_size:(b + 1) * batch_size]
            xb, yb = x[idx], y[idx]
            if augment is not None:
                xb = augment(xb)
            out = model(xb)
            value = float(loss(out, yb))
            if not math.isfinite(value):
                if bar is not None:
                    bar.close()
                raise NonFiniteLossError(
                    f"non-finite loss {value} at epoch {epoch}, batch {b + 1} of {nb}; lower the "
                    f"learning rate (now {[g['lr'] for g in optimizer.param_groups]}), clip "
                    "gradients (clip_grad_norm=...) or check the inputs for NaN/inf")
            optimizer.zero_grad()
            _backward(model, loss.backward())
            if clip_grad_norm is not None:
                clip_grad_norm_(model.parameters(), clip_grad_norm)
            optimizer.step()
            total += value * idx.size
            if metric_fns:
                outs.append(np.asarray(out))
            for c in callbacks:
                c.on_batch_end(trainer, b + 1, {"loss": value})
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{total / min(n, (b + 1) * batch_size):.4f}", refresh=False)
        logs = {"loss": total / n}
        if metric_fns:
            scores = np.concatenate(outs)
            ytr = y[order]
            for name, fn in metric_fns:
                logs[name] = float(fn(ytr, scores))
        if validation_data is not None:
            model.eval()
            vlogs, _ = _run_batches(model, loss, xv, yv, max(batch_size, 256), metric_fns, "val_")
            logs.update(vlogs)
        logs["lr"] = float(optimizer.param_groups[0]["lr"])
        logs["time"] = time.perf_counter() - t0
        for c in callbacks:
            c.on_epoch_end(trainer, epoch, logs)
        history.append(epoch, logs)
        for c in callbacks:
            c.on_epoch_saved(trainer, epoch, logs)
        if bar is not None:
            bar.set_postfix_str(_fmt_logs(logs), refresh=True)
            bar.close()
        elif verbose:
            print(f"Epoch {epoch}/{epochs} - {_fmt_logs(logs)}", flush=True)
        if trainer.stop_training:
            history.stopped_epoch = epoch
            break
    model.eval()
    for c in callbacks:
        c.on_train_end(trainer)
    return history


def _fmt_logs(logs):
    parts = []
    for k, v in logs.items():
        if k == "time":
            parts.append(f"{v:.2f}s")
        elif k == "lr":
            parts.append(f"lr {v:.3g}")
        else:
            parts.append(f"{k} {v:.4f}")
    return " - ".join(parts)


def evaluate(model: Module, loss: Optional[Module], x, y, batch_size: int = 256,
             metrics=("accuracy",)) -> Dict[str, float]:
    """Loss and metrics on (x, y) in eval mode, in batches: ``{'loss': ..., 'accuracy': ...}``."""
    x, y = _check_xy(x, y)
    batch_size = _positive("batch_size", batch_size)
    was = model.training
    model.eval()
    try:
        logs, _ = _run_batches(model, loss, x, y, batch_size, _metric_fns(metrics))
    finally:
        model.train(was)
    return logs


def predict(model: Module, x, batch_size: int = 256) -> np.ndarray:
    """The model's outputs on x in eval mode, computed in batches."""
    x, _ = _check_xy(x, None)
    batch_size = _positive("batch_size", batch_size)
    was = model.training
    model.eval()
    try:
        outs = [np.asarray(model(x[s:s + batch_size])) for s in range(0, x.shape[0], batch_size)]
    finally:
        model.train(was)
    if not outs:
        raise ValueError("predict: x is empty")
    return np.concatenate(outs)


# --------------------------------------------------------------------------
# hyper-parameter search
# --------------------------------------------------------------------------
_FIT_KEYS = ("epochs", "batch_size")


class SearchResult:
    """Rows of a search, best first: each a dict of params, the monitored value,
    its epoch and the wall time. ``best_params``; ``table()`` for a text table;
    ``to_csv(path)``."""

    def __init__(self, rows: List[dict], monitor: str, mode: str):
        self.monitor, self.mode = monitor, mode
        sign = -1.0 if mode == "max" else 1.0
        self.rows = sorted(rows, key=lambda r: (math.isnan(r["score"]), sign * r["score"]))

    @property
    def best_params(self) -> dict:
        return dict(self.rows[0]["params"])

    @property
    def best_score(self) -> float:
        return self.rows[0]["score"]

    def __len__(self):
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def table(self) -> str:
        keys = sorted({k for r in self.rows for k in r["params"]})
        head = ["rank"] + keys + [self.monitor, "epoch", "seconds"]
        body = [[str(i + 1)] + [repr(r["params"].get(k)) for k in keys]
                + [f"{r['score']:.5g}", str(r["epoch"]), f"{r['seconds']:.1f}"]
                for i, r in enumerate(self.rows)]
        w = [max(len(row[j]) for row in body + [head]) for j in range(len(head))]
        lines = ["  ".join(c.ljust(w[j]) for j, c in enumerate(row)) for row in [head] + body]
        return "\n".join(lines)

    def __repr__(self):
        return self.table()

    def to_csv(self, path) -> None:
        keys = sorted({k for r in self.rows for k in r["params"]})
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(keys + [self.monitor, "epoch", "seconds"])
            for r in self.rows:
                w.writerow([r["params"].get(k) for k in keys] + [r["score"], r["epoch"], r["seconds"]])


def _search(build_fn, candidates, x, y, validation_data, validation_split, monitor, mode,
            epochs, batch_size, fit_kwargs, verbose):
    mode = _mode(mode, monitor)
    if validation_data is None and not validation_split:
        raise ValueError("search: give validation_data or validation_split (results are "
                         "ranked on the validation split)")
    rows = []
    for i, params in enumerate(candidates):
        build_params = {k: v for k, v in params.items() if k not in _FIT_KEYS}
        run = dict(epochs=epochs, batch_size=batch_size)
        run.update({k: v for k, v in params.items() if k in _FIT_KEYS})
        built = build_fn(**build_params)
        if not isinstance(built, tuple) or len(built) not in (2, 3):
            raise TypeError("build_fn must return (model, optimizer) or (model, loss, optimizer)")
        model, loss, opt = (built[0], None, built[1]) if len(built) == 2 else built
        if loss is None:
            from .nn import CrossEntropyLoss
            loss = CrossEntropyLoss()
        t0 = time.perf_counter()
        h = fit(model, loss, opt, x, y, validation_data=validation_data,
                validation_split=validation_split, verbose=0, **run, **fit_kwargs)
        epoch, score = h.best(monitor, mode)
        rows.append({"params": dict(params), "score": score, "epoch": epoch,
                     "seconds": time.perf_counter() - t0})
        if verbose:
            print(f"[{i + 1}] {params} -> {monitor} {score:.5g} (epoch {epoch})", flush=True)
    if not rows:
        raise ValueError("search: no candidates to try")
    return SearchResult(rows, monitor, mode)


def grid_search(build_fn: Callable[..., tuple], param_grid: Dict[str, Iterable], x, y,
                validation_data=None, validation_split: float = 0.0, monitor: str = "val_loss",
                mode: str = "auto", epochs: int = 10, batch_size: int = 32, verbose: int = 0,
                **fit_kwargs) -> SearchResult:
    """Try every combination in ``param_grid`` and rank them on the validation split.

    ``build_fn(**params)`` returns ``(model, optimizer)`` or ``(model, loss,
    optimizer)``; 'epochs' and 'batch_size' in the grid go to :func:`fit`
    instead. Each run is scored by its best epoch of ``monitor``. Other keyword
    arguments (seed, metrics, callbacks, augment ...) are passed to fit.
    """
    if not isinstance(param_grid, dict) or not param_grid:
        raise ValueError("param_grid must be a non-empty dict of name -> list of values")
    keys = list(param_grid)
    values = []
    for k in keys:
        v = param_grid[k]
        if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__"):
            raise TypeError(f"param_grid[{k!r}] must be a list of values, got {v!r}")
        v = list(v)
        if not v:
            raise ValueError(f"param_grid[{k!r}] is empty")
        values.append(v)
    cands = [dict(zip(keys, combo)) for combo in itertools.product(*values)]
    return _search(build_fn, cands, x, y, validation_data, validation_split, monitor, mode,
                   epochs, batch_size, fit_kwargs, verbose)


def random_search(build_fn: Callable[..., tuple], param_distributions: Dict[str, Any], x, y,
                  n_iter: int = 10, seed: Optional[int] = None, validation_data=None,
                  validation_split: float = 0.0, monitor: str = "val_loss", mode: str = "auto",
                  epochs: int = 10, batch_size: int = 32, verbose: int = 0,
                  **fit_kwargs) -> SearchResult:
    """Like :func:`grid_search` on ``n_iter`` random candidates.

    Each value in ``param_distributions`` is a list (sampled uniformly) or a
    callable ``rng -> value`` (e.g. ``lambda r: 10 ** r.uniform(-4, -2)``).
    """
    n_iter = _positive("n_iter", n_iter)
    if not isinstance(param_distributions, dict) or not param_distributions:
        raise ValueError("param_distributions must be a non-empty dict")
    rng = np.random.default_rng(seed)
    cands = []
    for _ in range(n_iter):
        c = {}
        for k, d in param_distributions.items():
            if callable(d):
                c[k] = d(rng)
            else:
                d = list(d)
                if not d:
                    raise ValueError(f"param_distributions[{k!r}] is empty")
                c[k] = d[int(rng.integers(len(d)))]
        cands.append(c)
    return _search(build_fn, cands, x, y, validation_data, validation_split, monitor, mode,
                   epochs, batch_size, fit_kwargs, verbose)
