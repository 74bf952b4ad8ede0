"""pyconv.train: fit / evaluate / predict, callbacks, exact resume, search."""
import csv
import math

import numpy as np
import pytest

import pyconv
from pyconv import nn, optim, train


@pytest.fixture(scope="module")
def digits():
    sk = pytest.importorskip("sklearn.datasets")
    d = sk.load_digits()
    x = (d.images[:, None] / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    x, y = x[order], y[order]
    return x[:600], y[:600], x[600:800], y[600:800]


def _net(seed=0, dropout=0.0):
    pyconv.manual_seed(seed)
    layers = [nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
              nn.Flatten()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(8 * 16, 10))
    return nn.Sequential(*layers)


def _weights(m):
    return {k: v.copy() for k, v in m.state_dict().items()}


def _same(a, b):
    assert list(a) == list(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_fit_learns_and_reports(digits):
    x, y, xv, yv = digits
    m = _net()
    h = train.fit(m, nn.CrossEntropyLoss(), optim.Adam(m.parameters(), 3e-3), x, y, epochs=4,
                  batch_size=32, validation_data=(xv, yv), metrics=("accuracy", "f1"),
                  verbose=0, seed=0)
    assert isinstance(h, train.History) and h.epoch == [1, 2, 3, 4]
    for k in ("loss", "accuracy", "f1", "val_loss", "val_accuracy", "val_f1", "lr", "time"):
        assert len(h.history[k]) == 4, k
    assert h.history["loss"][-1] < h.history["loss"][0]
    res = train.evaluate(m, nn.CrossEntropyLoss(), xv, yv, metrics=("accuracy", "top3"))
    assert res["accuracy"] > 0.85 and res["top3"] >= res["accuracy"]
    assert math.isclose(res["loss"], h.history["val_loss"][-1], rel_tol=1e-5)
    assert math.isclose(res["accuracy"], h.history["val_accuracy"][-1])
    assert not m.training  # fit leaves the model in eval mode
    p = train.predict(m, xv, batch_size=64)
    assert p.shape == (len(yv), 10) and p.dtype == np.float32
    assert np.mean(p.argmax(1) == yv) == res["accuracy"]


def test_verbose_levels(digits, capsys):
    x, y, _, _ = digits
    m = _net()
    train.fit(m, nn.CrossEntropyLoss(), optim.SGD(m.parameters(), 0.1), x[:64], y[:64],
              epochs=2, batch_size=32, verbose=0)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    train.fit(m, nn.CrossEntropyLoss(), optim.SGD(m.parameters(), 0.1), x[:64], y[:64],
              epochs=2, batch_size=32, verbose=2)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("Epoch 1/2") and "accuracy" in lines[0]


def test_same_seed_is_bit_identical(digits):
    x, y, xv, yv = digits
    runs = []
    for _ in range(2):
        m = _net(seed=3, dropout=0.3)
        h = train.fit(m, nn.CrossEntropyLoss(), optim.SGD(m.parameters(), 0.05, momentum=0.9),
                      x, y, epochs=2, batch_size=50, validation_data=(xv, yv), verbose=0, seed=11)
        runs.append((_weights(m), h.history["loss"]))
    _same(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]


def test_non_finite_loss_names_epoch_and_batch(digits):
    x, y, _, _ = digits
    x = x[:100].copy()
    x[70, 0, 3, 3] = np.nan  # batch 3 of 4 with batch_size 32, no shuffling
    m = _net()
    with pytest.raises(train.NonFiniteLossError, match=r"epoch 1, batch 3 of 4"):
        train.fit(m, nn.CrossEntropyLoss(), optim.SGD(m.parameters(), 0.1), x, y[:100],
                  epochs=2, batch_size=32, shuffle=False, verbose=0)
    assert issubclass(train.NonFiniteLossError, FloatingPointError)


def test_early_stopping_restores_best(digits, tmp_path):
    x, y, xv, yv = digits
    m = _net()
    es = train.EarlyStopping(monitor="val_loss", patience=1)
    ck = train.ModelCheckpoint(str(tmp_path / "w{epoch}.npz"), weights_only=True)
    # a huge learning rate after a good start makes validation loss worse
    sched = optim.MultiStepLR(opt := optim.SGD(m.parameters(), 0.05, momentum=0.9), [2], gamma=40.0)
    h = train.fit(m, nn.CrossEntropyLoss(), opt, x, y, epochs=12, batch_size=32,
                  validation_data=(xv, yv), callbacks=[es, ck], scheduler=sched, verbose=0, seed=0)
    best_epoch, best = h.best("val_loss")
    assert es.best_epoch == best_epoch and es.best == pytest.approx(best)
    assert h.stopped_epoch == es.stopped_epoch and len(h) < 12
    assert len(h) - best_epoch == 2  # patience 1: two epochs without improvement
    _same(m.state_dict(), pyconv.load(tmp_path / f"w{best_epoch}.npz"))


def test_checkpoint_save_best_only(digits, tmp_path):
    x, y, xv, yv = digits
    m = _net()
    path = tmp_path / "best.npz"
    saved = []
    ck = train.ModelCheckpoint(str(path), monitor="val_accuracy", save_best_only=True)
    spy = train.LambdaCallback(on_epoch_saved=lambda t, e, logs: saved.append(
        (e, ck.best_epoch == e)))
    h = train.fit(m, nn.CrossEntropyLoss(), optim.Adam(m.parameters(), 2e-3), x, y, epochs=4,
                  batch_size=64, validation_data=(xv, yv), callbacks=[ck, spy], verbose=0, seed=1)
    best_epoch, best = h.best("val_accuracy")
    assert ck.best_epoch == best_epoch
    ckpt = pyconv.load(path)
    assert ckpt["epoch"] == best_epoch
    assert ckpt["history"]["history"]["val_accuracy"][-1] == pytest.approx(best)
    m2 = _net(seed=5)
    m2.load_state_dict(ckpt["model"])
    m2.eval()
    acc = train.evaluate(m2, None, xv, yv)["accuracy"]
    assert acc == pytest.approx(best)


class _Flip:
    """A tiny seeded augmentation with get_state / set_state, as pyconv.data's."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def __call__(self, xb):
        flip = self.rng.random(len(xb)) < 0.5
        out = xb.copy()
        out[flip] = out[flip][..., ::-1]
        return out + self.rng.normal(0, 0.01, size=xb.shape).astype(xb.dtype)

    def get_state(self):
        return self.rng.bit_generator.state

    def set_state(self, s):
        self.rng.bit_generator.state = s


def _resumable_run(x, y, xv, yv, tmp_path, epochs, resume=None, tag="a"):
    m = _net(seed=2, dropout=0.2)
    opt = optim.Adam(m.parameters(), 2e-3, weight_decay=1e-4)
    sched = optim.StepLR(opt, step_size=2, gamma=0.5)
    cbs = [train.EarlyStopping(patience=50), train.LearningRateScheduler(sched),
           train.ModelCheckpoint(str(tmp_path / (tag + "{epoch}.npz"))),
           train.CSVLogger(str(tmp_path / (tag + ".csv")))]
    h = train.fit(m, nn.CrossEntropyLoss(), opt, x, y, epochs=epochs, batch_size=40,
                  validation_data=(xv, yv), callbacks=cbs, verbose=0, seed=7, augment=_Flip(9),
                  resume_from=resume)
    return m, opt, h


def test_resume_reproduces_uninterrupted_run(digits, tmp_path):
    x, y, xv, yv = digits
    x, y = x[:300], y[:300]
    full_m, full_opt, full_h = _resumable_run(x, y, xv, yv, tmp_path, 5, tag="full")
    # continue from the checkpoint written after epoch 2, with fresh objects
    res_m, res_opt, res_h = _resumable_run(x, y, xv, yv, tmp_path, 5,
                                           resume=str(tmp_path / "full2.npz"), tag="res")
    _same(full_m.state_dict(), res_m.state_dict())
    assert res_h.epoch == [1, 2, 3, 4, 5]
    for k in ("loss", "val_loss", "accuracy", "lr"):
        assert res_h.history[k] == full_h.history[k], k
    fs, rs = full_opt.state_dict(), res_opt.state_dict()
    for i in fs["state"]:
        for name, v in fs["state"][i].items():
            np.testing.assert_array_equal(v, rs["state"][i][name])


def test_resume_truncates_csv_log(digits, tmp_path):
    x, y, xv, yv = digits
    x, y = x[:200], y[:200]
    _resumable_run(x, y, xv, yv, tmp_path, 4, tag="c")
    _resumable_run(x, y, xv, yv, tmp_path, 4, resume=str(tmp_path / "c2.npz"), tag="c")
    with open(tmp_path / "c.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0][0] == "epoch" and "val_loss" in rows[0]
    assert [r[0] for r in rows[1:]] == ["1", "2", "3", "4"]


def test_resume_refuses_other_callbacks(digits, tmp_path):
    x, y, xv, yv = digits
    m = _net()
    opt = optim.SGD(m.parameters(), 0.1)
    train.fit(m, nn.CrossEntropyLoss(), opt, x[:64], y[:64], epochs=1, verbose=0,
              callbacks=[train.ModelCheckpoint(str(tmp_path / "k.npz"), monitor="loss")])
    with pytest.raises(ValueError, match="callbacks"):
        train.fit(m, nn.CrossEntropyLoss(), opt, x[:64], y[:64], epochs=2, verbose=0,
                  resume_from=str(tmp_path / "k.npz"))
    with pytest.raises(ValueError, match="checkpoint"):
        train.fit(m, nn.CrossEntropyLoss(), opt, x[:64], y[:64], epochs=2, verbose=0,
                  resume_from={"model": m.state_dict()})


def test_reduce_on_plateau_callback(digits):
    x, y, xv, yv = digits
    m = _net()
    opt = optim.SGD(m.parameters(), 0.1)
    sched = optim.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=0, threshold=10.0)
    h = train.fit(m, nn.CrossEntropyLoss(), opt, x[:128], y[:128], epochs=3, batch_size=64,
                  validation_data=(xv, yv), scheduler=sched, verbose=0)
    # threshold=10 (relative) means no epoch ever counts as an improvement after the first
    assert h.history["lr"] == [0.1, 0.05, 0.025]


def test_frozen_base_only_head_learns(digits):
    x, y, _, _ = digits
    m = _net()
    base, head = m[:4], m[5]
    base.requires_grad_(False)
    before = _weights(m)
    opt = optim.SGD([p for p in m.parameters() if p.requires_grad], 0.1)
    train.fit(m, nn.CrossEntropyLoss(), opt, x[:128], y[:128], epochs=1, batch_size=64, verbose=0)
    after = m.state_dict()
    for k in ("0.weight", "0.bias", "1.weight", "1.bias"):
        np.testing.assert_array_equal(before[k], after[k])
    assert not np.array_equal(before["5.weight"], after["5.weight"])
    assert all(p.grad is None for p in base.parameters())
    assert head.weight.grad is not None


def test_clip_grad_norm_and_validation_split(digits):
    x, y, _, _ = digits
    m = _net()
    h = train.fit(m, nn.CrossEntropyLoss(), optim.SGD(m.parameters(), 0.1), x[:100], y[:100],
                  epochs=1, batch_size=20, validation_split=0.2, clip_grad_norm=0.5, verbose=0)
    assert "val_loss" in h.history
    norms = [np.linalg.norm(p.grad) ** 2 for p in m.parameters()]
    assert math.sqrt(sum(norms)) <= 0.5 * (1 + 1e-5)


def test_argument_errors(digits):
    x, y, xv, yv = digits
    m = _net()
    opt = optim.SGD(m.parameters(), 0.1)
    L = nn.CrossEntropyLoss()
    with pytest.raises(ValueError, match="epochs"):
        train.fit(m, L, opt, x, y, epochs=0, verbose=0)
    with pytest.raises(ValueError, match="batch_size"):
        train.fit(m, L, opt, x, y, batch_size=-1, verbose=0)
    with pytest.raises(ValueError, match="samples"):
        train.fit(m, L, opt, x, y[:10], verbose=0)
    with pytest.raises(ValueError, match="not both"):
        train.fit(m, L, opt, x, y, validation_data=(xv, yv), validation_split=0.1, verbose=0)
    with pytest.raises(TypeError, match="optimizer"):
        train.fit(m, L, "adam", x, y, verbose=0)
    with pytest.raises(ValueError, match="unknown|Unknown"):
        train.fit(m, L, opt, x, y, metrics=("bogus",), verbose=0)
    with pytest.raises(KeyError, match="val_loss"):
        train.fit(m, L, opt, x[:32], y[:32], epochs=1, callbacks=[train.EarlyStopping()], verbose=0)


def test_grid_and_random_search(digits):
    x, y, xv, yv = digits

    def build(lr, width=8):
        pyconv.manual_seed(0)
        m = nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))
        return m, optim.SGD(m.parameters(), lr)

    res = train.grid_search(build, {"lr": [1e-4, 0.1], "width": [4, 16], "epochs": [2]},
                            x[:300], y[:300], validation_data=(xv, yv), batch_size=32,
                            metrics=("accuracy",), seed=0)
    assert len(res) == 4
    scores = [r["score"] for r in res]
    assert scores == sorted(scores)
    assert res.best_params["lr"] == 0.1
    table = res.table()
    assert table.splitlines()[0].split()[:3] == ["rank", "epochs", "lr"]
    res2 = train.random_search(build, {"lr": lambda r: 10 ** r.uniform(-3, -1), "width": [8, 16]},
                               x[:300], y[:300], n_iter=3, seed=4, validation_data=(xv, yv),
                               monitor="val_accuracy", epochs=1)
    accs = [r["score"] for r in res2]
    assert len(res2) == 3 and accs == sorted(accs, reverse=True)


def test_history_plot_png(digits, tmp_path):
    pytest.importorskip("matplotlib")
    x, y, xv, yv = digits
    m = _net()
    h = train.fit(m, nn.CrossEntropyLoss(), optim.SGD(m.parameters(), 0.1), x[:128], y[:128],
                  epochs=2, batch_size=64, validation_data=(xv, yv), verbose=0)
    path = tmp_path / "curves.png"
    h.plot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
