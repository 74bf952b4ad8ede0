"""Long runs: no memory growth over repeated calls, no NaN over thousands of training steps."""
import os

import numpy as np
import pytest

import pyconv
from pyconv import nn, optim, train


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _calls():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 9, 9)).astype(np.float32)
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    y = pyconv.conv2d(x, w, b, padding=1)
    p, idx = pyconv.max_pool2d(x, 2, return_indices=True)
    logits = rng.standard_normal((8, 5)).astype(np.float32)
    t = rng.integers(0, 5, 8)
    rm, rv = np.zeros(4, np.float32), np.ones(4, np.float32)
    a = rng.standard_normal((7, 9)).astype(np.float32)
    return [
        lambda: pyconv.conv2d(x, w, b, padding=1),
        lambda: pyconv.conv2d_backward(y, x, w, padding=1),
        lambda: pyconv.conv2d(x, w, stride=2, dilation=2, padding=2),
        lambda: pyconv.conv2d(x, np.ones((4, 1, 3, 3), np.float32), groups=4),
        lambda: pyconv.max_pool2d(x, 2, return_indices=True),
        lambda: pyconv.max_pool2d_backward(p, idx, x.shape),
        lambda: pyconv.avg_pool2d_backward(pyconv.avg_pool2d(x, 3, 2, 1), x.shape, 3, 2, 1),
        lambda: pyconv.adaptive_avg_pool2d_backward(pyconv.adaptive_avg_pool2d(x, 2), x.shape),
        lambda: pyconv.gelu_backward(x, pyconv.gelu(x)),
        lambda: pyconv.sigmoid_backward(x, pyconv.sigmoid(x)),
        lambda: pyconv.softmax_backward(logits, pyconv.softmax(logits)),
        lambda: pyconv.cross_entropy_backward(1.0, logits, t),
        lambda: pyconv.cross_entropy(logits, t, label_smoothing=0.1),
        lambda: pyconv.batch_norm_backward(x, x, None, *pyconv.batch_norm(
            x, rm, rv, training=True, return_stats=True)[1:]),
        lambda: pyconv.pad_backward(pyconv.pad(x, (1, 2, 0, 1), "reflect"), x.shape, (1, 2, 0, 1), "reflect"),
        lambda: pyconv.linear_backward(pyconv.linear(a, a), a, a),
        lambda: pyconv.gemm(a, a.T),
        lambda: pyconv.maxout_backward(pyconv.maxout(x, 2), x, 2),
    ]


def test_rss_flat_over_10000_calls_of_each_op():
    if os.environ.get("PYCONV_SANITIZED"):
        pytest.skip("AddressSanitizer's quarantine keeps freed memory: RSS says nothing there")
    calls = _calls()
    for fn in calls:  # warm-up: scratch buffers, thread pool, NumPy caches
        for _ in range(200):
            fn()
    before = _rss_bytes()
    for fn in calls:
        for _ in range(10_000):
            fn()
    growth = _rss_bytes() - before
    # a leak of even 100 bytes per call would be 18 MB here
    assert growth < 8 << 20, f"RSS grew by {growth / 2**20:.1f} MiB over {len(calls)} x 10,000 calls"


def test_thousands_of_steps_stay_finite():
    sk = pytest.importorskip("sklearn.datasets")
    d = sk.load_digits()
    x = (d.images[:, None] / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    pyconv.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Dropout(0.1), nn.Linear(8 * 16, 10))
    opt = optim.Adam(model.parameters(), 1e-2)
    losses = []
    cb = train.LambdaCallback(on_batch_end=lambda t, b, logs: losses.append(logs["loss"]))
    hist = train.fit(model, nn.CrossEntropyLoss(), opt, x, y, epochs=50, batch_size=32,
                     callbacks=[cb], verbose=0, seed=0, metrics=())
    assert len(losses) == 50 * 57  # 2,850 steps, each checked for a finite loss by fit
    assert np.isfinite(losses).all()
    assert all(np.isfinite(p.data).all() for p in model.parameters())
    assert hist.history["loss"][-1] < 0.05
