"""Detector training augmentation: the 36x oversampling moves boxes with the pixels, reuses the
classifier's filters, and mosaic places four images around a centre with their boxes."""

from __future__ import annotations

import numpy as np
import pytest

from training import augment as image_augment
from training.detection import augment
from training.detection.letterbox import FILL_VALUE

SIZE = 64


def _marked(width: int, height: int, box, value: int = 200, background: int = 20) -> np.ndarray:
    """A flat image with the pixels of an integer xyxy box set to ``value`` in every channel."""
    image = np.full((height, width, 3), background, dtype=np.uint8)
    x1, y1, x2, y2 = (int(v) for v in box)
    image[y1:y2, x1:x2] = value
    return image


def _box_of(image: np.ndarray, value: int) -> list[float]:
    """The tight xyxy box (pixel edges) of the pixels equal to ``value``."""
    ys, xs = np.nonzero(np.all(image == value, axis=2))
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def _noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("orientation", image_augment.ORIENTATIONS)
def test_oriented_boxes_cover_the_same_pixels_as_before(orientation):
    box = [5, 9, 17, 30]
    image = _marked(40, 48, box)
    flipped = image_augment.orient(image, orientation)
    moved = augment.orient_boxes([box], 40, 48, orientation)
    assert moved.tolist() == [_box_of(flipped, 200)]


@pytest.mark.parametrize("orientation", image_augment.ORIENTATIONS)
def test_orienting_boxes_twice_gives_them_back(orientation):
    boxes = np.array([[0.5, 2.25, 10.0, 31.0], [3.0, 4.0, 40.0, 48.0]])
    once = augment.orient_boxes(boxes, 40, 48, orientation)
    np.testing.assert_array_equal(augment.orient_boxes(once, 40, 48, orientation), boxes)


