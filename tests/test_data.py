"""pyconv.data (splitting, batching, preprocessing, augmentation) and pyconv.datasets."""
import builtins
import json
import time

import numpy as np
import pytest

from pyconv.data import (
    BatchLoader, Center, ColorJitter, Compose, GaussianNoise, MinMaxScaler, RandomAffine,
    RandomCrop, RandomHorizontalFlip, RandomRotation, RandomScale, RandomTranslation,
    RandomVerticalFlip, Standardize, batches, train_val_test_split,
)
from pyconv import datasets


def _images(n=6, c=3, h=8, w=8, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).random((n, c, h, w)).astype(dtype)


def _all_transforms(seed=0):
    return [
        RandomCrop(8, padding=2, seed=seed),
        RandomHorizontalFlip(seed=seed),
        RandomVerticalFlip(seed=seed),
        RandomRotation(30, seed=seed),
        RandomAffine(degrees=10, translate=(0.25, 0.25), scale=(0.8, 1.2), seed=seed),
        RandomTranslation((0.25, 0.25), seed=seed),
        RandomScale((0.7, 1.3), seed=seed),
        GaussianNoise(0.1, p=0.7, seed=seed),
        ColorJitter(0.3, 0.3, 0.3, seed=seed),
    ]


# ==========================================================================
# train_val_test_split
# ==========================================================================
@pytest.mark.parametrize("stratify", [True, False])
@pytest.mark.parametrize("n, fractions, sizes", [
    (100, (0.7, 0.1, 0.2), (70, 10, 20)),
    (10, (0.7, 0.1, 0.2), (7, 1, 2)),
    (1000, (0.8, 0.2), (800, 200)),
    (11, (0.5, 0.5), (6, 5)),          # largest remainder: ties go to the first part
    (7, (1 / 3, 1 / 3, 1 / 3), (3, 2, 2)),
])
def test_split_sizes_exact(n, fractions, sizes, stratify):
    x = np.arange(n)
    y = np.arange(n) % 2 if min(sizes) >= 2 else np.zeros(n, int)  # a part of 1 holds 1 class
    out = train_val_test_split(x, y, fractions, stratify=stratify, seed=0)
    assert len(out) == 2 * len(fractions)
    assert tuple(len(a) for a in out[0::2]) == sizes
    assert tuple(len(a) for a in out[1::2]) == sizes


@pytest.mark.parametrize("stratify", [True, False])
def test_split_disjoint_covering_and_pairs_kept(stratify):
    n = 257
    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, n)
    x = np.arange(n)[:, None, None, None] * np.ones((1, 1, 2, 2))  # sample i is filled with i
    xtr, ytr, xva, yva, xte, yte = train_val_test_split(x, y, stratify=stratify, seed=3)
    ids = [a[:, 0, 0, 0].astype(int) for a in (xtr, xva, xte)]
    allids = np.concatenate(ids)
    assert np.array_equal(np.sort(allids), np.arange(n))          # every sample exactly once
    for a in ids:
        assert len(set(a.tolist())) == len(a)
    for xs, ys in ((xtr, ytr), (xva, yva), (xte, yte)):
        assert np.array_equal(y[xs[:, 0, 0, 0].astype(int)], ys)  # x/y pairs stay together
        assert xs.shape[1:] == x.shape[1:] and xs.dtype == x.dtype


def test_split_stratified_proportions():
    counts = np.array([400, 200, 120, 60, 17, 3])
    y = np.repeat(np.arange(len(counts)), counts)
    y = np.random.default_rng(0).permutation(y)
    x = np.arange(len(y))
    f = (0.7, 0.1, 0.2)
    out = train_val_test_split(x, y, f, seed=0)
    totals = [len(a) for a in out[0::2]]
    n = len(y)
    assert totals == [560, 80, 160] and sum(totals) == n
    for s, ys in enumerate(out[1::2]):
        got = np.bincount(ys, minlength=len(counts))
        assert (got >= 1).all(), "every class must appear in every part"
        # close to each class's exact share; the 3-sample class is forced to
        # 1/1/1, which costs another class about one sample
        assert np.all(np.abs(got - counts * f[s]) <= 1.5), (s, got, counts * f[s])
    per_class_total = sum(np.bincount(ys, minlength=len(counts)) for ys in out[1::2])
    assert np.array_equal(per_class_total, counts)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_stratified_largest_remainder_per_class(seed):
    # no tiny classes: every class count is its exact share rounded up or down
    counts = np.array([503, 251, 99, 47, 33])
    y = np.random.default_rng(seed).permutation(np.repeat(np.arange(5), counts))
    f = np.array([0.65, 0.15, 0.2])
    out = train_val_test_split(np.zeros((len(y), 1)), y, tuple(f), seed=seed)
    got = np.stack([np.bincount(ys, minlength=5) for ys in out[1::2]], axis=1)
    target = counts[:, None] * f[None, :]
    assert np.all((got == np.floor(target)) | (got == np.ceil(target))), (got, target)
    assert np.array_equal(got.sum(1), counts)
    # 933 * f = 606.45, 139.95, 186.6 -> largest remainder 606, 140, 187
    assert [len(a) for a in out[0::2]] == [606, 140, 187]


