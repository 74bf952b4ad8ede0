"""Plots for training runs, classifiers and benchmarks (optional; needs matplotlib).

matplotlib is an optional extra (``pip install 'pyconv-cnn[plot]'``): this
module imports without it and only the plotting functions themselves import
it, raising :class:`ImportError` with that install hint when it is missing.

No function touches :mod:`matplotlib.pyplot` or its global state: each builds
a :class:`matplotlib.figure.Figure` attached to its own
:class:`~matplotlib.backends.backend_agg.FigureCanvasAgg`, so they work on
headless machines, do not interfere with an interactive session, do not leak
figures, and can be called from several threads.

Every function returns the Figure and, when ``path`` is given, also writes it
as a PNG. The write is atomic: the image is rendered into a temporary file in
the target's directory (created if missing), flushed and fsynced, then moved
over the target with :func:`os.replace`, so readers never see a half-written
file and a failed render leaves an existing file untouched.
"""
from __future__ import annotations

import math
import os
import stat
import tempfile
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "plot_history",
    "plot_confusion_matrix",
    "plot_misclassified",
    "plot_images",
    "plot_bars",
    "save_figure",
]

PathLike = Union[str, "os.PathLike[str]"]

_INSTALL_HINT = "pip install 'pyconv-cnn[plot]'"


def _mpl(func: str):
    """Import matplotlib lazily; return (Figure, FigureCanvasAgg)."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(f"pyconv.plot.{func} needs matplotlib: {_INSTALL_HINT}") from e
    return Figure, FigureCanvasAgg


def _new_figure(func: str, figsize: Tuple[float, float], dpi: int = 100):
    Figure, FigureCanvasAgg = _mpl(func)
    try:
        fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    except TypeError:  # matplotlib < 3.5
        fig = Figure(figsize=figsize, dpi=dpi, constrained_layout=True)
    FigureCanvasAgg(fig)
    return fig


def _current_umask() -> int:
    """The process umask, read without changing it (thread-safe); 0o022 if unknown."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def save_figure(fig, path: PathLike, dpi: Optional[int] = None) -> str:
    """Atomically write ``fig`` as a PNG to ``path``; return the absolute path.

    Parent directories are created. The image goes to a hidden temporary file
    in the same directory, is flushed and fsynced, and is then renamed onto
    ``path`` with :func:`os.replace`; on any error the temporary file is
    removed and an existing ``path`` is left as it was. A new file gets the
    usual ``0o666 & ~umask`` permissions; a replaced file keeps its mode.
    """
    _, FigureCanvasAgg = _mpl("save_figure")
    target = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(target)
    os.makedirs(directory, exist_ok=True)
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~_current_umask()
    tmp = tempfile.NamedTemporaryFile(
        dir=directory, prefix="." + os.path.basename(target) + ".", suffix=".png", delete=False
    )
    try:
        with tmp:
            fig.savefig(tmp, format="png", dpi=dpi if dpi is not None else fig.dpi)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp.name, mode)
        os.replace(tmp.name, target)
    except BaseException:
        try:
            os.unlink(tmp.name)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable (best effort; POSIX only)
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        pass
    else:
        try:
            os.fsync(dfd)
        except OSError:
            pass
        finally:
            os.close(dfd)
    return target


def _finish(fig, path: Optional[PathLike]):
    if path is not None:
        save_figure(fig, path)
    return fig


# --------------------------------------------------------------------------
# training history
# --------------------------------------------------------------------------

def _history_dict(history) -> Dict[str, Any]:
    h = getattr(history, "history", history)
    if not isinstance(h, Mapping):
        raise TypeError(
            "history must be a dict of lists or an object with a .history dict, got "
            f"{type(history).__name__}"
        )
    if not h:
        raise ValueError("history is empty: nothing to plot")
    return dict(h)


def _series(values, key: str) -> np.ndarray:
    try:
        arr = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"history[{key!r}] must be a sequence of numbers ({e})") from None
    if arr.ndim != 1:
        raise ValueError(f"history[{key!r}] must be a 1-D sequence of numbers, got shape {arr.shape}")
    return arr


_SKIP_KEYS = {"epoch", "epochs", "val_epoch"}


