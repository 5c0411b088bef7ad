"""Box arrays in pixels: format conversions and pairwise IoU.

Pure NumPy module (no Django, no TensorFlow import). Boxes are float arrays whose last axis has
4 values; the formats are named in ``training/detection/__init__.py`` (xyxy, cxcywh, xywh).
"""

from __future__ import annotations

import numpy as np


def as_boxes(boxes, what: str = "boxes") -> np.ndarray:
    """``boxes`` as a float64 (N, 4) array (an empty input gives shape (0, 4)); all finite."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{what} must have shape (N, 4), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} must be finite")
    return arr


def xyxy_to_cxcywh(boxes) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64)
    return np.concatenate([(b[..., :2] + b[..., 2:]) / 2.0, b[..., 2:] - b[..., :2]], axis=-1)


def cxcywh_to_xyxy(boxes) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64)
    half = b[..., 2:] / 2.0
    return np.concatenate([b[..., :2] - half, b[..., :2] + half], axis=-1)


def xywh_to_xyxy(boxes) -> np.ndarray:
    """Top-left corner and size (``annotation.geometry.Box``, COCO) to corners."""
    b = np.asarray(boxes, dtype=np.float64)
    return np.concatenate([b[..., :2], b[..., :2] + b[..., 2:]], axis=-1)


def xyxy_to_xywh(boxes) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64)
    return np.concatenate([b[..., :2], b[..., 2:] - b[..., :2]], axis=-1)


def box_area(boxes) -> np.ndarray:
    """Area of xyxy boxes; an inverted box has area 0."""
    b = np.asarray(boxes, dtype=np.float64)
    return np.clip(b[..., 2] - b[..., 0], 0.0, None) * np.clip(b[..., 3] - b[..., 1], 0.0, None)


def box_iou(a, b) -> np.ndarray:
    """(N, M) IoU of xyxy boxes ``a`` (N, 4) against ``b`` (M, 4); 0 where the union is empty."""
    a = as_boxes(a, "a")
    b = as_boxes(b, "b")
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0.0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    out = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def wh_iou(a, b) -> np.ndarray:
    """(N, M) IoU of sizes ``a`` (N, 2) and ``b`` (M, 2) as boxes sharing their top-left corner.

    The k-means distance for anchors (YOLOv2, Darknet's calc_anchors) and the encoder's anchor
    match: only the shapes are compared, never the positions.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 2)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 2)
    inter = np.minimum(a[:, None, 0], b[None, :, 0]) * np.minimum(a[:, None, 1], b[None, :, 1])
    union = (a[:, 0] * a[:, 1])[:, None] + (b[:, 0] * b[:, 1])[None, :] - inter
    out = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=union > 0)
    return out
