"""pyconv.save / pyconv.load: npz round trips without pickle, atomic writes, clear errors."""
import os
import pickle
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

import pyconv
from pyconv import nn
from pyconv.io import CheckpointError


def _model():
    pyconv.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 3))


def test_module_round_trip(tmp_path):
    m = _model()
    p = tmp_path / "m.npz"
    assert pyconv.save(m, p) == str(p)
    sd = pyconv.load(p)
    ref = m.state_dict()
    assert list(sd) == list(ref)
    for k in ref:
        assert sd[k].dtype == ref[k].dtype and sd[k].shape == ref[k].shape
        np.testing.assert_array_equal(sd[k], ref[k])
    m2 = _model()
    for p_ in m2.parameters():
        p_.data[...] = 0
    m2.load_state_dict(sd)
    x = np.random.default_rng(0).random((2, 1, 6, 6), dtype=np.float32)
    m.eval(), m2.eval()
    np.testing.assert_array_equal(m(x), m2(x))


def test_nested_values_keep_types(tmp_path):
    obj = {
        "epoch": 7, "name": "run", "flag": True, "none": None, "lr": 1e-3,
        "nan": float("nan"), "inf": float("-inf"), "big": 2**100,
        "tuple": (0.9, 0.999), "list": [1, "a", np.arange(3)],
        "state": {0: {"step": 3, "exp_avg": np.ones((2, 2), np.float32)}, 1: {}},
        "scalar": np.float32(2.5), "i64": np.array(5, dtype=np.int64),
    }
    p = tmp_path / "c.npz"
    pyconv.save(obj, p)
    back = pyconv.load(p)
    assert back["epoch"] == 7 and isinstance(back["epoch"], int)
    assert back["name"] == "run" and back["flag"] is True and back["none"] is None
    assert back["lr"] == 1e-3 and np.isnan(back["nan"]) and back["inf"] == -np.inf
    assert back["big"] == 2**100
    assert back["tuple"] == (0.9, 0.999) and isinstance(back["tuple"], tuple)
    assert back["list"][:2] == [1, "a"]
    np.testing.assert_array_equal(back["list"][2], np.arange(3))
    assert set(back["state"]) == {0, 1}  # int keys stay ints
    assert back["state"][0]["step"] == 3
    assert back["state"][0]["exp_avg"].dtype == np.float32
    assert isinstance(back["scalar"], np.float32) and back["scalar"] == 2.5
    assert back["i64"].shape == () and back["i64"].dtype == np.int64


def test_file_is_plain_npz_without_pickle(tmp_path):
    p = tmp_path / "m.npz"
    pyconv.save(_model(), p)
    with np.load(p, allow_pickle=False) as z:  # must not raise
        assert "0.weight" not in z.files  # arrays are stored under generated names
        assert len(z.files) == len(_model().state_dict()) + 1


def test_unsupported_values_are_refused(tmp_path):
    with pytest.raises(TypeError, match="cannot store"):
        pyconv.save({"f": lambda: 0}, tmp_path / "x.npz")
    with pytest.raises(TypeError, match="key of type"):
        pyconv.save({(1, 2): 0}, tmp_path / "x.npz")
    with pytest.raises(TypeError, match="dtype object"):
        pyconv.save({"o": np.array([object()])}, tmp_path / "x.npz")
    with pytest.raises(TypeError, match="Module or a dict"):
        pyconv.save([1, 2], tmp_path / "x.npz")
    assert not os.listdir(tmp_path)  # nothing half-written


def test_load_refuses_pickle(tmp_path):
    p = tmp_path / "evil.npz"
    np.savez(p, a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(CheckpointError, match="pickled"):
        pyconv.load(p)
    q = tmp_path / "raw.pkl"
    q.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError):
        pyconv.load(q)


def test_load_refuses_truncated_and_corrupt(tmp_path):
    p = tmp_path / "m.npz"
    pyconv.save(_model(), p)
    data = p.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 30):
        t = tmp_path / f"t{cut}.npz"
        t.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated|corrupt|not a valid"):
            pyconv.load(t)
    # flip a byte inside a stored member: the CRC check catches it
    with zipfile.ZipFile(p) as z:
        info = z.infolist()[1]
    start = info.header_offset + 30 + len(info.filename) + 200
    bad = bytearray(data)
    bad[start] ^= 0xFF
    c = tmp_path / "crc.npz"
    c.write_bytes(bytes(bad))
    with pytest.raises(CheckpointError):
        pyconv.load(c)
    with pytest.raises(FileNotFoundError):
        pyconv.load(tmp_path / "missing.npz")


def test_missing_member_is_reported(tmp_path):
    p = tmp_path / "m.npz"
    pyconv.save({"w": np.ones(3), "v": np.zeros(2)}, p)
    with np.load(p) as z:
        members = {k: z[k] for k in z.files}
    members.pop("a1")
    q = tmp_path / "q.npz"
    np.savez(q, **members)
    with pytest.raises(CheckpointError, match="missing array member"):
        pyconv.load(q)


def test_plain_npz_loads_as_state_dict(tmp_path):
    m = _model()
    p = tmp_path / "plain.npz"
    np.savez(p, **m.state_dict())
    sd = pyconv.load(p)
    m2 = _model()
    m2.load_state_dict(sd)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(m2.state_dict()[k], v)


def test_load_state_dict_refuses_wrong_keys_and_shapes(tmp_path):
    m = _model()
    sd = m.state_dict()
    sd.pop("4.bias")
    with pytest.raises(KeyError, match="missing keys"):
        m.load_state_dict(sd)
    sd = m.state_dict()
    sd["0.weight"] = np.zeros((4, 1, 5, 5), np.float32)
    before = m.state_dict()
    with pytest.raises(ValueError, match="0.weight"):
        m.load_state_dict(sd)
    for k, v in before.items():  # untouched
        np.testing.assert_array_equal(m.state_dict()[k], v)


def test_overwrite_is_atomic_when_saving_fails(tmp_path, monkeypatch):
    p = tmp_path / "ck.npz"
    pyconv.save({"v": np.arange(4)}, p)
    original = p.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        pyconv.save({"v": np.arange(100)}, p)
    assert p.read_bytes() == original
    assert os.listdir(tmp_path) == ["ck.npz"]  # the temporary file was removed


def test_sigkill_during_save_leaves_previous_checkpoint(tmp_path):
    """A process killed while writing a large checkpoint never damages the old one."""
    p = tmp_path / "ck.npz"
    pyconv.save({"v": np.arange(10)}, p)
    script = textwrap.dedent(f"""
        import os, signal, numpy as np, pyconv
        real = np.savez
        def slow(f, **kw):
            real(f, **kw)
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)  # die after writing, before the rename
        np.savez = slow
        pyconv.save({{"v": np.zeros(1_000_000)}}, {str(p)!r})
    """)
    r = subprocess.run([sys.executable, "-c", script], cwd=str(tmp_path), capture_output=True)
    assert r.returncode == -9
    back = pyconv.load(p)
    np.testing.assert_array_equal(back["v"], np.arange(10))