def test_variant_pixels_are_the_classifier_oversampling_variants():
    image = _noise(24, 32)
    boxes = np.array([[1.0, 2.0, 11.0, 20.0]])
    for index in range(augment.VARIANTS_PER_IMAGE):
        pixels, moved = augment.variant(image, boxes, index)
        np.testing.assert_array_equal(pixels, image_augment.variant(image, index))
        orientation = image_augment.ORIENTATIONS[index // len(image_augment.FILTERS)]
        np.testing.assert_array_equal(moved, augment.orient_boxes(boxes, 32, 24, orientation))


def test_variants_come_in_the_order_of_their_names_starting_with_the_image_itself():
    image = _noise(16, 20, seed=1)
    boxes = np.array([[2.0, 3.0, 9.0, 12.0]])
    out = augment.variants(image, boxes)
    assert [name for name, _, _ in out] == list(augment.VARIANT_NAMES)
    np.testing.assert_array_equal(out[0][1], image)
    np.testing.assert_array_equal(out[0][2], boxes)
    for index in (5, 13, 35):
        pixels, moved = augment.variant(image, boxes, index)
        np.testing.assert_array_equal(out[index][1], pixels)
        np.testing.assert_array_equal(out[index][2], moved)


def test_variant_refuses_an_index_outside_the_36():
    with pytest.raises(ValueError, match="0..35"):
        augment.variant(_noise(8, 8), np.zeros((0, 4)), 36)


def test_oversampling_gives_36_variants_per_image_with_classes_repeated():
    images = [_noise(16, 16, seed=0), _noise(12, 20, seed=1)]
    boxes = [np.array([[1.0, 1.0, 5.0, 6.0]]), np.zeros((0, 4))]
    classes = [np.array([3]), np.zeros(0, dtype=np.int64)]
    out_images, out_boxes, out_classes = augment.oversample(images, boxes, classes)
    assert len(out_images) == len(out_boxes) == len(out_classes) == 72
    assert all(c.tolist() == [3] for c in out_classes[:36])
    assert all(b.shape == (0, 4) for b in out_boxes[36:])
    np.testing.assert_array_equal(out_images[36 + 9], image_augment.variant(images[1], 9))


def test_oversampling_switched_off_returns_the_inputs():
    images = [_noise(8, 8)]
    boxes = [np.array([[1.0, 1.0, 5.0, 6.0]])]
    classes = [np.array([0])]
    out_images, out_boxes, out_classes = augment.oversample(images, boxes, classes, enabled=False)
    assert out_images[0] is images[0] and out_boxes[0] is boxes[0] and out_classes[0] is classes[0]


def test_clipping_drops_boxes_left_without_area():
    boxes = np.array([[-5.0, -5.0, 10.0, 10.0], [70.0, 10.0, 90.0, 20.0], [10.0, 10.0, 10.0, 30.0]])
    kept, classes = augment.clip_boxes(boxes, [0, 1, 2], 64, 64)
    assert kept.tolist() == [[0.0, 0.0, 10.0, 10.0]]
    assert classes.tolist() == [0]


def _quadrant_images():
    """Four SIZE x SIZE images, each flat (40, 80, 120, 160) with one box marked 250; with the
    centre at (24, 40) the first box is cut by its quadrant's edges, the others stay whole."""
    boxes = [[30, 10, 50, 30], [2, 30, 20, 50], [44, 4, 60, 20], [10, 5, 30, 20]]
    images = [_marked(SIZE, SIZE, b, value=250, background=40 * (k + 1)) for k, b in enumerate(boxes)]
    return images, [np.array([b], dtype=float) for b in boxes], [np.array([k]) for k in range(4)]


def test_mosaic_puts_each_image_in_its_quadrant_with_a_corner_on_the_centre():
    images, boxes, classes = _quadrant_images()
    cx, cy = 24, 40
    canvas, _, _ = augment.mosaic(images, boxes, classes, SIZE, (cx, cy), min_visible=0.0)
    assert canvas.shape == (SIZE, SIZE, 3) and canvas.dtype == np.uint8
    # each quadrant shows the part of its image nearest the centre
    np.testing.assert_array_equal(canvas[:cy, :cx], images[0][SIZE - cy :, SIZE - cx :])
    np.testing.assert_array_equal(canvas[:cy, cx:], images[1][SIZE - cy :, : SIZE - cx])
    np.testing.assert_array_equal(canvas[cy:, :cx], images[2][: SIZE - cy, SIZE - cx :])
    np.testing.assert_array_equal(canvas[cy:, cx:], images[3][: SIZE - cy, : SIZE - cx])


def test_mosaic_boxes_are_shifted_with_their_images_and_clipped_to_their_quadrant():
    images, boxes, classes = _quadrant_images()
    cx, cy = 24, 40
    canvas, out, out_classes = augment.mosaic(images, boxes, classes, SIZE, (cx, cy),
                                              min_size=0.0, min_visible=0.0)
    expected = [
        [30 - 40, 10 - 24, 50 - 40, 30 - 24],  # image 0 sits at (cx - 64, cy - 64) = (-40, -24)
        [2 + cx, 30 - 24, 20 + cx, 50 - 24],  # image 1 at (cx, cy - 64)
        [44 - 40, 4 + cy, 60 - 40, 20 + cy],  # image 2 at (cx - 64, cy)
        [10 + cx, 5 + cy, 30 + cx, 20 + cy],  # image 3 at (cx, cy)
    ]
    regions = [(0, 0, cx, cy), (cx, 0, SIZE, cy), (0, cy, cx, SIZE), (cx, cy, SIZE, SIZE)]
    clipped = [[max(box[0], region[0]), max(box[1], region[1]), min(box[2], region[2]),
                min(box[3], region[3])] for box, region in zip(expected, regions, strict=True)]
    assert clipped[0] == [0, 0, 10, 6] and clipped[1:] == expected[1:]
    assert out.tolist() == [[float(v) for v in box] for box in clipped]
    assert out_classes.tolist() == [0, 1, 2, 3]
    for box in out.astype(int):  # every kept box lies on its marked pixels
        assert np.all(canvas[box[1] : box[3], box[0] : box[2]] == 250)


def test_mosaic_drops_slivers_and_boxes_with_little_left_visible():
    images = [np.full((SIZE, SIZE, 3), 90, dtype=np.uint8) for _ in range(4)]
    # image 3 lands at (32, 32): its first box keeps 1 px of width, its second half of its area
    boxes = [np.zeros((0, 4))] * 3 + [np.array([[-9.0, 0.0, 1.0, 20.0], [-10.0, 0.0, 10.0, 20.0],
                                                [0.0, 0.0, 20.0, 20.0]])]
    classes = [np.zeros(0, dtype=np.int64)] * 3 + [np.array([0, 1, 2])]
    _, out, out_classes = augment.mosaic(images, boxes, classes, SIZE, (32, 32),
                                         min_size=2.0, min_visible=0.6)
    assert out_classes.tolist() == [2]
    _, _, out_classes = augment.mosaic(images, boxes, classes, SIZE, (32, 32),
                                       min_size=2.0, min_visible=0.4)
    assert out_classes.tolist() == [1, 2]
    _, _, out_classes = augment.mosaic(images, boxes, classes, SIZE, (32, 32),
                                       min_size=0.5, min_visible=0.0)
    assert out_classes.tolist() == [0, 1, 2]


def test_mosaic_scales_each_image_as_letterboxing_would_and_fills_the_rest_grey():
    wide = _marked(2 * SIZE, SIZE, [20, 10, 60, 50], value=250, background=70)  # scaled by 1/2
    images = [wide] + [np.full((SIZE, SIZE, 3), 30, dtype=np.uint8)] * 3
    boxes = [np.array([[20.0, 10.0, 60.0, 50.0]])] + [np.zeros((0, 4))] * 3
    classes = [np.array([4])] + [np.zeros(0, dtype=np.int64)] * 3
    canvas, out, out_classes = augment.mosaic(images, boxes, classes, SIZE, (SIZE, SIZE))
    # the whole image, now 64 x 32, sits in the bottom-right corner of the top-left quadrant
    assert out.tolist() == [[10.0, 32.0 + 5.0, 30.0, 32.0 + 25.0]]
    assert out_classes.tolist() == [4]
    assert np.all(canvas[:32] == FILL_VALUE)
    assert np.all(canvas[32 + 6 : 32 + 24, 11:29] == 250)


def test_random_mosaic_is_reproducible_and_keeps_the_centre_in_range():
    images = [_noise(SIZE, SIZE, seed=k) for k in range(4)]
    boxes = [np.array([[8.0, 8.0, 40.0, 40.0]])] * 4
    classes = [np.array([k]) for k in range(4)]
    first = augment.random_mosaic(images, boxes, classes, SIZE, np.random.default_rng(7))
    again = augment.random_mosaic(images, boxes, classes, SIZE, np.random.default_rng(7))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    for seed in range(20):
        fx, fy = np.random.default_rng(seed).uniform(0.25, 0.75, size=2)
        cx, cy = round(fx * SIZE), round(fy * SIZE)
        canvas, _, _ = augment.random_mosaic(images, boxes, classes, SIZE, np.random.default_rng(seed))
        np.testing.assert_array_equal(canvas[cy:, cx:], images[3][: SIZE - cy, : SIZE - cx])
        assert 16 <= cx <= 48 and 16 <= cy <= 48


def test_mosaic_needs_four_images():
    with pytest.raises(ValueError, match="4 images"):
        augment.mosaic([_noise(8, 8)] * 3, [np.zeros((0, 4))] * 3, [np.zeros(0)] * 3, 32, (16, 16))
