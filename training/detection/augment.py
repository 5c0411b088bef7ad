"""Detector training augmentation: the paper's 36x oversampling with the boxes carried along, and
mosaic (YOLOv4, Bochkovskiy et al. 2020, section 3.3), each switchable.

Pure module (NumPy + OpenCV; no Django, no TensorFlow import). The tf.data pipeline that draws
from it is in ``training/detector/data.py``; validation and test images are never augmented.

Oversampling (paper, section 2.2 and Figure 1A): each training image becomes 4 orientations x
9 photometric filters = 36 variants, the same ones the classifier's crops get
(``training.augment``: ``ORIENTATIONS``, ``FILTERS``, variant ``i`` is orientation ``i // 9``
through filter ``i % 9``). The filters change pixels only; the orientations move the boxes too.
For an image W pixels wide and H high, boxes xyxy::

    hflip   x1' = W - x2, x2' = W - x1           (y unchanged)
    vflip   y1' = H - y2, y2' = H - y1           (x unchanged)
    hvflip  both

Pixel ``c`` (covering [c, c + 1)) goes to ``W - 1 - c`` (covering [W - 1 - c, W - c)), so a box
keeps exactly the pixels it covered. Class ids never change.

Mosaic: four training images share one canvas of the network's input size S. A centre
``(cx, cy)`` is drawn uniformly in ``centre_range`` times the canvas side (by default the middle
half, as Ultralytics' 2S canvas with its centre in [S/2, 3S/2] and the crop back to S). Each
image is first scaled as letterboxing would scale it (longer side to S, aspect kept, the same
rounding as ``letterbox``), then placed with one corner on the centre: image 0 above-left of it,
1 above-right, 2 below-left, 3 below-right, so each fills its quadrant from the centre outwards
with the part of it nearest the centre. What no image covers stays mid grey (128, the letterbox
fill). Boxes are scaled, shifted and clipped to their image's quadrant; a clipped box is dropped
when either side is under ``min_size`` pixels or less than ``min_visible`` of its area on the
canvas is left (a sliver at the quadrant's edge is not worth teaching as a whole cluster).

Boxes are xyxy pixels (float64), classes int64; every function returns new arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from training import augment as image_augment
from training.augment import FILTERS, ORIENTATIONS, VARIANT_NAMES, VARIANTS_PER_IMAGE
from training.detection.boxes import as_boxes
from training.detection.letterbox import FILL_VALUE, input_hw, letterbox_geometry

__all__ = [
    "MIN_BOX_SIZE",
    "MIN_VISIBLE",
    "MOSAIC_CENTRE_RANGE",
    "VARIANT_NAMES",
    "VARIANTS_PER_IMAGE",
    "clip_boxes",
    "mosaic",
    "orient_boxes",
    "oversample",
    "random_mosaic",
    "variant",
    "variants",
]

#: A mosaic box narrower or lower than this many canvas pixels after clipping is dropped.
MIN_BOX_SIZE = 2.0
#: A mosaic box with less than this share of its (canvas) area left after clipping is dropped.
MIN_VISIBLE = 0.2
#: The mosaic centre, as a fraction of the canvas side, is drawn uniformly from this range.
MOSAIC_CENTRE_RANGE = (0.25, 0.75)


def _classes(classes, n: int) -> np.ndarray:
    c = np.asarray(classes).reshape(-1)
    if c.shape[0] != n:
        raise ValueError(f"{n} boxes but {c.shape[0]} classes")
    if c.size and not np.all(c == np.round(c)):
        raise ValueError("classes must be integer class ids")
    return c.astype(np.int64)


def orient_boxes(boxes, width: int, height: int, orientation: str) -> np.ndarray:
    """xyxy ``boxes`` of a ``width`` x ``height`` image, moved as ``training.augment.orient``
    moves its pixels (module docstring)."""
    b = as_boxes(boxes).copy()
    if orientation not in ORIENTATIONS:
        raise ValueError(f"unknown orientation {orientation!r}; expected one of {ORIENTATIONS}")
    if orientation in ("hflip", "hvflip"):
        b[:, [0, 2]] = float(width) - b[:, [2, 0]]
    if orientation in ("vflip", "hvflip"):
        b[:, [1, 3]] = float(height) - b[:, [3, 1]]
    return b


def variant(image: np.ndarray, boxes, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Variant ``index`` (0..35) of an image and its xyxy boxes: ``(pixels, boxes)``.

    The pixels are exactly ``training.augment.variant(image, index)``.
    """
    if not 0 <= int(index) < VARIANTS_PER_IMAGE:
        raise ValueError(f"variant index must be in 0..{VARIANTS_PER_IMAGE - 1}, got {index}")
    o, _ = divmod(int(index), len(FILTERS))
    pixels = image_augment.variant(image, int(index))
    return pixels, orient_boxes(boxes, image.shape[1], image.shape[0], ORIENTATIONS[o])


