"""Tests for pyconv.plot: PNG output, figure contents, atomic saving, optional matplotlib."""
from __future__ import annotations

import io
import os
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from pyconv import plot as P  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path, fig=None):
    """The file is a real PNG (> 1000 bytes); if fig is given, its pixel size matches the figure."""
    with open(path, "rb") as f:
        data = f.read()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 1000
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    if fig is not None:
        w_in, h_in = fig.get_size_inches()
        assert (width, height) == (round(w_in * fig.dpi), round(h_in * fig.dpi))
    return width, height


def _dir_listing(d):
    return sorted(os.listdir(d))


HISTORY = {
    "loss": [2.0, 1.5, 1.2, 1.1, 1.15],
    "val_loss": [2.1, 1.7, 1.3, 1.35, 1.4],
    "accuracy": [0.3, 0.5, 0.6, 0.7, 0.72],
    "val_accuracy": [0.3, 0.45, 0.55, 0.6, 0.58],
    "lr": [0.1, 0.1, 0.01, 0.01, 0.001],
}


# --------------------------------------------------------------------------
# plot_history
# --------------------------------------------------------------------------

def test_plot_history_dict(tmp_path):
    path = tmp_path / "history.png"
    fig = P.plot_history(HISTORY, path=path)
    assert isinstance(fig, Figure)
    assert isinstance(fig.canvas, FigureCanvasAgg)
    _assert_png(path, fig)
    assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy", "lr"]
    loss_ax, acc_ax, lr_ax = fig.axes
    # train + val curves, epochs from 1
    labels = [ln.get_label() for ln in loss_ax.get_lines()]
    assert labels[:2] == ["train", "val"]
    np.testing.assert_array_equal(loss_ax.get_lines()[0].get_xdata(), [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(loss_ax.get_lines()[1].get_ydata(), HISTORY["val_loss"])
    # best validation epoch (3) is marked
    best = [ln for ln in loss_ax.get_lines() if ln.get_label().startswith("best val")]
    assert len(best) == 1 and list(best[0].get_xdata()) == [3] and "epoch 3" in best[0].get_label()
    assert loss_ax.get_legend() is not None and acc_ax.get_legend() is not None
    assert loss_ax.get_xlabel() == "epoch"
    assert lr_ax.get_yscale() == "log"
    assert [ln.get_label() for ln in lr_ax.get_lines()] == ["train"]  # no val_lr


class _HistoryObject:
    def __init__(self, h):
        self.history = h


def test_plot_history_object_and_metric_selection(tmp_path):
    fig = P.plot_history(_HistoryObject(HISTORY), metrics=["accuracy"], path=tmp_path / "a.png")
    assert len(fig.axes) == 1 and fig.axes[0].get_title() == "accuracy"
    _assert_png(tmp_path / "a.png", fig)
    # loss goes first even if it is not first in the dict; custom metrics and val-only keys
    h = {"f1": [0.1, 0.2], "val_top5": [0.5, 0.6], "loss": [1.0, None], "epoch": [1, 2]}
    fig = P.plot_history(h)
    assert [ax.get_title() for ax in fig.axes] == ["loss", "f1", "top5"]
    assert [ln.get_label() for ln in fig.axes[2].get_lines()] == ["val"]
    assert np.isnan(fig.axes[0].get_lines()[0].get_ydata()[1])  # None is a gap
    with pytest.raises(ValueError, match=r"metrics \['auc'\] are not in the history"):
        P.plot_history(HISTORY, metrics=["auc"])
    with pytest.raises(ValueError, match="history is empty"):
        P.plot_history({})
    with pytest.raises(TypeError, match="history must be a dict"):
        P.plot_history([1, 2, 3])


# --------------------------------------------------------------------------
# plot_confusion_matrix
# --------------------------------------------------------------------------

CM = np.array([[50, 2, 0], [5, 30, 5], [0, 0, 8]])


def test_plot_confusion_matrix_counts(tmp_path):
    path = tmp_path / "cm.png"
    fig = P.plot_confusion_matrix(CM, class_names=["cat", "dog", "bird"], path=path, title="CM test")
    _assert_png(path, fig)
    assert len(fig.axes) == 2  # matrix + colorbar
    ax = fig.axes[0]
    assert ax.get_xlabel() == "Predicted" and ax.get_ylabel() == "True"
    assert ax.get_title() == "CM test"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cat", "dog", "bird"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["cat", "dog", "bird"]
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t for t in ax.texts}
    assert len(texts) == 9
    for (i, j), t in texts.items():
        assert t.get_text() == str(CM[i, j])
    # contrast: dark (largest) cell gets white text, empty cell black
    assert matplotlib.colors.to_hex(texts[(0, 0)].get_color()) == "#ffffff"
    assert matplotlib.colors.to_hex(texts[(0, 2)].get_color()) == "#000000"


def test_plot_confusion_matrix_normalized(tmp_path):
    fig = P.plot_confusion_matrix(CM, normalize=True, path=tmp_path / "n.png")
    _assert_png(tmp_path / "n.png", fig)
    ax = fig.axes[0]
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert texts[(1, 1)] == "0.75" and texts[(2, 2)] == "1.00" and texts[(0, 2)] == "0.00"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2"]
    col = P.plot_confusion_matrix(CM, normalize="pred").axes[0]
    assert {t.get_text() for t in col.texts if t.get_position() == (0, 1)} == {f"{5 / 55:.2f}"}


def test_plot_confusion_matrix_errors_and_big():
    with pytest.raises(ValueError, match=r"square 2-D array.*shape \(2, 3\)"):
        P.plot_confusion_matrix(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="non-negative"):
        P.plot_confusion_matrix(np.array([[1, -1], [0, 1]]))
    with pytest.raises(ValueError, match="normalize must be"):
        P.plot_confusion_matrix(CM, normalize="rows")
    big = P.plot_confusion_matrix(np.eye(40, dtype=int))
    assert len(big.axes[0].texts) == 0  # too many cells to annotate by default


# --------------------------------------------------------------------------
# plot_images / plot_misclassified
# --------------------------------------------------------------------------

def test_plot_images_gray_and_rgb(tmp_path):
    rng = np.random.default_rng(0)
    gray = (rng.random((7, 1, 12, 12)) * 255).astype(np.uint8)
    fig = P.plot_images(gray, labels=[0, 1, 2, 0, 1, 2, 0], class_names=["a", "b", "c"],
                        path=tmp_path / "g.png")
    _assert_png(tmp_path / "g.png", fig)
    assert len(fig.axes) == 7
    assert [ax.get_title() for ax in fig.axes] == ["a", "b", "c", "a", "b", "c", "a"]
    im = fig.axes[0].images[0]
    assert im.get_cmap().name == "gray"
    np.testing.assert_allclose(im.get_array(), gray[0, 0] / 255.0)

    rgb = rng.normal(size=(3, 3, 10, 8)) * 4.0  # standardised data: min-max scaled per image
    fig = P.plot_images(rgb, max_images=2, path=tmp_path / "rgb.png")
    _assert_png(tmp_path / "rgb.png", fig)
    assert len(fig.axes) == 2
    arr = np.asarray(fig.axes[0].images[0].get_array())
    assert arr.shape == (10, 8, 3)  # CHW -> HWC
    assert arr.min() == pytest.approx(0.0) and arr.max() == pytest.approx(1.0)
    np.testing.assert_allclose(arr[..., 1], (rgb[0, 1] - rgb[0].min()) / (rgb[0].max() - rgb[0].min()))


def test_plot_images_errors_and_empty():
    with pytest.raises(ValueError, match=r"shape \(2, 2, 4, 4\)"):
        P.plot_images(np.zeros((2, 2, 4, 4)))
    fig = P.plot_images(np.zeros((0, 1, 4, 4)))
    assert len(fig.axes) == 1 and "no images" in fig.axes[0].texts[0].get_text()


def _mis_data():
    rng = np.random.default_rng(1)
    x = rng.random((30, 3, 8, 8))
    y_true = np.arange(30) % 3
    y_pred = y_true.copy()
    wrong = np.array([2, 5, 11, 17, 23])
    y_pred[wrong] = (y_true[wrong] + 1) % 3
    return x, y_true, y_pred, wrong


def test_plot_misclassified_titles(tmp_path):
    x, y_true, y_pred, wrong = _mis_data()
    names = ["cat", "dog", "bird"]
    fig = P.plot_misclassified(x, y_true, y_pred, class_names=names, path=tmp_path / "m.png")
    _assert_png(tmp_path / "m.png", fig)
    assert len(fig.axes) == len(wrong)
    expected = [f"{names[y_true[i]]}→{names[y_pred[i]]}" for i in wrong]  # dataset order
    assert [ax.get_title() for ax in fig.axes] == expected
    assert "5 of 30 misclassified" in fig._suptitle.get_text()
    assert np.asarray(fig.axes[0].images[0].get_array()).shape == (8, 8, 3)
    fig = P.plot_misclassified(x, y_true, y_pred, max_images=2)
    assert len(fig.axes) == 2


def test_plot_misclassified_with_scores(tmp_path):
    x, y_true, y_pred, wrong = _mis_data()
    probs = np.full((30, 3), 0.1)
    probs[np.arange(30), y_pred] = 0.8
    probs[23] = 0.0
    probs[23, y_pred[23]] = 1.0  # most confident mistake
    fig = P.plot_misclassified(x[:, :1], y_true, y_pred, scores=probs, path=tmp_path / "s.png")
    _assert_png(tmp_path / "s.png", fig)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == f"{y_true[23]}→{y_pred[23]} (100%)"
    assert all(t.endswith("(80%)") for t in titles[1:])
    assert fig.axes[0].images[0].get_cmap().name == "gray"
    # logits given as y_pred: argmax + softmax confidence
    logits = np.log(probs + 1e-12)
    fig2 = P.plot_misclassified(x, y_true, logits)
    assert [ax.get_title() for ax in fig2.axes] == titles


def test_plot_misclassified_none_wrong(tmp_path):
    x, y_true, _, _ = _mis_data()
    fig = P.plot_misclassified(x, y_true, y_true, path=tmp_path / "none.png")
    _assert_png(tmp_path / "none.png", fig)
    assert len(fig.axes) == 1
    assert "No misclassified images (30 of 30 correct)" in fig.axes[0].texts[0].get_text()


def test_plot_misclassified_errors():
    x, y_true, y_pred, _ = _mis_data()
    with pytest.raises(ValueError, match=r"x has 29 images .* but y_true has 30"):
        P.plot_misclassified(x[:29], y_true, y_pred)
    with pytest.raises(ValueError, match=r"y_true has 30 .*y_pred has 29"):
        P.plot_misclassified(x, y_true, y_pred[:29])
    with pytest.raises(ValueError, match=r"y_pred contains label 2 but num_classes=2"):
        P.plot_misclassified(x, y_true % 2, y_pred, scores=np.zeros((30, 2)))


# --------------------------------------------------------------------------
# plot_bars
# --------------------------------------------------------------------------

def test_plot_bars(tmp_path):
    labels = ["3x3 s1", "1x1", "5x5 s2", "7x7"]
    series = {"pyconv": [100.0, 200.0, 150.0, None], "torch": [90.0, 210.0, 120.0, 80.0]}
    path = tmp_path / "bars.png"
    fig = P.plot_bars(labels, series, path=path, title="conv2d", reference=("peak", 400.0))
    _assert_png(path, fig)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert ax.get_ylabel() == "GFLOP/s" and ax.get_title() == "conv2d"
    assert [t.get_text() for t in ax.get_xticklabels()] == labels
    bars = ax.patches
    assert len(bars) == 8
    visible = [b for b in bars if b.get_visible()]
    assert len(visible) == 7  # the None value is not drawn
    assert sorted(b.get_height() for b in visible) == [80, 90, 100, 120, 150, 200, 210]
    # bars of one group sit side by side around the group position
    assert bars[0].get_x() < bars[4].get_x() < 0.5
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "pyconv" in legend and "torch" in legend and "peak (400)" in legend
    ref = [ln for ln in ax.get_lines() if ln.get_label().startswith("peak")]
    assert len(ref) == 1 and list(ref[0].get_ydata()) == [400.0, 400.0]


def test_plot_bars_reference_forms_and_errors():
    ax = P.plot_bars(["a"], {"s": [1.0]}, reference=5).axes[0]
    assert [ln.get_label() for ln in ax.get_lines()] == ["reference (5)"]
    ax = P.plot_bars(["a"], {"s": [1.0]}, reference={"fp32 peak": 9.0, "mem bound": 3.0}).axes[0]
    assert [ln.get_label() for ln in ax.get_lines()] == ["fp32 peak (9)", "mem bound (3)"]
    with pytest.raises(ValueError, match=r"series\['s'\] has 1 values .* but there are 2 labels"):
        P.plot_bars(["a", "b"], {"s": [1.0]})
    with pytest.raises(ValueError, match="series must be a non-empty dict"):
        P.plot_bars(["a"], {})
    with pytest.raises(TypeError, match="reference must be"):
        P.plot_bars(["a"], {"s": [1.0]}, reference="peak")


# --------------------------------------------------------------------------
# atomic saving
# --------------------------------------------------------------------------

def test_save_creates_parent_dirs_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "a" / "b" / "out.png"
    P.plot_bars(["x"], {"s": [1.0]}, path=path)
    _assert_png(path)
    assert _dir_listing(path.parent) == ["out.png"]
    # overwrite in place, still nothing else in the directory
    P.plot_history(HISTORY, path=str(path))
    assert _dir_listing(path.parent) == ["out.png"]
    w, h = _assert_png(path)
    assert (w, h) == (1100, 720)  # the history figure (2x2 grid at 100 dpi) replaced the bars


def test_failed_render_does_not_clobber_existing_file(tmp_path, monkeypatch):
    path = tmp_path / "keep.png"
    path.write_bytes(b"old contents")

    real_print_png = FigureCanvasAgg.print_png

    def boom(self, filename_or_obj, **kwargs):
        # matplotlib may first render into a BytesIO (a dry run for the layout): let that pass.
        # Writing the real output fails half-way, as a disk or render error would.
        if isinstance(filename_or_obj, io.BytesIO):
            keep = {k: v for k, v in kwargs.items() if k in ("metadata", "pil_kwargs")}
            return real_print_png(self, filename_or_obj, **keep)
        if isinstance(filename_or_obj, (str, os.PathLike)):
            with open(filename_or_obj, "wb") as f:
                f.write(PNG_MAGIC + b"partial")
        else:
            filename_or_obj.write(PNG_MAGIC + b"partial")
        raise RuntimeError("render failed")

    monkeypatch.setattr(FigureCanvasAgg, "print_png", boom)
    for call in (
        lambda: P.plot_bars(["a"], {"s": [1.0]}, path=path),
        lambda: P.plot_history(HISTORY, path=path),
        lambda: P.plot_confusion_matrix(CM, path=path),
    ):
        with pytest.raises(RuntimeError, match="render failed"):
            call()
        assert path.read_bytes() == b"old contents"
        assert _dir_listing(tmp_path) == ["keep.png"]  # temp file removed


def test_saved_file_permissions(tmp_path):
    old = os.umask(0o022)
    os.umask(old)
    P.plot_bars(["a"], {"s": [1.0]}, path=tmp_path / "new.png")
    assert stat.S_IMODE(os.stat(tmp_path / "new.png").st_mode) == 0o666 & ~old
    existing = tmp_path / "existing.png"
    existing.write_bytes(b"x")
    os.chmod(existing, 0o640)
    P.plot_bars(["a"], {"s": [1.0]}, path=existing)
    assert stat.S_IMODE(os.stat(existing).st_mode) == 0o640
    _assert_png(existing)


def test_plots_from_threads(tmp_path):
    errors = []

    def work(i):
        try:
            P.plot_bars(["a", "b"], {"s": [i, 1.0]}, path=tmp_path / f"b{i}.png")
            P.plot_confusion_matrix(CM + i, path=tmp_path / f"c{i}.png")
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    files = _dir_listing(tmp_path)
    assert len(files) == 6
    for f in files:
        _assert_png(tmp_path / f)


# --------------------------------------------------------------------------
# matplotlib is optional; pyplot is never used
# --------------------------------------------------------------------------

@pytest.mark.parametrize("call", [
    lambda: P.plot_history(HISTORY),
    lambda: P.plot_confusion_matrix(CM),
    lambda: P.plot_images(np.zeros((1, 1, 4, 4))),
    lambda: P.plot_misclassified(np.zeros((1, 1, 4, 4)), [0], [0]),
    lambda: P.plot_bars(["a"], {"s": [1.0]}),
])
def test_missing_matplotlib_message(monkeypatch, call):
    for mod in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, mod, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"needs matplotlib: pip install 'pyconv-cnn\[plot\]'"):
        call()


