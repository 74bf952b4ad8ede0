"""Package-level API: config, threads, ISA selection, import-order safety."""
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import pyconv


def test_config_contents():
    cfg = pyconv.config()
    assert cfg["isa"] in cfg["supported_isas"]
    assert "ref" in cfg["supported_isas"]
    assert cfg["num_threads"] == pyconv.get_num_threads() >= 1
    assert isinstance(cfg["openmp"], bool) and cfg["openmp"]
    assert cfg["compiler"]
    assert cfg["sgemm_kernel"]["name"].startswith("sgemm_ukernel_")
    assert cfg["dgemm_kernel"]["name"].startswith("dgemm_ukernel_")
    assert cfg["version"] == pyconv.__version__


def test_set_num_threads_roundtrip_and_errors():
    old = pyconv.get_num_threads()
    try:
        pyconv.set_num_threads(1)
        assert pyconv.get_num_threads() == 1
        pyconv.set_num_threads(np.int64(3))
        assert pyconv.get_num_threads() == 3
    finally:
        pyconv.set_num_threads(old)
    for bad in (0, -2):
        with pytest.raises(ValueError, match=str(bad)):
            pyconv.set_num_threads(bad)
    for bad in (1.5, "2", True, None):
        with pytest.raises(TypeError):
            pyconv.set_num_threads(bad)


def test_set_isa_roundtrip_and_errors():
    old = pyconv.get_isa()
    try:
        for isa in pyconv.supported_isas():
            pyconv.set_isa(isa)
            assert pyconv.get_isa() == isa
            assert pyconv.config()["sgemm_kernel"]["isa"] == isa
    finally:
        pyconv.set_isa(old)
    with pytest.raises(ValueError, match="isa must be"):
        pyconv.set_isa("sse9")
    with pytest.raises(TypeError):
        pyconv.set_isa(3)
    for isa in ("avx2", "avx512"):
        if isa not in pyconv.supported_isas():
            with pytest.raises(ValueError, match="not supported"):
                pyconv.set_isa(isa)


def _run(code, env_extra):
    env = dict(os.environ)
    env.update(env_extra)
    # Run outside the checkout: from the repository root `import pyconv` would
    # find the source tree (no compiled module) before the installed package.
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120, cwd=tempfile.gettempdir())


def test_env_overrides():
    r = _run("import pyconv; print(pyconv.get_isa(), pyconv.get_num_threads())",
             {"PYCONV_ISA": "ref", "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["ref", "1"]
    r = _run("import pyconv; print(pyconv.get_isa())", {"PYCONV_ISA": "bogus"})
    assert r.returncode == 0, r.stderr
    assert "PYCONV_ISA='bogus'" in r.stderr
    assert r.stdout.strip() in pyconv.supported_isas()


def test_import_torch_first_then_pyconv():
    """torch ships its own libgomp (OpenMP <= 5.0); our module must still load."""
    code = (
        "import importlib.util, sys\n"
        "if importlib.util.find_spec('torch'): import torch\n"
        "import numpy as np, pyconv\n"
        "x = np.ones((2, 3, 9, 9), np.float32); w = np.ones((4, 3, 3, 3), np.float32)\n"
        "print(float(pyconv.conv2d(x, w).sum()))\n"
    )
    r = _run(code, {})
    assert r.returncode == 0, r.stderr
    assert float(r.stdout) == 2 * 4 * 7 * 7 * 27


def test_no_openmp_51_symbols():
    """gcc 12 may emit OpenMP 5.1 entry points that torch's libgomp lacks."""
    import shutil
    so = pyconv._C.__file__
    objdump = shutil.which("objdump")
    assert objdump, "objdump (binutils) is needed for this check"
    out = subprocess.run([objdump, "-T", so], capture_output=True, text=True, check=True).stdout
    assert "OMP_5.1" not in out and "GOMP_5.1" not in out


def test_gil_released_threads_run_concurrently():
    """Calls from several Python threads at once give correct results."""
    import threading
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 8, 20, 20)).astype(np.float32)
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    expect = pyconv.conv2d(x, w, padding=1)
    errors = []

    def work():
        for _ in range(20):
            if not np.array_equal(pyconv.conv2d(x, w, padding=1), expect):
                errors.append("mismatch")

    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