def variants(image: np.ndarray, boxes) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The 36 variants of an image with its boxes, as ("orientation/filter", pixels, boxes), in
    ``VARIANT_NAMES`` order (the first is the image itself)."""
    out = []
    for o in ORIENTATIONS:
        oriented = image_augment.orient(image, o)
        moved = orient_boxes(boxes, image.shape[1], image.shape[0], o)
        for fname, fn in FILTERS.items():
            out.append((f"{o}/{fname}", fn(oriented), moved.copy()))
    return out


def oversample(images: Sequence[np.ndarray], boxes: Sequence, classes: Sequence, enabled: bool = True):
    """A detection training set 36x: ``(images, boxes, classes)`` lists, each image's 36
    variants consecutively (``VARIANT_NAMES`` order), its classes repeated.

    Holds every variant in memory; the training pipeline renders them one at a time instead
    (``variant``). ``enabled=False`` returns the inputs as lists, unchanged.
    """
    n = len(images)
    if len(boxes) != n or len(classes) != n:
        raise ValueError(f"{n} images, {len(boxes)} box arrays, {len(classes)} class arrays")
    if not enabled:
        return list(images), list(boxes), list(classes)
    out_images, out_boxes, out_classes = [], [], []
    for image, b, c in zip(images, boxes, classes, strict=True):
        cls = _classes(c, as_boxes(b).shape[0])
        for _, pixels, moved in variants(image, b):
            out_images.append(pixels)
            out_boxes.append(moved)
            out_classes.append(cls.copy())
    return out_images, out_boxes, out_classes


def clip_boxes(
    boxes, classes, width: float, height: float, *, min_size: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes clipped to ``[0, width] x [0, height]``; those left with a side of ``min_size``
    pixels or less (with the default 0: no area) are dropped with their classes."""
    b = as_boxes(boxes).copy()
    c = _classes(classes, b.shape[0])
    b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0.0, float(width))
    b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0.0, float(height))
    keep = (b[:, 2] - b[:, 0] > min_size) & (b[:, 3] - b[:, 1] > min_size)
    return b[keep], c[keep]


def _tile(image: np.ndarray, size_hw: tuple[int, int]) -> tuple[np.ndarray, float, float]:
    """The image scaled as letterboxing scales it (no padding), with its x and y factors."""
    info = letterbox_geometry(image.shape[1], image.shape[0], size_hw)
    if (info.resized_width, info.resized_height) == (image.shape[1], image.shape[0]):
        return image, 1.0, 1.0
    resized = cv2.resize(
        np.ascontiguousarray(image),
        (info.resized_width, info.resized_height),
        interpolation=cv2.INTER_LINEAR,
    )
    return resized, info.scale_x, info.scale_y


