"""tf.data pipelines: oversampling before shuffling, on-the-fly augmentation, plain evaluation."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from training.augment import AugmentConfig, oversample  # noqa: E402
from training.classifier.data import eval_dataset, steps_per_epoch, train_dataset  # noqa: E402

OFF = AugmentConfig(oversample=False, scale=False, random_erasing=False)
N, SIDE = 3, 32


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    images = rng.integers(0, 256, size=(N, SIDE, SIDE, 3), dtype=np.uint8)
    targets = np.eye(6, dtype=np.float32)[[0, 2, 5]]
    return images, targets


def _collect(ds):
    xs, ys = [], []
    for x, y in ds.as_numpy_iterator():
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def _sorted_rows(images, targets):
    flat = np.concatenate([images.reshape(len(images), -1), targets], axis=1)
    return flat[np.lexsort(flat.T[::-1])]


def test_train_epoch_has_36n_examples_with_oversampling(data):
    images, targets = data
    cfg = AugmentConfig(scale=False, random_erasing=False)
    ds = train_dataset(images, targets, 32, cfg, seed=1)
    x, y = _collect(ds)
    assert x.shape == (36 * N, SIDE, SIDE, 3) and y.shape == (36 * N, 6)
    assert int(ds.cardinality()) == steps_per_epoch(N, 32, cfg) == 4  # known to Keras' fit


def test_train_epoch_has_n_examples_without_oversampling(data):
    images, targets = data
    x, _ = _collect(train_dataset(images, targets, 2, AugmentConfig(oversample=False), seed=1))
    assert x.shape == (N, SIDE, SIDE, 3)


def test_oversampled_epoch_is_the_36_variants_shuffled(data):
    images, targets = data
    x, y = _collect(
        train_dataset(images, targets, 64, AugmentConfig(scale=False, random_erasing=False), seed=3)
    )
    want_x, want_y = oversample(images, targets)
    np.testing.assert_array_equal(
        _sorted_rows(x, y), _sorted_rows(want_x.astype(np.float32) / 255.0, want_y)
    )
    expected_order = want_x.astype(np.float32) / 255.0
    assert not np.array_equal(x, expected_order)  # shuffled, not in variant order


def test_all_switches_off_gives_the_images_scaled(data):
    images, targets = data
    x, y = _collect(train_dataset(images, targets, 8, OFF, seed=5))
    assert x.dtype == np.float32
    np.testing.assert_array_equal(
        _sorted_rows(x, y), _sorted_rows(images.astype(np.float32) / 255.0, targets)
    )


def test_eval_dataset_is_never_augmented(data):
    images, targets = data
    x, y = _collect(eval_dataset(images, targets, 2))
    np.testing.assert_array_equal(x, images.astype(np.float32) / 255.0)
    np.testing.assert_array_equal(y, targets)


def test_eval_dataset_resizes_only_to_input_size(data):
    images, targets = data
    x, _ = _collect(eval_dataset(images, targets, 4, input_size=16))
    assert x.shape == (N, 16, 16, 3)
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_train_dataset_is_deterministic_for_a_seed(data):
    images, targets = data
    cfg = AugmentConfig(oversample=False, erasing_prob=1.0)
    a = _collect(train_dataset(images, targets, 2, cfg, seed=42))
    b = _collect(train_dataset(images, targets, 2, cfg, seed=42))
    c = _collect(train_dataset(images, targets, 2, cfg, seed=43))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_each_epoch_redraws_the_augmentation(data):
    images, targets = data
    ds = train_dataset(
        images, targets, 8, AugmentConfig(oversample=False, erasing_prob=1.0), seed=9
    )
    first, second = _collect(ds), _collect(ds)
    assert not np.array_equal(first[0], second[0])


def test_random_erasing_fills_one_rectangle(data):
    images, targets = data
    cfg = AugmentConfig(oversample=False, scale=False, erasing_prob=1.0, erasing_area=(0.1, 0.1))
    x, y = _collect(train_dataset(images, targets, 8, cfg, seed=2))
    for xi, yi in zip(x, y, strict=True):
        src = images[int(np.argmax(yi @ targets.T))].astype(np.float32) / 255.0
        changed = np.any(xi != src, axis=-1)
        rows, cols = np.nonzero(changed)
        assert rows.size > 0
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert box <= 0.1 * SIDE * SIDE * 1.4  # about 10% of the area, rounding allowed
        assert changed.sum() >= 0.9 * box  # a filled rectangle (random values rarely match)


def test_random_scale_keeps_size_and_range(data):
    images, targets = data
    cfg = AugmentConfig(oversample=False, random_erasing=False, scale_range=(0.6, 1.5))
    x, _ = _collect(train_dataset(images, targets, 8, cfg, seed=4, input_size=24))
    assert x.shape == (N, 24, 24, 3)
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_train_dataset_rejects_mismatched_targets(data):
    images, targets = data
    with pytest.raises(ValueError, match="targets"):
        train_dataset(images, targets[:2], 2, OFF)