def test_split_stratified_totals_exact_with_awkward_classes():
    # many small classes: lower bounds (>= 1 per part) and rounding compete,
    # the part sizes must still be the largest-remainder sizes
    counts = np.array([3, 4, 5, 6, 7, 8, 9, 40, 41])
    y = np.repeat(np.arange(len(counts)), counts)
    n = len(y)
    out = train_val_test_split(np.arange(n), y, (0.6, 0.15, 0.25), seed=5)
    raw = n * np.array([0.6, 0.15, 0.25])
    sizes = [len(a) for a in out[0::2]]
    assert sum(sizes) == n
    assert np.all(np.abs(np.array(sizes) - raw) < 1)
    for ys in out[1::2]:
        assert set(np.unique(ys)) == set(range(len(counts)))


def test_split_stratified_string_labels_and_order_random():
    y = np.array(["cat"] * 50 + ["dog"] * 30 + ["bird"] * 20)
    x = np.arange(100)
    xtr, ytr, xva, yva, xte, yte = train_val_test_split(x, y, seed=0)
    assert (ytr == "cat").sum() == 35 and (ytr == "dog").sum() == 21 and (ytr == "bird").sum() == 14
    assert (yte == "cat").sum() == 10 and (yte == "dog").sum() == 6 and (yte == "bird").sum() == 4
    # shuffled: neither grouped by class nor in input order
    assert not np.array_equal(xtr, np.sort(xtr))
    assert (ytr[1:] != ytr[:-1]).sum() > 5


def test_split_deterministic_by_seed_and_copies():
    x = np.random.default_rng(0).random((50, 1, 2, 2)).astype(np.float32)
    y = np.arange(50) % 3
    a = train_val_test_split(x, y, seed=42)
    b = train_val_test_split(x, y, seed=42)
    c = train_val_test_split(x, y, seed=43)
    for u, v in zip(a, b):
        assert np.array_equal(u, v)
    assert not all(np.array_equal(u, v) for u, v in zip(a, c))
    g1 = train_val_test_split(x, y, seed=np.random.default_rng(7))
    g2 = train_val_test_split(x, y, seed=np.random.default_rng(7))
    assert all(np.array_equal(u, v) for u, v in zip(g1, g2))
    for arr in a:
        assert not np.shares_memory(arr, x) and not np.shares_memory(arr, y)
    x_before = x.copy()
    a[0][:] = -1
    assert np.array_equal(x, x_before)


def test_split_zero_fraction_and_non_stratified_floats():
    x = np.arange(20)
    y = np.linspace(0, 1, 20)          # regression targets
    xtr, ytr, xva, yva, xte, yte = train_val_test_split(x, y, (0.8, 0.0, 0.2), stratify=False, seed=0)
    assert (len(xtr), len(xva), len(xte)) == (16, 0, 4)
    assert np.allclose(y[xtr], ytr) and np.allclose(y[xte], yte)
    # stratified with an empty part is fine too
    yc = np.arange(20) % 2
    out = train_val_test_split(x, yc, (0.8, 0.0, 0.2), seed=0)
    assert [len(a) for a in out[0::2]] == [16, 0, 4]


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(x=np.zeros(5), y=np.zeros(4, int)), ValueError, "x and y"),
    (dict(fractions=(0.5, 0.6)), ValueError, "fractions"),
    (dict(fractions=(0.5, 0.5, 0.1)), ValueError, "fractions"),
    (dict(fractions=(1.0,)), ValueError, "fractions"),
    (dict(fractions=(0.6, 0.2, 0.1, 0.1)), ValueError, "fractions"),
    (dict(fractions=(1.2, -0.2)), ValueError, "fractions"),
    (dict(fractions="abc"), ValueError, "fractions"),
    (dict(y=np.linspace(0, 1, 30)), ValueError, "y"),                  # float targets
    (dict(y=np.zeros((30, 2), int)), ValueError, "y"),                 # one-hot targets
    (dict(y=np.r_[np.zeros(28, int), 1, 1]), ValueError, "class 1"),   # 2 samples, 3 parts
    (dict(y=np.arange(30) % 10, fractions=(0.8, 0.1, 0.1)), ValueError, "val"),  # 3 < 10 classes
])
def test_split_errors(kwargs, exc, match):
    args = dict(x=np.zeros((30, 2)), y=np.arange(30) % 3)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        train_val_test_split(**args, seed=0)


def test_split_fraction_tolerance():
    x, y = np.arange(30), np.arange(30) % 3
    out = train_val_test_split(x, y, (0.7 + 5e-7, 0.1, 0.2), seed=0)
    assert sum(len(a) for a in out[0::2]) == 30


