"""The packed GEMM engine against float64 numpy.matmul.

Sweeps m, n and k around each kernel's register block (MR, NR) and cache
blocks (KC, MC): equal to, one below, one above and multiples of the block,
for every ISA this CPU supports and both dtypes, with transposed, sliced,
negatively strided operands and strided outputs.

Tolerance: float32 |err| <= 2e-6 * k * max|a| * max|b| + tiny, float64 the
same with 1e-14 (a worst-case-style bound that grows with k).
"""
import itertools

import numpy as np
import pytest

import pyconv
from pyconv import _C

DTYPES = [np.float32, np.float64]
ISAS = pyconv.supported_isas()


def _tol(dt, k, a, b):
    eps = 2e-6 if dt == np.float32 else 1e-14
    return eps * max(k, 1) * (np.abs(a).max(initial=1) * np.abs(b).max(initial=1)) + 1e-30


def _check(c, a, b, beta=0.0, c0=None):
    ref = a.astype(np.float64) @ b.astype(np.float64)
    if beta != 0.0:
        ref = ref + beta * c0.astype(np.float64)
    tol = _tol(c.dtype.type, a.shape[1], a, b) + (0 if c0 is None else 1e-6 * abs(beta) * np.abs(c0).max(initial=0))
    err = np.abs(c.astype(np.float64) - ref).max(initial=0)
    assert err <= tol, f"max err {err} > tol {tol} for shape {a.shape} x {b.shape}"


def _check_threads_and_beta(a, b, isa, rng, what):
    """c = a @ b on 1 thread (beta 0 into NaN: C is never read) against
    float64, the same bits on 2 threads, and beta 0 / 1 / -0.5 into a C
    strided inside a NaN border that must stay untouched."""
    m, n = a.shape[0], b.shape[1]
    dt = a.dtype
    c = np.full((m, n), np.nan, dtype=dt)
    _C.gemm(a, b, c, 0.0, isa, 1)
    _check(c, a, b)
    c2 = np.full((m, n), np.nan, dtype=dt)
    _C.gemm(a, b, c2, 0.0, isa, 2)
    assert np.array_equal(c, c2), what
    for beta in (0.0, 1.0, -0.5):
        c0 = rng.standard_normal((m, n)).astype(dt)
        big = np.full((m + 2, n + 5), np.nan, dtype=dt)
        out = big[1:m + 1, 3:n + 3]
        out[...] = c0
        _C.gemm(a, b, out, beta, isa)
        _check(out, a, b, beta, c0)
        assert np.isnan(big[[0, -1]]).all() and np.isnan(big[:, :3]).all() and np.isnan(big[:, n + 3:]).all()


def _sizes(block, extra=()):
    s = {1, 2, block - 1, block, block + 1, 2 * block, 3 * block - 1}
    s.update(extra)
    return sorted(v for v in s if v >= 1)


@pytest.fixture(params=ISAS)
def isa(request):
    return request.param


@pytest.mark.parametrize("dt", DTYPES)
def test_register_block_sweep(isa, dt):
    info = _C.gemm_kernel_info(np.dtype(dt).name, isa)
    mr, nr = info["mr"], info["nr"]
    rng = np.random.default_rng(1)
    for m, n, k in itertools.product(_sizes(mr), _sizes(nr), [1, 2, 3, 7, 16, 33]):
        a = rng.standard_normal((m, k)).astype(dt)
        b = rng.standard_normal((k, n)).astype(dt)
        c = np.full((m, n), np.nan, dtype=dt)  # beta=0 must never read C
        _C.gemm(a, b, c, 0.0, isa)
        _check(c, a, b)


@pytest.mark.parametrize("dt", DTYPES)
def test_cache_block_sweep(isa, dt):
    info = _C.gemm_kernel_info(np.dtype(dt).name, isa)
    mr, nr, mc, kc = info["mr"], info["nr"], info["mc"], info["kc"]
    rng = np.random.default_rng(2)
    ks = [kc - 1, kc, kc + 1, 2 * kc + 3]
    ms = [mc - 1, mc + 1, mc + mr + 1]
    ns = [nr * 3 + 5, 2 * nr]
    for m, n, k in itertools.product(ms, ns, ks):
        a = rng.standard_normal((m, k)).astype(dt)
        b = rng.standard_normal((k, n)).astype(dt)
        c = np.empty((m, n), dtype=dt)
        _C.gemm(a, b, c, 0.0, isa)
        _check(c, a, b)