def _base_metrics(h: Mapping[str, Any]) -> List[str]:
    bases: List[str] = []
    for key in h:
        if key in _SKIP_KEYS:
            continue
        base = key[4:] if key.startswith("val_") else key
        if base and base not in bases:
            bases.append(base)
    if "loss" in bases:
        bases.remove("loss")
        bases.insert(0, "loss")
    return bases


def plot_history(history, path: Optional[PathLike] = None, metrics: Optional[Sequence[str]] = None,
                 *, title: Optional[str] = None, dpi: int = 100):
    """Learning curves: one subplot per metric with its training and validation curves.

    Parameters
    ----------
    history : dict or object with a ``.history`` dict
        Maps names to per-epoch values, e.g. ``{'loss': [...], 'val_loss': [...],
        'accuracy': [...], 'val_accuracy': [...], 'lr': [...]}``. A key
        ``'val_X'`` is drawn as the validation curve in the subplot of ``'X'``;
        every other key (except ``'epoch'``) gets its own subplot. ``None``
        entries are drawn as gaps.
    path : str or path-like, optional
        Where to save the PNG.
    metrics : sequence of str, optional
        Base names to plot, in this order (default: all, ``'loss'`` first).
    title : str, optional
        Figure title.

    The x axis counts epochs from 1. The subplot of ``loss`` marks the epoch
    with the lowest validation loss (a dashed vertical line and a star). A
    learning-rate curve (``'lr'``) uses a log y axis when all values are > 0.

    Returns
    -------
    matplotlib.figure.Figure
        With one axes per plotted metric.
    """
    _mpl("plot_history")
    h = _history_dict(history)
    available = _base_metrics(h)
    if metrics is None:
        names = available
    else:
        if isinstance(metrics, str):
            metrics = [metrics]
        names = list(metrics)
        unknown = [m for m in names if m not in available]
        if unknown:
            raise ValueError(f"metrics {unknown} are not in the history; available: {available}")
    if not names:
        raise ValueError(f"history has no metrics to plot (keys: {list(h)})")

    n = len(names)
    ncols = min(n, 2)
    nrows = math.ceil(n / ncols)
    fig = _new_figure("plot_history", (5.5 * ncols, 3.6 * nrows), dpi)
    from matplotlib.ticker import MaxNLocator

    for i, name in enumerate(names):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        for key, label, style in ((name, "train", "-"), ("val_" + name, "val", "--")):
            if key not in h:
                continue
            y = _series(h[key], key)
            x = np.arange(1, y.size + 1)
            ax.plot(x, y, style, marker="o" if y.size <= 30 else None, markersize=3, label=label)
            if name == "loss" and key == "val_loss" and np.isfinite(y).any():
                best = int(np.nanargmin(np.where(np.isfinite(y), y, np.nan)))
                ax.axvline(best + 1, color="gray", linestyle=":", linewidth=1)
                ax.plot([best + 1], [y[best]], marker="*", markersize=12, color="tab:red",
                        linestyle="none", label=f"best val (epoch {best + 1}: {y[best]:.4g})")
        if name == "lr":
            vals = _series(h["lr"], "lr") if "lr" in h else np.array([])
            if vals.size and np.all(vals[np.isfinite(vals)] > 0):
                ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return _finish(fig, path)


# --------------------------------------------------------------------------
# confusion matrix
# --------------------------------------------------------------------------