# ==========================================================================
# batches / BatchLoader
# ==========================================================================
def test_batches_cover_each_sample_once():
    x = np.arange(103)[:, None].astype(np.float32)
    y = np.arange(103) * 10
    got_x, got_y, sizes = [], [], []
    for xb, yb in batches(x, y, batch_size=16, seed=0):
        assert np.array_equal(xb[:, 0].astype(int) * 10, yb)   # pairs kept
        got_x.append(xb[:, 0]); got_y.append(yb); sizes.append(len(xb))
    order = np.concatenate(got_x).astype(int)
    assert sizes == [16] * 6 + [7]
    assert np.array_equal(np.sort(order), np.arange(103))
    assert not np.array_equal(order, np.arange(103))             # shuffled


def test_batches_no_shuffle_drop_last_and_x_only():
    x = np.arange(10)
    out = list(batches(x, batch_size=4, shuffle=False))
    assert [b.tolist() for b in out] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    out = list(batches(x, batch_size=4, shuffle=False, drop_last=True))
    assert [b.tolist() for b in out] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    out = list(batches(x, batch_size=3, drop_last=True, seed=1))
    assert len(out) == 3 and all(len(b) == 3 for b in out)
    assert len(set(np.concatenate(out).tolist())) == 9
    # batches are copies
    b = next(iter(batches(x, batch_size=4, shuffle=False)))
    b[:] = -1
    assert np.array_equal(x, np.arange(10))


def test_batches_seed_and_generator():
    x = np.arange(50)
    a = [b.tolist() for b in batches(x, batch_size=7, seed=3)]
    b = [b.tolist() for b in batches(x, batch_size=7, seed=3)]
    c = [b.tolist() for b in batches(x, batch_size=7, seed=np.random.default_rng(3))]
    assert a == b == c
    assert a != [b.tolist() for b in batches(x, batch_size=7, seed=4)]


@pytest.mark.parametrize("n, bs, drop, expected", [
    (100, 10, False, 10), (101, 10, False, 11), (101, 10, True, 10), (5, 10, False, 1), (5, 10, True, 0),
])
def test_loader_len(n, bs, drop, expected):
    loader = BatchLoader(np.zeros((n, 2)), np.zeros(n), batch_size=bs, drop_last=drop, seed=0)
    assert len(loader) == expected
    assert len(list(loader)) == expected


def test_loader_reiterable_new_permutation_each_epoch():
    x = np.arange(64)
    loader = BatchLoader(x, x * 2, batch_size=8, seed=0)
    epochs = []
    for _ in range(3):
        order = []
        for xb, yb in loader:
            assert np.array_equal(yb, xb * 2)
            order.extend(xb.tolist())
        assert sorted(order) == list(range(64))
        epochs.append(order)
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2]
    # a second loader with the same seed sees the same epochs
    again = BatchLoader(x, x * 2, batch_size=8, seed=0)
    assert [[int(v) for xb, _ in again for v in xb] for _ in range(3)] == epochs
    # no shuffle: same order every time
    fixed = BatchLoader(x, batch_size=8, shuffle=False)
    assert np.array_equal(np.concatenate(list(fixed)), x)
    assert np.array_equal(np.concatenate(list(fixed)), x)


def test_loader_state_resume_exact():
    x = np.arange(40)
    a = BatchLoader(x, batch_size=6, seed=11)
    list(a)                                        # epoch 1
    state = a.get_state()
    state = json.loads(json.dumps(state))           # JSON-serialisable
    epoch2 = [b.tolist() for b in a]
    epoch3 = [b.tolist() for b in a]
    b = BatchLoader(x, batch_size=6, seed=999)      # "restarted" run
    b.set_state(state)
    assert [v.tolist() for v in b] == epoch2
    assert [v.tolist() for v in b] == epoch3
    with pytest.raises(ValueError):
        b.set_state({"nope": 1})


def test_loader_transform_applied_to_x_only():
    x = _images(20, 1, 4, 4)
    y = np.arange(20)
    loader = BatchLoader(x, y, batch_size=5, shuffle=False, transform=RandomHorizontalFlip(p=1.0))
    xb, yb = next(iter(loader))
    assert np.array_equal(xb, x[:5, :, :, ::-1]) and np.array_equal(yb, y[:5])


def test_batch_errors():
    with pytest.raises(ValueError, match="batch_size"):
        BatchLoader(np.zeros(4), batch_size=0)
    with pytest.raises(TypeError, match="batch_size"):
        list(batches(np.zeros(4), batch_size=2.5))
    with pytest.raises(ValueError, match="same length"):
        list(batches(np.zeros(4), np.zeros(3)))
    with pytest.raises(TypeError, match="transform"):
        BatchLoader(np.zeros(4), transform=3)