@pytest.mark.parametrize("dt", DTYPES)
def test_nc_block_and_large(isa, dt):
    info = _C.gemm_kernel_info(np.dtype(dt).name, isa)
    rng = np.random.default_rng(3)
    n = info["nc"] + info["nr"] + 3
    a = rng.standard_normal((info["mr"] + 2, 40)).astype(dt)
    b = rng.standard_normal((40, n)).astype(dt)
    c = np.empty((a.shape[0], n), dtype=dt)
    _C.gemm(a, b, c, 0.0, isa)
    _check(c, a, b)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("beta", [0.0, 1.0, -0.5])
def test_beta(isa, dt, beta):
    rng = np.random.default_rng(4)
    for m, n, k in [(13, 37, 300), (6, 16, 256), (1, 1, 1), (31, 5, 600)]:
        a = rng.standard_normal((m, k)).astype(dt)
        b = rng.standard_normal((k, n)).astype(dt)
        c0 = rng.standard_normal((m, n)).astype(dt)
        c = c0.copy()
        _C.gemm(a, b, c, beta, isa)
        _check(c, a, b, beta, c0)


@pytest.mark.parametrize("dt", DTYPES)
def test_strided_operands_and_output(isa, dt):
    rng = np.random.default_rng(5)
    m, n, k = 29, 45, 70
    base_a = rng.standard_normal((2 * k, 3 * m)).astype(dt)
    base_b = rng.standard_normal((3 * n, 2 * k)).astype(dt)
    variants_a = [
        np.ascontiguousarray(base_a[:m, :k]),
        base_a[:k, :m].T,                  # transposed view
        base_a[::2, ::3].T[:m, :k],        # both strides non-unit
        base_a[:m, :k][::-1, ::-1],        # negative strides
        np.asfortranarray(base_a[:m, :k]),
    ]
    variants_b = [
        np.ascontiguousarray(base_b[:k, :n]),
        base_b[:n, :k].T,
        base_b[::3, ::2].T[:k, :n],
        base_b[:k, :n][::-1],
    ]
    big = np.full((m + 3, n + 11), np.nan, dtype=dt)
    for a, b in itertools.product(variants_a, variants_b):
        out = big[1:m + 1, 2:n + 2]  # ldc > n, unaligned start
        _C.gemm(a, b, out, 0.0, isa)
        _check(out, a, b)
    assert np.isnan(big[0]).all() and np.isnan(big[:, :2]).all()  # nothing outside written


@pytest.mark.parametrize("dt", DTYPES)
def test_narrow_c_swapped_product(isa, dt):
    # A narrow C (few columns, many rows) is computed as C^T = B^T A^T and
    # transposed back; with beta == 0 every element sums the same products
    # in the same order, so the result equals the transposed problem's bits.
    # (A is column-major here: with A's rows along k, a narrow product reads
    # A in place instead; see test_narrow_c_reads_a_in_place.)
    info = _C.gemm_kernel_info(np.dtype(dt).name, isa)
    mr, nr = info["mr"], info["nr"]
    rng = np.random.default_rng(11)
    for m, n, k in [(8 * nr + 3, 1, 40), (8 * nr, nr + 1, 257), (3 * info["mc"] + 1, 2 * nr + 1, 64),
                    (20 * nr, 7 * nr + 5, 33), (50, 10, 600)]:
        a = np.asfortranarray(rng.standard_normal((m, k)).astype(dt))
        b = rng.standard_normal((k, n)).astype(dt)
        c = np.full((m, n), np.nan, dtype=dt)
        _C.gemm(a, b, c, 0.0, isa)
        _check(c, a, b)
        ct = np.full((n, m), np.nan, dtype=dt)
        _C.gemm(np.asfortranarray(b.T), np.ascontiguousarray(a.T), ct, 0.0, isa)
        assert np.array_equal(c, ct.T), (m, n, k)
        for beta in (1.0, -0.5):  # beta is applied when adding C^T back
            c0 = rng.standard_normal((m, n)).astype(dt)
            big = np.full((m + 2, n + 5), np.nan, dtype=dt)
            out = big[1:m + 1, 3:n + 3]
            out[...] = c0
            _C.gemm(a.T.copy().T, b[:, ::-1].copy()[:, ::-1], out, beta, isa)
            _check(out, a, b, beta, c0)
            assert np.isnan(big[0]).all() and np.isnan(big[:, :3]).all() and np.isnan(big[:, n + 3:]).all()


