"""Concurrency: several Python threads at once, and use after os.fork().

libgomp's thread pool does not survive fork(): without care a child that runs
a parallel kernel after its parent did waits forever. pyconv runs a forked
child single-threaded (pthread_atfork), so it neither hangs nor crashes.
"""
import multiprocessing as mp
import os
import sys
import threading
import warnings

import numpy as np
import pytest

import pyconv


def _work(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((8, 16, 20, 20)).astype(np.float32)
    w = rng.standard_normal((24, 16, 3, 3)).astype(np.float32)
    y = pyconv.conv2d(x, w, padding=1)
    dx, dw, db = pyconv.conv2d_backward(y, x, w, padding=1)
    p = pyconv.max_pool2d(y, 2)
    s = pyconv.softmax(p.reshape(8, -1))
    g = pyconv.gemm(x.reshape(8, -1), x.reshape(8, -1).T)
    ce = pyconv.cross_entropy(p.reshape(8, -1), np.arange(8))
    return [y, dx, dw, db, p, s, g, np.asarray(ce)]


@pytest.fixture
def two_threads():
    old = pyconv.get_num_threads()
    pyconv.set_num_threads(2)
    yield
    pyconv.set_num_threads(old)


def test_python_threads_at_once_match_serial(two_threads):
    seeds = list(range(6))
    expected = {s: _work(s) for s in seeds}
    results, errors = {}, []

    def run(s):
        try:
            for _ in range(3):
                results[s] = _work(s)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(s,)) for s in seeds]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and all(not t.is_alive() for t in threads)
    for s in seeds:
        for got, ref in zip(results[s], expected[s]):
            np.testing.assert_array_equal(got, ref)  # bit-identical: no shared scratch


def _child(q):
    try:
        q.put(("threads", pyconv.get_num_threads()))
        out = _work(3)
        q.put(("result", [a.tobytes() for a in out]))
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            pyconv.set_num_threads(2)
        q.put(("warned", any("fork" in str(x.message) for x in w), pyconv.get_num_threads()))
    except BaseException as e:  # pragma: no cover - reported by the parent
        q.put(("error", repr(e)))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_child_does_not_hang(two_threads):
    ref = _work(3)  # the parent has used its OpenMP pool
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (Python 3.12+)
        p = ctx.Process(target=_child, args=(q,))
        p.start()
    msgs = []
    try:  # read before join: a child blocks at exit until its queue is drained
        for _ in range(3):
            msgs.append(q.get(timeout=60))
    except Exception:
        p.kill()
        pytest.fail(f"a forked child hung in a pyconv kernel (got {msgs[:1]})")
    p.join(60)
    assert p.exitcode == 0
    assert msgs[0] == ("threads", 1)
    assert msgs[1][0] == "result", msgs[1]
    for got, r in zip(msgs[1][1], ref):
        assert got == r.tobytes()  # same bits as the parent's multi-threaded run
    assert msgs[2] == ("warned", True, 1)
    assert pyconv.get_num_threads() == 2  # the parent is unaffected


def test_spawn_workers_run_in_parallel_mode(two_threads):
    """The recommended start method: workers import pyconv afresh (pool threads and all)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 16, 20, 20)).astype(np.float32)
    w = rng.standard_normal((24, 16, 3, 3)).astype(np.float32)
    ctx = mp.get_context("spawn")
    with ctx.Pool(2) as pool:  # the target is pyconv's own function: importable in the child
        outs = pool.starmap(pyconv.conv2d, [(x, w), (x[:4], w)])
    np.testing.assert_array_equal(outs[0], pyconv.conv2d(x, w))
    np.testing.assert_array_equal(outs[1], pyconv.conv2d(x[:4], w))


def test_set_num_threads_while_kernels_run():
    """Changing the thread count from another thread mid-compute is safe and
    changes nothing in the results (they do not depend on the thread count)."""
    old = pyconv.get_num_threads()
    ref = _work(7)
    stop = threading.Event()

    def toggle():
        n = 1
        while not stop.is_set():
            pyconv.set_num_threads(n)
            n = 3 - n

    t = threading.Thread(target=toggle)
    t.start()
    try:
        for _ in range(20):
            for got, r in zip(_work(7), ref):
                np.testing.assert_array_equal(got, r)
    finally:
        stop.set()
        t.join()
        pyconv.set_num_threads(old)


_SCRATCH_CHILD = r"""
import resource, sys
import numpy as np
import pyconv
N = int(sys.argv[1])
pyconv.set_num_threads(2)
rng = np.random.default_rng(0)
x = rng.standard_normal((N, 8, 32, 32), dtype=np.float32)  # no float64 temporaries:
w = rng.standard_normal((8, 8, 3, 3), dtype=np.float32)     # they would raise the baseline peak
dy = rng.standard_normal((N, 8, 32, 32), dtype=np.float32)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
y = pyconv.conv2d(x, w, padding=1)
dx, dw, db = pyconv.conv2d_backward(dy, x, w, padding=1)
y2 = pyconv.conv2d(x, w, stride=2, padding=1)
dx2, dw2, db2 = pyconv.conv2d_backward(np.ones_like(y2), x, w, stride=2, padding=1)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
arrays = sum(a.nbytes for a in (y, dx, dw, db, y2, dx2, dw2, db2))
print(peak - base - arrays)
"""


def test_scratch_memory_is_bounded_for_large_batches():
    """conv2d's im2col scratch is processed in chunks: a batch of 1024 must not
    allocate anything like N x the column matrix (here 1024 x 288 KiB = 288 MiB)."""
    import subprocess
    import tempfile

    out = subprocess.run([sys.executable, "-c", _SCRATCH_CHILD, "1024"], capture_output=True,
                         text=True, timeout=300, cwd=tempfile.gettempdir())
    assert out.returncode == 0, out.stderr
    extra = int(out.stdout.split()[-1])
    assert extra < 96 << 20, f"scratch peak {extra / 2**20:.0f} MiB for N=1024"