def mosaic(
    images: Sequence[np.ndarray],
    boxes: Sequence,
    classes: Sequence,
    size,
    centre: tuple[int, int],
    *,
    min_size: float = MIN_BOX_SIZE,
    min_visible: float = MIN_VISIBLE,
    fill: int = FILL_VALUE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Four images (uint8 (H, W, 3), any sizes) with their xyxy boxes and classes on one canvas
    of ``size`` (int or (height, width)) split at ``centre`` = (cx, cy) canvas pixels.

    Returns ``(canvas uint8 (Sh, Sw, 3), boxes (n, 4) xyxy canvas pixels, classes (n,))``,
    boxes of image 0 first. See the module docstring for the layout and the dropping rule.
    """
    if not (len(images) == len(boxes) == len(classes) == 4):
        raise ValueError(
            f"mosaic needs 4 images, boxes and classes, got {len(images)}, {len(boxes)}, "
            f"{len(classes)}"
        )
    if not 0.0 <= min_visible <= 1.0:
        raise ValueError(f"min_visible must be in [0, 1], got {min_visible}")
    sh, sw = input_hw(size)
    cx, cy = int(centre[0]), int(centre[1])
    if not (0 <= cx <= sw and 0 <= cy <= sh):
        raise ValueError(f"centre {centre} is outside the {sw} x {sh} canvas")
    canvas = np.full((sh, sw, 3), fill, dtype=np.uint8)
    regions = ((0, 0, cx, cy), (cx, 0, sw, cy), (0, cy, cx, sh), (cx, cy, sw, sh))
    out_boxes, out_classes = [], []
    for k, (image, b, c) in enumerate(zip(images, boxes, classes, strict=True)):
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
            raise ValueError(f"image {k}: need uint8 (H, W, 3), got {image.dtype} {image.shape}")
        b = as_boxes(b)
        c = _classes(c, b.shape[0])
        tile, fx, fy = _tile(image, (sh, sw))
        th, tw = tile.shape[:2]
        ox = cx - tw if k in (0, 2) else cx
        oy = cy - th if k in (0, 1) else cy
        rx0, ry0, rx1, ry1 = regions[k]
        x0, y0 = max(ox, rx0), max(oy, ry0)
        x1, y1 = min(ox + tw, rx1), min(oy + th, ry1)
        if x1 <= x0 or y1 <= y0:
            continue
        canvas[y0:y1, x0:x1] = tile[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
        if b.shape[0] == 0:
            continue
        placed = b * np.array([fx, fy, fx, fy]) + np.array([ox, oy, ox, oy], dtype=np.float64)
        clipped = placed.copy()
        clipped[:, [0, 2]] = np.clip(placed[:, [0, 2]], x0, x1)
        clipped[:, [1, 3]] = np.clip(placed[:, [1, 3]], y0, y1)
        w, h = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
        full = (placed[:, 2] - placed[:, 0]) * (placed[:, 3] - placed[:, 1])
        visible = np.divide(w * h, full, out=np.zeros_like(full), where=full > 0)
        keep = (w >= min_size) & (h >= min_size) & (w > 0) & (h > 0) & (visible >= min_visible)
        out_boxes.append(clipped[keep])
        out_classes.append(c[keep])
    if not out_boxes:
        return canvas, np.zeros((0, 4)), np.zeros(0, dtype=np.int64)
    return canvas, np.concatenate(out_boxes), np.concatenate(out_classes)


def random_mosaic(
    images: Sequence[np.ndarray],
    boxes: Sequence,
    classes: Sequence,
    size,
    rng: np.random.Generator,
    *,
    centre_range: tuple[float, float] = MOSAIC_CENTRE_RANGE,
    min_size: float = MIN_BOX_SIZE,
    min_visible: float = MIN_VISIBLE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``mosaic`` at a centre drawn from ``rng``: each coordinate uniformly in ``centre_range``
    times the canvas side, rounded to a whole pixel. Reproducible for a seeded ``rng``."""
    lo, hi = (float(v) for v in centre_range)
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"centre_range must be (lo, hi) with 0 <= lo <= hi <= 1, got {centre_range}")
    sh, sw = input_hw(size)
    fx, fy = rng.uniform(lo, hi, size=2)
    centre = (int(round(fx * sw)), int(round(fy * sh)))
    return mosaic(images, boxes, classes, (sh, sw), centre, min_size=min_size,
                  min_visible=min_visible)