@pytest.mark.parametrize("dt", DTYPES)
def test_short_row_tiles(isa, dt):
    """A last row tile of m % MR rows runs a short kernel where the table has
    one (AVX2: 2 and 4 rows), straight into C when its rows match and through
    a local tile otherwise. Every m up to three tiles, full and partial
    column panels, k across the KC blocks, both A layouts (packed, and read in
    place for narrow products), beta 0 / 1 / -0.5 into a strided C whose
    border must stay untouched, 1 and 2 threads; every element sums its
    products in the same order, so row i of C does not depend on m."""
    info = _C.gemm_kernel_info(np.dtype(dt).name, isa)
    mr, nr, kc = info["mr"], info["nr"], info["kc"]
    if isa == "avx2":
        assert info["short_rows"] == [2, 4]
    assert all(0 < r < mr for r in info["short_rows"])
    rng = np.random.default_rng(13)
    for n, k in [(nr, 7), (2 * nr, kc + 5), (3 * nr + 3, 40), (5 * nr, 2 * kc + 1)]:
        a_full = rng.standard_normal((3 * mr, k)).astype(dt)
        b = rng.standard_normal((k, n)).astype(dt)
        for layout in ("C", "F"):
            for m in range(1, 3 * mr + 1):
                _check_threads_and_beta(np.array(a_full[:m], order=layout), b, isa, rng, (layout, m, n, k))
            full = np.empty((3 * mr, n), dtype=dt)
            _C.gemm(np.array(a_full, order=layout), b, full, 0.0, isa)
            for m in range(1, 3 * mr + 1):  # row i is the same whatever m (same layout)
                c = np.empty((m, n), dtype=dt)
                _C.gemm(np.array(a_full[:m], order=layout), b, c, 0.0, isa)
                assert np.array_equal(c, full[:m]), (layout, m, n, k)