# ==========================================================================
# preprocessing
# ==========================================================================
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_minmax_global_and_per_channel(dtype):
    x = (np.random.default_rng(0).random((10, 3, 4, 5)) * [[[[1]], [[5]], [[-3]]]] + 2).astype(dtype)
    s = MinMaxScaler()
    out = s.fit_transform(x)
    xd = x.astype(np.float64)
    want = (xd - xd.min()) / (xd.max() - xd.min())
    assert out.dtype == dtype and out.shape == x.shape
    np.testing.assert_allclose(out, want, atol=1e-6 if dtype == np.float32 else 1e-12)
    assert out.min() == pytest.approx(0, abs=1e-6) and out.max() == pytest.approx(1, abs=1e-6)

    s = MinMaxScaler(feature_range=(-1, 1), per_channel=True)
    out = s.fit_transform(x)
    mn = xd.min(axis=(0, 2, 3), keepdims=True)
    mx = xd.max(axis=(0, 2, 3), keepdims=True)
    np.testing.assert_allclose(out, (xd - mn) / (mx - mn) * 2 - 1, atol=1e-5 if dtype == np.float32 else 1e-12)
    assert s.data_min.dtype == np.float64 and s.data_min.shape == (3,)
    np.testing.assert_allclose(s.inverse_transform(out), x, rtol=1e-5, atol=1e-5)


def test_minmax_constant_channel_and_test_data():
    x = np.ones((4, 2, 3, 3))
    x[:, 1] = np.arange(4)[:, None, None]
    s = MinMaxScaler(per_channel=True).fit(x)
    out = s.transform(x)
    assert np.all(out[:, 0] == 0) and np.isfinite(out).all()
    # unseen data uses the training range: may leave [0, 1]
    t = s.transform(np.full((1, 2, 3, 3), 6.0))
    assert np.allclose(t[:, 1], 2.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_center_and_standardize_formulas(dtype):
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(20, 3, 6, 6)) * [[[[2]], [[0.5]], [[7]]]] + [[[[1]], [[-4]], [[10]]]]).astype(dtype)
    xd = x.astype(np.float64)
    mean = xd.mean(axis=(0, 2, 3), keepdims=True)
    std = xd.std(axis=(0, 2, 3), keepdims=True)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)

    c = Center()
    out = c.fit_transform(x)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, xd - mean, **tol)
    np.testing.assert_allclose(c.inverse_transform(out), x, **tol)
    assert c.mean.dtype == np.float64 and c.mean.shape == (3,)

    st = Standardize()
    out = st.fit_transform(x)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, (xd - mean) / (std + 1e-7), **tol)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3), dtype=np.float64), 1, atol=1e-5)
    np.testing.assert_allclose(st.inverse_transform(out), x, **tol)

    g = Standardize(per_channel=False, eps=0.0).fit(x)
    np.testing.assert_allclose(g.transform(x), (xd - xd.mean()) / xd.std(), **tol)
    assert np.ndim(g.mean) == 0


def test_standardize_uses_training_statistics_only():
    rng = np.random.default_rng(2)
    train = rng.normal(3.0, 2.0, size=(100, 1, 4, 4))
    test = rng.normal(-5.0, 1.0, size=(10, 1, 4, 4))
    st = Standardize().fit(train)
    out = st.transform(test)
    np.testing.assert_allclose(out, (test - train.mean()) / (train.std() + 1e-7), rtol=1e-12)


def test_preprocessing_2d_features_and_int_input():
    x = np.array([[1, 10], [3, 30], [5, 20]])
    st = Standardize().fit(x)
    out = st.transform(x)
    assert out.dtype == np.float64                       # integers are computed in float64
    np.testing.assert_allclose(out, (x - x.mean(0)) / (x.std(0) + 1e-7))
    assert MinMaxScaler(per_channel=True).fit_transform(x).tolist() == [[0, 0], [0.5, 1], [1, 0.5]]


@pytest.mark.parametrize("make", [
    lambda: MinMaxScaler(feature_range=(-2, 3), per_channel=True),
    lambda: MinMaxScaler(),
    lambda: Center(), lambda: Center(per_channel=False),
    lambda: Standardize(eps=1e-3), lambda: Standardize(per_channel=False),
])
def test_state_dict_round_trip(make, tmp_path):
    x = _images(10, 3, 4, 4, np.float64, seed=3) * 5 - 1
    a = make().fit(x)
    sd = a.state_dict()
    for k, v in sd.items():
        assert isinstance(v, (np.ndarray, float, str)), (k, type(v))
    b = make()
    b.load_state_dict(sd)
    x2 = _images(4, 3, 4, 4, np.float64, seed=4)
    assert np.array_equal(a.transform(x2), b.transform(x2))
    # through an .npz file
    np.savez(tmp_path / "s.npz", **sd)
    c = make()
    with np.load(tmp_path / "s.npz") as f:
        c.load_state_dict(f)
    assert np.array_equal(a.transform(x2), c.transform(x2))
    assert np.array_equal(a.inverse_transform(x2), c.inverse_transform(x2))