def plot_confusion_matrix(cm, class_names: Optional[Sequence[str]] = None, path: Optional[PathLike] = None,
                          normalize: Union[bool, str] = False, title: str = "Confusion matrix",
                          *, cmap: str = "Blues", annotate: Optional[bool] = None, dpi: int = 100):
    """Draw a confusion matrix (rows = true class, columns = predicted class).

    Parameters
    ----------
    cm : array, shape (C, C)
        Counts, e.g. from :func:`pyconv.metrics.confusion_matrix`.
    class_names : sequence of str, optional
        Tick labels (default ``0 .. C-1``).
    path : str or path-like, optional
        Where to save the PNG.
    normalize : bool or {'true', 'pred', 'all'}
        ``False``: show counts. ``True`` or ``'true'``: divide each row by its
        sum (per-class recall on the diagonal); ``'pred'``: divide each column;
        ``'all'``: divide by the total. Empty rows/columns become 0.
    title : str
        Axes title.
    cmap : str
        Colormap name.
    annotate : bool, optional
        Write the value into each cell; default: only when ``C <= 30``. The
        text is white on dark cells and black on light ones (by the luminance
        of the cell colour).

    Returns
    -------
    matplotlib.figure.Figure
        With two axes: the matrix and its colorbar.
    """
    _mpl("plot_confusion_matrix")
    m = np.asarray(cm)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"cm must be a square 2-D array of shape (C, C), got shape {m.shape}")
    if m.dtype.kind not in "biuf":
        raise TypeError(f"cm must be numeric, got dtype {m.dtype}")
    c = m.shape[0]
    if c == 0:
        raise ValueError("cm is empty (shape (0, 0)): nothing to plot")
    if m.dtype.kind == "f" and not np.isfinite(m).all():
        raise ValueError("cm contains NaN or infinite values")
    if (m < 0).any():
        raise ValueError(f"cm must hold non-negative counts, got minimum {m.min().item()}")
    names = _names(class_names, c, "class_names")

    if normalize is True:
        normalize = "true"
    if normalize not in (False, None, "true", "pred", "all"):
        raise ValueError(f"normalize must be False, True, 'true', 'pred' or 'all', got {normalize!r}")
    counts = m.astype(np.float64)
    if normalize:
        if normalize == "true":
            den = counts.sum(axis=1, keepdims=True)
        elif normalize == "pred":
            den = counts.sum(axis=0, keepdims=True)
        else:
            den = np.full((1, 1), counts.sum())
        values = np.divide(counts, den, out=np.zeros_like(counts), where=den != 0)
        fmt = "{:.2f}"
    else:
        values = counts
        fmt = "{:.0f}" if m.dtype.kind in "biu" or np.all(counts == np.round(counts)) else "{:.3g}"

    side = float(min(max(4.0, 0.55 * c + 2.5), 22.0))
    fig = _new_figure("plot_confusion_matrix", (side + 1.2, side), dpi)
    ax = fig.add_subplot(1, 1, 1)
    vmax = 1.0 if normalize else max(float(values.max()), 1.0)
    im = ax.imshow(values, cmap=cmap, interpolation="nearest", vmin=0.0, vmax=vmax)
    cbar = fig.colorbar(im, ax=ax)
    cbar.set_label("fraction" if normalize else "count")
    ax.set_xticks(np.arange(c))
    ax.set_yticks(np.arange(c))
    long_names = max(len(s) for s in names) > 3
    ax.set_xticklabels(names, rotation=45 if long_names else 0, ha="right" if long_names else "center")
    ax.set_yticklabels(names)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    ax.set_title(title)

    if annotate is None:
        annotate = c <= 30
    if annotate:
        rgba = im.cmap(im.norm(values))
        luminance = 0.2126 * rgba[..., 0] + 0.7152 * rgba[..., 1] + 0.0722 * rgba[..., 2]
        fontsize = 10 if c <= 10 else (8 if c <= 20 else 6)
        for i in range(c):  # cells, not samples: bounded by C*C <= 900
            for j in range(c):
                ax.text(j, i, fmt.format(values[i, j]), ha="center", va="center", fontsize=fontsize,
                        color="white" if luminance[i, j] < 0.5 else "black")
    return _finish(fig, path)


# --------------------------------------------------------------------------
# image grids
# --------------------------------------------------------------------------

def _names(class_names, c: int, argname: str) -> List[str]:
    if class_names is None:
        return [str(i) for i in range(c)]
    if isinstance(class_names, str):
        raise TypeError(f"{argname} must be a sequence of names, got a single str")
    names = [str(s) for s in class_names]
    if len(names) < c:
        raise ValueError(f"{argname} has {len(names)} names but {c} classes are needed")
    return names


def _as_images(x, argname: str = "x") -> np.ndarray:
    """(N, C, H, W) with C in {1, 3}, or (N, H, W) -> (N, C, H, W)."""
    a = np.asarray(x)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{argname} must be a numeric image array, got dtype {a.dtype}")
    if a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4 or a.shape[1] not in (1, 3):
        raise ValueError(
            f"{argname} must have shape (N, 1, H, W), (N, 3, H, W) or (N, H, W) (NCHW), got shape {a.shape}"
        )
    return a


