"""The main job (`python -m pyconv`): the digits demo reaches >= 97% test accuracy and writes its files."""
import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("sklearn")


def test_demo_default_run(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from pyconv.__main__ import main

    out_dir = tmp_path / "demo"
    assert main(["--out", str(out_dir), "--quiet"]) == 0
    out = capsys.readouterr().out
    m = re.search(r"test accuracy: ([0-9.]+)%", out)
    assert m, out
    assert float(m.group(1)) >= 97.0
    assert "macro avg" in out and "images/s" in out
    for name in ("curves.png", "confusion_matrix.png", "misclassified.png", "best.npz", "history.csv"):
        p = out_dir / name
        assert p.exists() and p.stat().st_size > 0, name
    with open(out_dir / "curves.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_cli_help_and_commands(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pyconv", "--help"], capture_output=True, text=True,
                       cwd=str(tmp_path))
    assert r.returncode == 0
    assert "demo" in r.stdout and "bench" in r.stdout and "--epochs" in r.stdout
    r = subprocess.run([sys.executable, "-m", "pyconv", "info"], capture_output=True, text=True,
                       cwd=str(tmp_path))
    assert r.returncode == 0 and '"isa"' in r.stdout
    r = subprocess.run([sys.executable, "-m", "pyconv", "nonsense"], capture_output=True, text=True,
                       cwd=str(tmp_path))
    assert r.returncode == 2 and "unknown command" in r.stderr


def test_demo_short_run_without_plots(tmp_path, capsys):
    from pyconv.demo import main

    assert main(["--epochs", "2", "--no-plots", "--quiet", "--out", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "trained 2 epochs" in out and "test accuracy" in out
    assert not os.path.exists(tmp_path / "d" / "curves.png")