def test_preprocessing_errors():
    x = _images(4, 3, 4, 4)
    for cls in (MinMaxScaler, Center, Standardize):
        s = cls()
        with pytest.raises(RuntimeError, match="fit"):
            s.transform(x)
        with pytest.raises(RuntimeError, match="fit"):
            s.inverse_transform(x)
    s = Standardize().fit(x)
    with pytest.raises(ValueError, match="3 channels"):
        s.transform(_images(4, 1, 4, 4))
    with pytest.raises(ValueError, match="per_channel"):
        Standardize().fit(np.arange(5.0))
    with pytest.raises(ValueError, match="Center"):
        Standardize().load_state_dict(Center().fit(x).state_dict())
    with pytest.raises(ValueError, match="per_channel"):
        Standardize(per_channel=False).load_state_dict(s.state_dict())
    with pytest.raises(ValueError, match="feature_range"):
        MinMaxScaler(feature_range=(1, 0))
    with pytest.raises(ValueError, match="eps"):
        Standardize(eps=-1)


# ==========================================================================
# augmentation
# ==========================================================================
@pytest.mark.parametrize("t", [
    RandomHorizontalFlip(p=0.0), RandomVerticalFlip(p=0.0), RandomRotation(0), RandomAffine(),
    RandomAffine(degrees=0, translate=(0, 0), scale=(1, 1)), RandomScale((1.0, 1.0)),
    GaussianNoise(0.0), GaussianNoise(0.5, p=0.0), ColorJitter(), ColorJitter(0, (1, 1), 0),
    RandomCrop(8), RandomCrop((8, 8), padding=0), Compose([]),
], ids=repr)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_identity_parameters_exact(t, dtype):
    x = _images(5, 3, 8, 8, dtype)
    out = t(x)
    assert out.dtype == dtype and out is not x
    assert np.array_equal(out, x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8])
def test_flips_p1_equal_np_flip(dtype):
    x = (_images(4, 2, 5, 7) * 200).astype(dtype)
    assert np.array_equal(RandomHorizontalFlip(p=1.0)(x), np.flip(x, axis=3))
    assert np.array_equal(RandomVerticalFlip(p=1.0)(x), np.flip(x, axis=2))
    assert RandomHorizontalFlip(p=1.0)(x).dtype == dtype


def test_flip_probability_per_image():
    x = _images(2000, 1, 3, 3)
    out = RandomHorizontalFlip(p=0.3, seed=0)(x)
    flipped = np.all(out == x[:, :, :, ::-1], axis=(1, 2, 3))
    same = np.all(out == x, axis=(1, 2, 3))
    assert np.all(flipped ^ same)                      # each image flipped or untouched
    assert abs(flipped.mean() - 0.3) < 0.05


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("angle, k", [(90, 1), (-90, -1), (180, 2), (270, 3)])
def test_rotation_multiples_of_90_equal_rot90(angle, k, dtype):
    x = _images(3, 3, 9, 9, dtype)
    out = RandomRotation((angle, angle))(x)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, np.rot90(x, k, axes=(2, 3)), atol=1e-6)
    x = _images(3, 1, 8, 8, dtype)                     # even size: centre between pixels
    np.testing.assert_allclose(RandomRotation((angle, angle))(x), np.rot90(x, k, axes=(2, 3)), atol=1e-6)


def test_rotation_direction_counter_clockwise():
    # a mark right of the centre moves to the top for +90 degrees (counter-
    # clockwise on screen, as torchvision's rotate), to the bottom for -90.
    x = np.zeros((1, 1, 5, 5))
    x[0, 0, 2, 4] = 1.0
    up = RandomRotation((90, 90))(x)
    assert up[0, 0, 0, 2] == pytest.approx(1.0) and up.sum() == pytest.approx(1.0)
    down = RandomRotation((-90, -90))(x)
    assert down[0, 0, 4, 2] == pytest.approx(1.0)


def test_rotation_corners_zero_filled_and_values_bounded():
    x = np.ones((2, 1, 9, 9), np.float32)
    out = RandomRotation((45, 45))(x)
    assert out[0, 0, 0, 0] == 0 and out[0, 0, 4, 4] == pytest.approx(1.0)
    assert out.min() >= 0 and out.max() <= 1 + 1e-6


def test_affine_against_torch_grid_sample():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    n, size = 6, 11
    x = _images(n, 2, size, size, np.float64, seed=7)
    t = RandomAffine(degrees=180, translate=(0.2, 0.2), scale=(0.6, 1.5), seed=1)
    p = t.sample_params(x)
    ours = t.apply(x, p)
    # theta maps output to input in normalised coordinates (square image, so the
    # pixel-coordinate inverse map carries over after scaling by 2/size)
    a = np.deg2rad(p["angle"])
    c, s, sc = np.cos(a), np.sin(a), p["scale"]
    R = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2) / sc[:, None, None]
    off = -np.einsum("nij,nj->ni", R, p["translate"]) * (2.0 / size)
    theta = torch.from_numpy(np.concatenate([R, off[:, :, None]], axis=2))
    grid = F.affine_grid(theta, (n, 2, size, size), align_corners=False)
    ref = F.grid_sample(torch.from_numpy(x), grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-10)