def _run_python(code):
    # cwd outside the checkout: `python -c` puts the cwd first on sys.path, and the
    # source tree's pyconv has no compiled _C
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120, cwd=tempfile.gettempdir())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_module_imports_without_matplotlib_subprocess():
    out = _run_python("""
        import sys
        sys.modules["matplotlib"] = None          # simulate matplotlib not installed
        import pyconv.plot as P                  # the module itself must import fine
        try:
            P.plot_bars(["a"], {"s": [1.0]})
        except ImportError as e:
            print("ERR", e)
    """)
    assert "ERR pyconv.plot.plot_bars needs matplotlib: pip install 'pyconv-cnn[plot]'" in out


def test_never_touches_pyplot_subprocess(tmp_path):
    out = _run_python(f"""
        import sys
        import numpy as np
        import pyconv.plot as P
        d = {str(tmp_path)!r}
        P.plot_history({{"loss": [1.0, 0.5], "val_loss": [1.1, 0.7]}}, path=d + "/h.png")
        P.plot_confusion_matrix(np.eye(3, dtype=int), path=d + "/c.png")
        P.plot_misclassified(np.zeros((2, 1, 4, 4)), [0, 1], [1, 1], path=d + "/m.png")
        P.plot_bars(["a"], {{"s": [1.0]}}, path=d + "/b.png")
        print("pyplot loaded:", "matplotlib.pyplot" in sys.modules)
    """)
    assert "pyplot loaded: False" in out
    assert _dir_listing(tmp_path) == ["b.png", "c.png", "h.png", "m.png"]