@pytest.mark.parametrize("dt", DTYPES)
def test_few_rows_and_outer_products(isa, dt):
    """Fewer rows than a register tile: B's columns along k (a Fortran B, W
    of x W^T) run as the transposed narrow product reading B^T in place; B's
    rows contiguous (dy W) read by the row-offset kernel, the last n % NR
    columns packed, and rows 2 KiB apart packed instead; k == 1 with beta 0
    or 1 is a plain outer product. Every path against float64, beta 0 / 1 /
    -0.5 into a strided C with an untouched border, same bits on 1 and 2
    threads."""
    info = _C.gemm_kernel_info(np.dtype(dt).name, isa)
    mr, nr = info["mr"], info["nr"]
    rng = np.random.default_rng(14)
    ns = [1, nr - 1, nr, 3 * nr + 5, 8 * nr + 3, 512 // np.dtype(dt).itemsize]
    for m, n, k in itertools.product(range(1, mr + 1), ns, [1, 2, 40, 300]):
        a = rng.standard_normal((m, k)).astype(dt)
        b0 = rng.standard_normal((k, n)).astype(dt)
        wide = np.zeros((k, 2048 // np.dtype(dt).itemsize), dt)  # rows 2 KiB apart
        wide[:, :n] = b0
        for b in (b0, np.asfortranarray(b0), wide[:, :n], b0[::-1], b0[:, ::-1]):
            _check_threads_and_beta(a, b, isa, rng, (m, n, k))
    # k == 1 is exactly the kernels' arithmetic: the rounded product added to
    # a +0 accumulator (a -0 product gives +0), plus C for beta 1
    a = rng.standard_normal((9, 1)).astype(dt)
    a[2] = 0
    b = rng.standard_normal((1, 70)).astype(dt)
    c = np.empty((9, 70), dt)
    _C.gemm(a, b, c, 0.0, isa)
    np.testing.assert_array_equal(c, a * b)
    assert not np.signbit(c[2]).any()
    c0 = rng.standard_normal((9, 70)).astype(dt)
    c = c0.copy()
    _C.gemm(a, b, c, 1.0, isa)
    np.testing.assert_array_equal(c, a * b + c0)


@pytest.mark.parametrize("dt", DTYPES)
def test_thread_count_independent(dt):
    rng = np.random.default_rng(6)
    old = pyconv.get_num_threads()
    for m, n, k in [(203, 389, 517), (700, 9, 300)]:  # the second is computed as C^T
        a = rng.standard_normal((m, k)).astype(dt)
        b = rng.standard_normal((k, n)).astype(dt)
        try:
            outs = []
            for nt in (1, 2, 3):
                pyconv.set_num_threads(nt)
                outs.append(pyconv.gemm(a, b))
        finally:
            pyconv.set_num_threads(old)
        assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])


def test_k_zero_and_empty():
    a = np.ones((3, 0), np.float32)
    b = np.ones((0, 4), np.float32)
    assert np.array_equal(pyconv.gemm(a, b), np.zeros((3, 4), np.float32))
    c = np.full((3, 4), 2.0, np.float32)
    pyconv.gemm(a, b, out=c, beta=0.5)
    assert np.array_equal(c, np.ones((3, 4), np.float32))
    assert pyconv.gemm(np.ones((0, 5)), np.ones((5, 2))).shape == (0, 2)


def test_public_gemm_dtypes_and_errors():
    a32 = np.arange(6, dtype=np.float32).reshape(2, 3)
    b64 = np.arange(12, dtype=np.float64).reshape(3, 4)
    r = pyconv.gemm(a32, b64)
    assert r.dtype == np.float64
    np.testing.assert_allclose(r, a32.astype(np.float64) @ b64)
    assert pyconv.gemm([[1, 2]], [[3], [4]]).tolist() == [[11.0]]
    with pytest.raises(ValueError, match="a.shape\\[1\\]=3"):
        pyconv.gemm(a32, a32)
    with pytest.raises(ValueError, match="2-d"):
        pyconv.gemm(np.ones(3), np.ones(3))
    with pytest.raises(TypeError, match="complex"):
        pyconv.gemm(np.ones((2, 2), complex), np.ones((2, 2)))
    with pytest.raises(TypeError, match="out must have dtype"):
        pyconv.gemm(a32, a32.T, out=np.empty((2, 2), np.float64))
    with pytest.raises(ValueError, match="beta"):
        pyconv.gemm(a32, a32.T, beta=1.0)
    ro = np.empty((2, 2), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        pyconv.gemm(a32, a32.T, out=ro)


def test_out_with_non_unit_column_stride_written_back():
    rng = np.random.default_rng(7)
    a = rng.standard_normal((5, 6))
    b = rng.standard_normal((6, 7))
    big = np.zeros((5, 14))
    out = big[:, ::2]
    res = pyconv.gemm(a, b, out=out)
    assert res is out
    np.testing.assert_allclose(big[:, ::2], a @ b, rtol=1e-12, atol=1e-12)
    assert not big[:, 1::2].any()


def test_bindings_refuse_bad_arrays():
    a = np.ones((4, 4), np.float32)
    with pytest.raises(TypeError):
        _C.gemm(a, a, np.empty((4, 4), np.float64), 0.0)
    with pytest.raises(ValueError):
        _C.gemm(a, a, np.empty((4, 8), np.float32)[:, ::2], 0.0)
    with pytest.raises(ValueError):
        _C.gemm(a, a, np.empty((4, 4), np.float32), 0.0, "sse9")


@pytest.mark.parametrize("dt", DTYPES)
def test_narrow_c_reads_a_in_place(isa, dt):
    """Few columns with A's rows along k: A is read where it is (no packing),
    the last one or two columns by dot products, a last panel of at most NR/2
    by the half-width kernel, and a last row tile under MR packed. Every
    column remainder and row remainder, k across the KC blocks, beta 0 / 1 /
    -0.5 into a strided C, and the same bits on 1 and 2 threads."""
    info = _C.gemm_kernel_info(np.dtype(dt).name, isa)
    mr, nr = info["mr"], info["nr"]
    rng = np.random.default_rng(12)
    ns = sorted({1, 2, 3, nr // 2 - 1, nr // 2, nr // 2 + 1, nr - 1, nr, nr + 1, nr + 2,
                 2 * nr + 1, 3 * nr + 1, 3 * nr + 2, 4 * nr} - {0})
    for m, n, k in itertools.product([mr, mr + 1, 5 * mr - 1, 13 * mr + 2], ns, [32, 100, 257, 600]):
        a = rng.standard_normal((m, k)).astype(dt)
        b = rng.standard_normal((k, n)).astype(dt)
        _check_threads_and_beta(a, b, isa, rng, (m, n, k))