def test_translation_by_integer_pixels_shifts_content():
    x = _images(40, 2, 8, 10, np.float64, seed=2)
    t = RandomTranslation((0.3, 0.25), seed=0)
    state = t.get_state()
    p = t.sample_params(x)
    t.set_state(state)
    out = t(x)
    tx, ty = p["translate"][:, 0].astype(int), p["translate"][:, 1].astype(int)
    assert np.array_equal(p["translate"], np.round(p["translate"]))         # whole pixels
    assert np.abs(tx).max() <= 3 and np.abs(ty).max() <= 2
    assert len(set(zip(tx.tolist(), ty.tolist()))) > 5                       # varied shifts
    H, W = 8, 10
    for i in range(len(x)):
        want = np.zeros_like(x[i])
        dx, dy = tx[i], ty[i]
        want[:, max(dy, 0):H + min(dy, 0), max(dx, 0):W + min(dx, 0)] = \
            x[i][:, max(-dy, 0):H - max(dy, 0), max(-dx, 0):W - max(dx, 0)]
        assert np.array_equal(out[i], want), (i, dx, dy)


def test_affine_apply_with_explicit_params():
    x = np.zeros((1, 1, 6, 6))
    x[0, 0, 1, 1] = 1
    t = RandomAffine()
    out = t.apply(x, {"angle": [0.0], "translate": [[2.0, 3.0]], "scale": [1.0]})
    assert out[0, 0, 4, 3] == 1 and out.sum() == 1          # moved right 2, down 3
    out = t.apply(x, {"angle": [0.0], "translate": [[0.0, 0.0]], "scale": [1.0]})
    assert np.array_equal(out, x)


def test_scale_zooms_about_centre():
    x = np.zeros((1, 1, 7, 7))
    x[0, 0, 3, 4] = 1.0                                       # one pixel right of the centre (3, 3)
    out = RandomScale((2.0, 2.0))(x)
    # zoom x2: output pixel p reads the input at centre + (p - centre) / 2, so
    # the mark lands two pixels right of the centre, with bilinear half-values
    # around it; mass grows by the area factor 2 * 2
    np.testing.assert_allclose(out[0, 0, 3], [0, 0, 0, 0, 0.5, 1.0, 0.5], atol=1e-12)
    np.testing.assert_allclose(out[0, 0, :, 5], [0, 0, 0.5, 1.0, 0.5, 0, 0], atol=1e-12)
    assert out.sum() == pytest.approx(4.0)
    shrink = RandomScale((0.5, 0.5))(np.ones((1, 1, 8, 8)))
    assert shrink[0, 0, 0, 0] == 0 and shrink[0, 0, 3, 3] == pytest.approx(1.0)   # border filled with 0


@pytest.mark.parametrize("padding_mode", ["constant", "edge", "reflect", "symmetric"])
def test_random_crop_is_window_of_padded_image(padding_mode):
    x = _images(30, 3, 8, 8, np.float64, seed=5)
    t = RandomCrop(8, padding=3, padding_mode=padding_mode, seed=0)
    state = t.get_state()
    p = t.sample_params(x)
    t.set_state(state)
    out = t(x)
    assert out.shape == (30, 3, 8, 8)
    mode = dict(mode=padding_mode) if padding_mode != "constant" else dict(mode="constant", constant_values=0)
    xp = np.pad(x, ((0, 0), (0, 0), (3, 3), (3, 3)), **mode)
    for i in range(len(x)):
        r, c = p["top"][i], p["left"][i]
        assert np.array_equal(out[i], xp[i, :, r:r + 8, c:c + 8])
    assert p["top"].min() >= 0 and p["top"].max() <= 6
    assert len(set(zip(p["top"].tolist(), p["left"].tolist()))) > 10


