"""Cluster crops (pure; no Django import): the one crop used for training, inference and demos.

One crop per cluster: the box grown by a context margin on each side, made square around the box
centre (cells keep their aspect ratio), cut from the image (padded with the image's border colour
where it leaves the frame) and resized to the model's input.
"""

from __future__ import annotations

import cv2
import numpy as np

from annotation.geometry import Box


def crop_box(image: np.ndarray, box: Box, *, size: int, margin: float = 0.25) -> np.ndarray:
    """A size x size uint8 RGB crop around ``box`` with ``margin`` (fraction of the box side).

    The cut is exactly square (its side the box's longer side plus twice the margin, rounded),
    so resizing never stretches the cells.
    """
    if size < 1:
        raise ValueError("size must be positive")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    height, width = image.shape[:2]
    side = max(box.width, box.height) * (1.0 + 2.0 * margin)
    cx, cy = box.center
    x1, y1 = int(round(cx - side / 2)), int(round(cy - side / 2))
    cut = max(1, int(round(side)))
    x2, y2 = x1 + cut, y1 + cut
    pad = [max(0, -y1), max(0, y2 - height), max(0, -x1), max(0, x2 - width)]
    if any(pad):
        image = cv2.copyMakeBorder(image, pad[0], pad[1], pad[2], pad[3], cv2.BORDER_REPLICATE)
        x1, x2, y1, y2 = x1 + pad[2], x2 + pad[2], y1 + pad[0], y2 + pad[0]
    crop = image[y1:y2, x1:x2]
    interpolation = cv2.INTER_AREA if cut > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interpolation)


def crops_for_image(image: np.ndarray, boxes: list[Box], *, size: int, margin: float = 0.25) -> np.ndarray:
    """``crop_box`` of every box, stacked as (n, size, size, 3) uint8 (n may be 0)."""
    if not boxes:
        return np.zeros((0, size, size, 3), dtype=np.uint8)
    return np.stack([crop_box(image, b, size=size, margin=margin) for b in boxes])