def _display(img: np.ndarray) -> np.ndarray:
    """One (C, H, W) image -> (H, W) or (H, W, 3) floats in [0, 1].

    Floats already in [0, 1] are kept; integers in [0, 255] are divided by 255;
    anything else (e.g. standardised data) is min-max scaled per image. NaN
    becomes 0; the result is clipped to [0, 1].
    """
    a = img.astype(np.float64)
    finite = np.isfinite(a)
    if not finite.all():
        a = np.where(finite, a, 0.0)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 1.0)
    if img.dtype.kind in "biu" and lo >= 0 and hi <= 255:
        a = a / 255.0 if img.dtype.kind != "b" else a
    elif not (lo >= 0.0 and hi <= 1.0):
        a = (a - lo) / (hi - lo) if hi > lo else np.full_like(a, 0.5)
    a = np.clip(a, 0.0, 1.0)
    return a[0] if a.shape[0] == 1 else np.transpose(a, (1, 2, 0))


def _image_grid(func: str, images: np.ndarray, titles: Optional[Sequence[str]], ncols: Optional[int],
                suptitle: Optional[str], title_colors: Optional[Sequence[str]], dpi: int,
                empty_message: str):
    n = images.shape[0]
    if n == 0:
        fig = _new_figure(func, (5.0, 2.0), dpi)
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, empty_message, ha="center", va="center", fontsize=12, transform=ax.transAxes)
        ax.set_axis_off()
        if suptitle:
            fig.suptitle(suptitle)
        return fig
    if ncols is None:
        ncols = int(math.ceil(math.sqrt(n)))
    ncols = max(1, min(int(ncols), n))
    nrows = int(math.ceil(n / ncols))
    h, w = images.shape[2], images.shape[3]
    cell = 1.9
    aspect = w / h if h else 1.0
    fig = _new_figure(func, (max(3.0, cell * ncols * min(max(aspect, 0.5), 2.0)),
                             max(2.0, cell * nrows + (0.4 if suptitle else 0.0))), dpi)
    for i in range(n):  # one axes per drawn image (at most max_images)
        ax = fig.add_subplot(nrows, ncols, i + 1)
        img = _display(images[i])
        if img.ndim == 2:
            ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        else:
            ax.imshow(img, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if titles is not None:
            ax.set_title(titles[i], fontsize=8,
                         color=title_colors[i] if title_colors is not None else "black")
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def plot_images(x, labels=None, *, class_names: Optional[Sequence[str]] = None,
                titles: Optional[Sequence[str]] = None, max_images: Optional[int] = 25,
                ncols: Optional[int] = None, title: Optional[str] = None,
                path: Optional[PathLike] = None, dpi: int = 100):
    """Show a grid of images.

    Parameters
    ----------
    x : array, shape (N, C, H, W) with C = 1 or 3, or (N, H, W)
        Images in NCHW layout. One channel is drawn with a gray colormap;
        three channels are transposed to HWC and drawn as RGB. Values are
        mapped to [0, 1]: floats already in [0, 1] are kept, integers in
        [0, 255] are divided by 255, anything else is min-max scaled per image;
        the result is clipped to [0, 1].
    labels : sequence, optional
        One label per image, shown as its title; integer labels are mapped
        through ``class_names`` when given.
    class_names : sequence of str, optional
        Names for integer labels.
    titles : sequence of str, optional
        Explicit per-image titles (override ``labels``).
    max_images : int or None
        Draw at most this many images (the first ones); None draws all.
    ncols : int, optional
        Grid columns (default ``ceil(sqrt(n))``).
    title : str, optional
        Figure title.
    path : str or path-like, optional
        Where to save the PNG.

    Returns
    -------
    matplotlib.figure.Figure
        With one axes per drawn image (one axes with a message if ``x`` is empty).
    """
    _mpl("plot_images")
    imgs = _as_images(x)
    n = imgs.shape[0]
    if max_images is not None:
        if isinstance(max_images, bool) or int(max_images) < 1:
            raise ValueError(f"max_images must be a positive int or None, got {max_images!r}")
        n = min(n, int(max_images))
    imgs = imgs[:n]
    if titles is not None:
        titles = [str(t) for t in titles]
        if len(titles) < n:
            raise ValueError(f"titles has {len(titles)} entries but {n} images are drawn")
    elif labels is not None:
        lab = list(labels)
        if len(lab) < n:
            raise ValueError(f"labels has {len(lab)} entries but {n} images are drawn")
        titles = []
        for v in lab[:n]:
            if class_names is not None and isinstance(v, (int, np.integer)) and not isinstance(v, bool):
                titles.append(str(class_names[int(v)]))
            else:
                titles.append(str(v))
    fig = _image_grid("plot_images", imgs, titles, ncols, title, None, dpi, "no images")
    return _finish(fig, path)


def _softmax_if_needed(s: np.ndarray) -> np.ndarray:
    """Rows that already look like probabilities are kept; otherwise softmax is applied."""
    s = s.astype(np.float64)
    if s.size and np.all(s >= 0) and np.allclose(s.sum(axis=1), 1.0, atol=1e-3):
        return s
    z = s - np.max(s, axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def plot_misclassified(x, y_true, y_pred, class_names: Optional[Sequence[str]] = None,
                       max_images: int = 25, path: Optional[PathLike] = None, scores=None,
                       *, ncols: Optional[int] = None, dpi: int = 100):
    """Grid of the images a classifier got wrong, titled ``"true→pred"``.

    Parameters
    ----------
    x : array, shape (N, C, H, W) with C = 1 or 3, or (N, H, W)
        The images (see :func:`plot_images` for how values are displayed).
    y_true : array of int, shape (N,)
        True labels.
    y_pred : array, shape (N,) labels or (N, K) scores
        Predicted labels; scores are reduced with argmax and, if ``scores`` is
        not given, also used as ``scores``.
    class_names : sequence of str, optional
        Names used in the titles instead of label numbers.
    max_images : int
        Draw at most this many mistakes.
    path : str or path-like, optional
        Where to save the PNG.
    scores : array, shape (N, K), optional
        Per-class scores. When given, each title also shows the confidence of
        the wrong prediction (``"3→5 (87%)"``; rows that are not already
        probabilities are softmaxed) and the most confident mistakes are shown
        first. Without scores, mistakes are shown in dataset order.

    If nothing is misclassified the figure has a single axes saying so.

    Returns
    -------
    matplotlib.figure.Figure
        With one axes per drawn mistake.
    """
    _mpl("plot_misclassified")
    from .metrics import _check_labels, _check_same_length, _check_scores, _pred_labels

    imgs = _as_images(x)
    if isinstance(max_images, bool) or int(max_images) < 1:
        raise ValueError(f"max_images must be a positive int, got {max_images!r}")
    pred_arr = np.asarray(y_pred)
    p, k = _pred_labels(pred_arr, "y_pred", None)
    if scores is None and pred_arr.ndim == 2:
        scores = pred_arr
    if scores is not None:
        s = _check_scores(scores, "scores")
        _check_same_length(p, s, "scores")
        k = s.shape[1] if k is None else k
        if s.shape[1] != k:
            raise ValueError(f"scores has {s.shape[1]} columns but y_pred has scores for {k} classes")
    t = _check_labels(y_true, "y_true", k)
    _check_same_length(t, p, "y_pred")
    if k is not None:
        p = _check_labels(p, "y_pred", k)
    if imgs.shape[0] != t.shape[0]:
        raise ValueError(
            f"x has {imgs.shape[0]} images (shape {imgs.shape}) but y_true has {t.shape[0]} labels"
        )
    if k is None:
        k = int(max(t.max(initial=-1), p.max(initial=-1))) + 1
    names = _names(class_names, k, "class_names")

    wrong = np.flatnonzero(t != p)
    n_total, n_wrong = t.shape[0], wrong.size
    conf = None
    if scores is not None and n_wrong:
        probs = _softmax_if_needed(s)
        conf = probs[wrong, p[wrong]]
        order = np.argsort(-conf, kind="stable")
        wrong, conf = wrong[order], conf[order]
    shown = wrong[: int(max_images)]
    titles = [f"{names[a]}→{names[b]}" for a, b in zip(t[shown].tolist(), p[shown].tolist())]
    if conf is not None:
        titles = [f"{tt} ({c:.0%})" for tt, c in zip(titles, conf[: shown.size].tolist())]
    if n_wrong:
        suptitle = f"{n_wrong} of {n_total} misclassified (true→pred), showing {shown.size}"
    else:
        suptitle = None
    fig = _image_grid("plot_misclassified", imgs[shown], titles, ncols, suptitle,
                      ["tab:red"] * shown.size, dpi,
                      f"No misclassified images ({n_total} of {n_total} correct)")
    return _finish(fig, path)


# --------------------------------------------------------------------------
# bar charts
# --------------------------------------------------------------------------

def _references(reference) -> List[Tuple[str, float]]:
    if reference is None:
        return []
    if isinstance(reference, Mapping):
        return [(str(k), float(v)) for k, v in reference.items()]
    if isinstance(reference, (tuple, list)) and len(reference) == 2:
        a, b = reference
        if isinstance(a, str):
            return [(a, float(b))]
        if isinstance(b, str):
            return [(b, float(a))]
    if isinstance(reference, (int, float, np.number)) and not isinstance(reference, bool):
        return [("reference", float(reference))]
    raise TypeError(
        "reference must be a number, a (label, value) pair or a dict {label: value}, got "
        f"{reference!r}"
    )


def plot_bars(labels: Sequence[str], series: Mapping[str, Sequence[float]], path: Optional[PathLike] = None,
              ylabel: str = "GFLOP/s", title: Optional[str] = None, reference=None,
              *, annotate: Optional[bool] = None, log: bool = False, dpi: int = 100):
    """Grouped bar chart, e.g. GFLOP/s of several implementations per benchmark case.

    Parameters
    ----------
    labels : sequence of str
        One label per group (x axis), e.g. layer shapes.
    series : dict name -> sequence of numbers
        One bar per group for each series (e.g. ``{'pyconv': [...], 'torch': [...]}``);
        each sequence has ``len(labels)`` values. ``None``/NaN leaves a gap.
    path : str or path-like, optional
        Where to save the PNG.
    ylabel, title : str
        Axis label and title.
    reference : number, (label, value), or dict {label: value}, optional
        Horizontal reference line(s), e.g. ``('peak', 1843.2)`` for machine peak,
        drawn dashed and named in the legend.
    annotate : bool, optional
        Print each bar's value above it (default: when there are <= 40 bars).
    log : bool
        Log-scale y axis.

    Returns
    -------
    matplotlib.figure.Figure
        With one axes.
    """
    _mpl("plot_bars")
    if isinstance(labels, str):
        raise TypeError("labels must be a sequence of group labels, got a single str")
    labels = [str(s) for s in labels]
    if not labels:
        raise ValueError("labels is empty: nothing to plot")
    if not isinstance(series, Mapping) or not series:
        raise ValueError("series must be a non-empty dict {name: values}")
    data: Dict[str, np.ndarray] = {}
    for name, vals in series.items():
        try:
            arr = np.array([np.nan if v is None else v for v in vals], dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"series[{name!r}] must be a sequence of numbers") from None
        if arr.shape != (len(labels),):
            raise ValueError(
                f"series[{name!r}] has {arr.size} values (shape {arr.shape}) but there are "
                f"{len(labels)} labels"
            )
        data[str(name)] = arr
    refs = _references(reference)

    ng, ns = len(labels), len(data)
    fig = _new_figure("plot_bars", (min(max(6.0, 0.45 * ng * ns + 2.0), 24.0), 4.5), dpi)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(ng, dtype=np.float64)
    width = 0.8 / ns
    if annotate is None:
        annotate = ng * ns <= 40
    for i, (name, arr) in enumerate(data.items()):
        bars = ax.bar(x + (i - (ns - 1) / 2) * width, np.nan_to_num(arr, nan=0.0), width,
                      label=name)
        for b, v in zip(bars, arr.tolist()):  # bars, not samples
            if not np.isfinite(v):
                b.set_visible(False)
        if annotate:
            ax.bar_label(bars, labels=["" if not np.isfinite(v) else f"{v:.3g}" for v in arr.tolist()],
                         fontsize=7, padding=1)
    colors = ["tab:red", "tab:gray", "tab:purple", "tab:brown"]
    for j, (name, value) in enumerate(refs):
        ax.axhline(value, color=colors[j % len(colors)], linestyle="--", linewidth=1.2,
                   label=f"{name} ({value:.4g})")
    ax.set_xticks(x)
    rotate = ng > 6 or max(len(s) for s in labels) > 10
    ax.set_xticklabels(labels, rotation=30 if rotate else 0, ha="right" if rotate else "center")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if log:
        ax.set_yscale("log")
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(fontsize="small")
    return _finish(fig, path)