def test_random_crop_smaller_and_asymmetric_padding():
    x = np.arange(2 * 1 * 6 * 5, dtype=np.float32).reshape(2, 1, 6, 5)
    out = RandomCrop((4, 3), seed=0)(x)
    assert out.shape == (2, 1, 4, 3) and out.dtype == np.float32
    for i in range(2):
        # a window: consecutive rows/cols of the original
        r0 = int(out[i, 0, 0, 0] - x[i, 0, 0, 0]) // 5
        c0 = int(out[i, 0, 0, 0] - x[i, 0, 0, 0]) % 5
        assert np.array_equal(out[i], x[i, :, r0:r0 + 4, c0:c0 + 3])
    out = RandomCrop((8, 5), padding=(0, 1), fill=-1.0, seed=0)(x)    # (left/right, top/bottom)
    assert np.array_equal(out, np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0)), constant_values=-1))
    out = RandomCrop((6, 6), padding=(1, 0, 0, 0), seed=0)(x)          # left only
    assert np.array_equal(out[:, :, :, 1:], x) and np.all(out[:, :, :, 0] == 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gaussian_noise_statistics(dtype):
    x = np.full((64, 3, 32, 32), 0.5, dtype)
    out = GaussianNoise(0.1, seed=0)(x)
    assert out.dtype == dtype
    d = (out - x).astype(np.float64)
    assert abs(d.mean()) < 0.002 and abs(d.std() - 0.1) < 0.002
    per_image = d.std(axis=(1, 2, 3))
    assert np.all(np.abs(per_image - 0.1) < 0.01)
    out = GaussianNoise(0.1, p=0.5, seed=1)(x)
    untouched = np.all(out == x, axis=(1, 2, 3))
    assert 10 < untouched.sum() < 54
    assert np.all(np.abs((out[~untouched] - 0.5).std(axis=(1, 2, 3)) - 0.1) < 0.01)
    out = GaussianNoise(1.0, clip=(0, 1), seed=0)(x)
    assert out.min() == 0 and out.max() == 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_color_jitter_brightness_exact(dtype):
    x = _images(6, 3, 5, 5, dtype)
    out = ColorJitter(brightness=(1.5, 1.5))(x)
    assert out.dtype == dtype
    assert np.array_equal(out, x * dtype(1.5))
    t = ColorJitter(brightness=0.4, seed=0)
    p = t.sample_params(x)
    assert np.all((p["brightness"] >= 0.6) & (p["brightness"] <= 1.4))
    t = ColorJitter(brightness=0.4, seed=0)
    out = t(x)
    np.testing.assert_allclose(out, x * p["brightness"][:, None, None, None].astype(dtype), rtol=1e-6)
    x1 = _images(4, 1, 5, 5, dtype)
    assert np.array_equal(ColorJitter(brightness=(0.5, 0.5), clip=(0, 1))(x1), x1 * dtype(0.5))


def test_color_jitter_contrast_and_saturation_formulas():
    x = _images(5, 3, 6, 6, np.float64, seed=9)
    gray = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    out = ColorJitter(contrast=(0.3, 0.3))(x)
    m = gray.mean(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(out, 0.3 * x + 0.7 * m, rtol=1e-12)
    out = ColorJitter(saturation=(0.0, 0.0))(x)                 # factor 0: grayscale image
    np.testing.assert_allclose(out, np.broadcast_to(gray, x.shape), rtol=1e-12)
    out = ColorJitter(saturation=(2.0, 2.0))(x)
    np.testing.assert_allclose(out, 2 * x - gray, rtol=1e-12)
    # contrast factor 0 gives a flat image at the grayscale mean
    out = ColorJitter(contrast=(0.0, 0.0))(x)
    np.testing.assert_allclose(out, np.broadcast_to(m, x.shape), rtol=1e-12)
    # one channel: saturation does nothing, contrast blends with the image mean
    x1 = _images(3, 1, 6, 6, np.float64)
    assert np.array_equal(ColorJitter(saturation=(3.0, 3.0))(x1), x1)
    np.testing.assert_allclose(ColorJitter(contrast=(0.5, 0.5))(x1),
                               0.5 * x1 + 0.5 * x1.mean(axis=(1, 2, 3), keepdims=True), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_all_transforms_preserve_dtype_shape_and_input(dtype):
    x = _images(7, 3, 8, 8, dtype)
    before = x.copy()
    for t in _all_transforms() + [Compose(_all_transforms())]:
        out = t(x)
        assert out.dtype == dtype, t
        assert out.shape == x.shape, t
        assert not np.shares_memory(out, x), t
        assert np.isfinite(out).all(), t
        assert np.array_equal(x, before), f"{t!r} modified its input"


def test_same_seed_same_output_and_state_round_trip():
    x = _images(9, 3, 8, 8)
    for a, b, c in zip(_all_transforms(0), _all_transforms(0), _all_transforms(1)):
        oa = a(x)
        assert np.array_equal(oa, b(x)), a
        assert not np.array_equal(oa, c(x)), a
        state = json.loads(json.dumps(a.get_state()))
        o1, o2 = a(x), a(x)
        a.set_state(state)
        assert np.array_equal(a(x), o1) and np.array_equal(a(x), o2), a


def test_compose_order_state_and_seed():
    x = _images(4, 1, 6, 6)
    comp = Compose([RandomHorizontalFlip(p=1.0), RandomRotation((90, 90))])
    np.testing.assert_allclose(comp(x), np.rot90(x[:, :, :, ::-1], 1, axes=(2, 3)), atol=1e-6)

    x = _images(16, 3, 8, 8)
    c1 = Compose(_all_transforms(), seed=123)
    c2 = Compose(_all_transforms(), seed=123)
    out1 = c1(x)
    assert np.array_equal(out1, c2(x))
    state = c1.get_state()
    assert len(state["transforms"]) == len(c1)
    json.dumps(state)
    nxt = c1(x)
    assert not np.array_equal(nxt, out1)
    c3 = Compose(_all_transforms(seed=77))
    c3.set_state(state)
    assert np.array_equal(c3(x), nxt)
    # plain functions are allowed (no state)
    c4 = Compose([lambda b: b * 2, RandomVerticalFlip(p=1.0)])
    assert c4.get_state()["transforms"][0] is None
    c4.set_state(c4.get_state())
    assert np.array_equal(c4(x), np.flip(x * 2, axis=2))
    with pytest.raises(ValueError, match="transforms"):
        c4.set_state({"transforms": [None]})


def test_transform_errors():
    x = _images(2, 3, 8, 8)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="p"):
            RandomHorizontalFlip(p=bad)
        with pytest.raises(ValueError, match="p"):
            GaussianNoise(0.1, p=bad)
    with pytest.raises(TypeError, match="p"):
        RandomVerticalFlip(p="0.5")
    with pytest.raises(ValueError, match="size"):
        RandomCrop(0)
    with pytest.raises(ValueError, match="size"):
        RandomCrop((1, 2, 3))
    with pytest.raises(ValueError, match="larger"):
        RandomCrop(10, padding=0)(x)
    with pytest.raises(ValueError, match="padding_mode"):
        RandomCrop(8, padding=1, padding_mode="wrap-ish")
    with pytest.raises(ValueError, match="padding"):
        RandomCrop(8, padding=-1)
    with pytest.raises(ValueError, match="degrees"):
        RandomRotation(-10)
    with pytest.raises(ValueError, match="degrees"):
        RandomRotation((10, -10))
    with pytest.raises(ValueError, match="translate"):
        RandomAffine(translate=(1.5, 0))
    with pytest.raises(ValueError, match="scale"):
        RandomAffine(scale=(0, 1))
    with pytest.raises(ValueError, match="std"):
        GaussianNoise(-1)
    with pytest.raises(ValueError, match="brightness"):
        ColorJitter(brightness=-0.5)
    with pytest.raises(ValueError, match="3 channels|channels"):
        ColorJitter(contrast=0.5)(_images(2, 2, 4, 4))
    with pytest.raises(TypeError, match="callable"):
        Compose([RandomHorizontalFlip(), 3])
    for t in _all_transforms():
        with pytest.raises(ValueError, match=r"\(3, 8, 8\)"):
            t(x[0])
    for t in (RandomRotation(10), GaussianNoise(0.1), ColorJitter(0.2)):
        with pytest.raises(TypeError, match="uint8"):
            t((x * 255).astype(np.uint8))
    with pytest.raises(ValueError, match="bit generator|get_state"):
        RandomHorizontalFlip().set_state({"bit_generator": "MT19937", "state": {}})


def test_full_pipeline_is_vectorised():
    # 512 CIFAR-sized images through every transform. Timing is printed (run
    # with -s to see it), not asserted: the machine may be busy.
    x = np.random.default_rng(0).random((512, 3, 32, 32), dtype=np.float32)
    pipeline = Compose([
        RandomCrop(32, padding=4), RandomHorizontalFlip(), RandomVerticalFlip(), RandomRotation(15),
        RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1)), GaussianNoise(0.05),
        ColorJitter(0.2, 0.2, 0.2),
    ], seed=0)
    pipeline(x[:8])
    t0 = time.perf_counter()
    out = pipeline(x)
    dt = time.perf_counter() - t0
    print(f"\naugmenting 512x3x32x32 through {len(pipeline)} transforms: {dt * 1e3:.1f} ms")
    assert out.shape == x.shape and out.dtype == np.float32 and np.isfinite(out).all()


# ==========================================================================
# datasets
# ==========================================================================
def test_load_digits():
    pytest.importorskip("sklearn")
    x, y = datasets.load_digits()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == np.float32 and x.flags.c_contiguous
    assert y.shape == (1797,) and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0
    assert np.all(x * 16 == np.round(x * 16))              # original 0..16 levels
    assert set(np.unique(y).tolist()) == set(range(10))
    assert np.all(np.bincount(y) >= 170)
    xf, yf, names = datasets.load_digits(return_images=False, return_names=True)
    assert xf.shape == (1797, 64) and np.array_equal(xf.reshape(x.shape), x)
    assert np.array_equal(yf, y)
    assert names == datasets.DIGITS_CLASSES == tuple("0123456789")
    x64, _ = datasets.load_digits(dtype=np.float64)
    assert x64.dtype == np.float64 and np.allclose(x64, x)
    # the usual first steps work on it
    xtr, ytr, xva, yva, xte, yte = train_val_test_split(x, y, seed=0)
    assert len(xtr) + len(xva) + len(xte) == 1797


def test_load_digits_without_sklearn(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "sklearn" or name.startswith("sklearn."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r"scikit-learn.*pyconv-cnn\[data\]"):
        datasets.load_digits()
