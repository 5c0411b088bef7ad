"""Oversampling: 4 orientations x 9 deterministic photometric filters = 36 variants."""

from __future__ import annotations

import numpy as np
import pytest

from training.augment import (
    FILTERS,
    ORIENTATIONS,
    VARIANT_NAMES,
    AugmentConfig,
    orient,
    oversample,
    variant,
    variants,
)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A non-square RGB crop with structure and the full range of values."""
    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, size=(12, 20, 3), dtype=np.uint8)
    img[:4, :6] = 255  # a patch of white background
    return img


def test_variants_are_exactly_36_uint8_of_same_shape(image):
    out = variants(image)
    assert len(out) == 36
    assert [name for name, _ in out] == list(VARIANT_NAMES)
    assert len(set(VARIANT_NAMES)) == 36
    for _, arr in out:
        assert arr.dtype == np.uint8 and arr.shape == image.shape


def test_nine_filters_identity_first_and_four_orientations():
    assert len(FILTERS) == 9
    assert list(FILTERS)[0] == "identity"
    assert ORIENTATIONS == ("as_is", "hflip", "vflip", "hvflip")


def test_first_variant_is_the_image_itself(image):
    name, arr = variants(image)[0]
    assert name == "as_is/identity"
    np.testing.assert_array_equal(arr, image)


def test_orientations_are_the_four_named_flips(image):
    np.testing.assert_array_equal(orient(image, "as_is"), image)
    np.testing.assert_array_equal(orient(image, "hflip"), image[:, ::-1])
    np.testing.assert_array_equal(orient(image, "vflip"), image[::-1, :])
    np.testing.assert_array_equal(orient(image, "hvflip"), np.rot90(image, 2))
    with pytest.raises(ValueError, match="unknown orientation"):
        orient(image, "rot90")


@pytest.mark.parametrize("name", [n for n in FILTERS if n != "identity"])
def test_each_named_filter_changes_the_image(image, name):
    out = FILTERS[name](image)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert not np.array_equal(out, image)


def test_identity_filter_leaves_the_image(image):
    np.testing.assert_array_equal(FILTERS["identity"](image), image)


@pytest.mark.parametrize("name", list(FILTERS))
def test_each_filter_is_deterministic_and_leaves_its_input(image, name):
    before = image.copy()
    np.testing.assert_array_equal(FILTERS[name](image), FILTERS[name](image))
    np.testing.assert_array_equal(image, before)


def test_filters_give_distinct_images(image):
    outs = [fn(image).tobytes() for fn in FILTERS.values()]
    assert len(set(outs)) == 9


def test_stain_filters_keep_white_background_white(image):
    for name in ("hematoxylin", "eosin"):
        assert (FILTERS[name](image)[:4, :6] == 255).all()


def test_stain_shifts_go_bluer_and_pinker():
    grey = np.full((4, 4, 3), 128, dtype=np.uint8)
    h = FILTERS["hematoxylin"](grey)[0, 0].astype(int)
    e = FILTERS["eosin"](grey)[0, 0].astype(int)
    assert h[2] > h[0] and h[2] > h[1]  # bluer: red and green absorbed more
    assert e[0] > e[1] and e[2] > e[1]  # pinker: green absorbed more


def test_variant_by_index_matches_list(image):
    listed = variants(image)
    for i in (0, 8, 9, 17, 35):
        np.testing.assert_array_equal(variant(image, i), listed[i][1])


def test_variants_are_deterministic(image):
    a = variants(image)
    b = variants(image)
    for (na, xa), (nb, xb) in zip(a, b, strict=True):
        assert na == nb
        np.testing.assert_array_equal(xa, xb)


def test_oversample_gives_36x_images_and_labels(image):
    images = np.stack([image, image[::-1].copy(), 255 - image])
    labels = np.array([0, 3, 5])
    out_images, out_labels = oversample(images, labels)
    assert out_images.shape == (108, *image.shape)
    np.testing.assert_array_equal(out_labels, np.repeat(labels, 36))
    np.testing.assert_array_equal(out_images[36], images[1])
    assert np.bincount(out_labels).tolist() == [36, 0, 0, 36, 0, 36]


def test_oversample_repeats_soft_targets_and_arbitrary_payloads(image):
    images = [image, image[:8, :8].copy()]  # crops may differ in size
    soft = np.array([[0.5, 0.5, 0, 0, 0, 0], [0, 0, 0, 0, 0.25, 0.75]])
    out_images, out_soft = oversample(images, soft)
    assert isinstance(out_images, list) and len(out_images) == 72
    assert out_images[40].shape == (8, 8, 3)
    assert out_soft.shape == (72, 6)
    np.testing.assert_array_equal(out_soft[:36], np.tile(soft[0], (36, 1)))
    _, payloads = oversample(images, [{"id": 1}, {"id": 2}])
    assert payloads == [{"id": 1}] * 36 + [{"id": 2}] * 36


def test_oversample_switched_off_returns_inputs(image):
    images = np.stack([image, image])
    labels = np.array([1, 2])
    out_images, out_labels = oversample(images, labels, enabled=False)
    assert out_images is images and out_labels is labels


def test_oversample_rejects_length_mismatch(image):
    with pytest.raises(ValueError, match="2 images but 1 labels"):
        oversample(np.stack([image, image]), np.array([0]))


def test_filters_reject_non_uint8_rgb(image):
    with pytest.raises(ValueError, match="uint8"):
        FILTERS["brighten"](image.astype(np.float32))
    with pytest.raises(ValueError, match="RGB"):
        FILTERS["blur"](image[..., 0])


def test_augment_config_defaults_and_switches():
    cfg = AugmentConfig()
    assert (cfg.oversample, cfg.scale, cfg.random_erasing) == (True, True, True)
    assert cfg.scale_range == (0.8, 1.2) and cfg.erasing_prob == 0.5
    assert cfg.erasing_area == (0.02, 0.2)
    off = AugmentConfig(oversample=False, scale=False, random_erasing=False)
    assert not (off.oversample or off.scale or off.random_erasing)
    assert off.to_dict()["scale_range"] == [0.8, 1.2]
    with pytest.raises(ValueError, match="scale_range"):
        AugmentConfig(scale_range=(1.2, 0.8))
    with pytest.raises(ValueError, match="erasing_prob"):
        AugmentConfig(erasing_prob=1.5)
    with pytest.raises(ValueError, match="erasing_area"):
        AugmentConfig(erasing_area=(0.0, 0.2))
