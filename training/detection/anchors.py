"""Anchor boxes by k-means on box sizes with the IoU distance (YOLOv2 section 2; Darknet's
``calc_anchors``).

Pure NumPy module (no Django, no TensorFlow import).

Only sizes matter: two boxes (w1, h1) and (w2, h2) are compared as if they shared their top-left
corner, ``IoU = min(w1, w2) min(h1, h2) / (w1 h1 + w2 h2 - min(w1, w2) min(h1, h2))``, and the
distance is ``d = 1 - IoU``, so big and small boxes weigh alike (Euclidean distance on (w, h)
would let big boxes dominate). Lloyd iterations: assign each box to its nearest centroid, move
each centroid to the mean (w, h) of its boxes, until the assignment stops changing.

Initialisation is k-means++ (Arthur and Vassilvitskii 2007) with this distance: the first centroid
is a random box, each next one a box drawn with probability proportional to ``d**2`` to its
nearest chosen centroid; the generator is seeded, so a fit is reproducible. ``n_init`` fits from
different draws are run and the best kept. A centroid left without boxes jumps to the box worst
served by the current centroids.

Fitness is the mean over boxes of the best IoU with any anchor (the "avg IoU" Darknet prints).
Anchors come back sorted by area, smallest first; ``split_anchors`` groups them three per scale,
the smallest three for the finest stride (8), the largest for the coarsest (32), as yolov4.cfg's
``mask`` lines do.

Sizes should be in the network's input pixels, after letterboxing (``sizes_at_input``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from training.detection.boxes import wh_iou
from training.detection.letterbox import letterbox_geometry

Init = Literal["kmeans++", "random"]

#: Anchors per detection scale in YOLOv4 (the length of each ``mask`` in yolov4.cfg).
ANCHORS_PER_SCALE = 3


@dataclass(frozen=True)
class AnchorFit:
    """The result of ``kmeans_anchors``.

    anchors: (k, 2) float64 (w, h) in pixels, sorted by area ascending. avg_iou: mean best IoU
    of the boxes with the anchors. assignments: (N,) index of each box's anchor (into the sorted
    anchors). iterations: Lloyd iterations of the kept fit.
    """

    anchors: np.ndarray
    avg_iou: float
    assignments: np.ndarray
    iterations: int

    def per_scale(self, per_scale: int = ANCHORS_PER_SCALE) -> np.ndarray:
        """(num_scales, per_scale, 2): the anchors grouped finest stride first."""
        return split_anchors(self.anchors, per_scale)


def _check_wh(wh) -> np.ndarray:
    arr = np.asarray(wh, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"box sizes must have shape (N, 2), got {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError("box sizes must be finite and positive")
    return arr


def avg_iou(wh, anchors) -> float:
    """Mean over boxes of the best corner-aligned IoU with any anchor (Darknet's avg IoU)."""
    wh = _check_wh(wh)
    anchors = _check_wh(np.asarray(anchors, dtype=np.float64).reshape(-1, 2))
    if wh.shape[0] == 0:
        raise ValueError("no boxes")
    return float(wh_iou(wh, anchors).max(axis=1).mean())


def _init_centroids(wh: np.ndarray, k: int, rng: np.random.Generator, init: Init) -> np.ndarray:
    n = wh.shape[0]
    if init == "random":
        return wh[rng.choice(n, size=k, replace=False)].copy()
    chosen = [int(rng.integers(n))]
    nearest = 1.0 - wh_iou(wh, wh[chosen[0]])[:, 0]
    for _ in range(1, k):
        weights = np.clip(nearest, 0.0, None) ** 2
        total = weights.sum()
        if total <= 0:
            raise ValueError(f"fewer than k = {k} distinct box sizes")
        pick = int(rng.choice(n, p=weights / total))
        chosen.append(pick)
        nearest = np.minimum(nearest, 1.0 - wh_iou(wh, wh[pick])[:, 0])
    return wh[chosen].copy()


def _lloyd(wh: np.ndarray, centroids: np.ndarray, max_iter: int) -> tuple[np.ndarray, int]:
    k = centroids.shape[0]
    previous = None
    iterations = 0
    while iterations < max_iter:
        iterations += 1
        dist = 1.0 - wh_iou(wh, centroids)
        assign = dist.argmin(axis=1)
        if previous is not None and np.array_equal(assign, previous):
            break
        previous = assign
        counts = np.bincount(assign, minlength=k)
        for j in np.flatnonzero(counts):
            centroids[j] = wh[assign == j].mean(axis=0)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            worst = np.argsort(-dist[np.arange(wh.shape[0]), assign], kind="stable")
            for j, i in zip(empty, worst, strict=False):
                centroids[j] = wh[i]
    return centroids, iterations


def kmeans_anchors(
    wh,
    k: int = 9,
    *,
    seed: int = 0,
    n_init: int = 3,
    max_iter: int = 300,
    init: Init = "kmeans++",
) -> AnchorFit:
    """k anchors for box sizes ``wh`` (N, 2) in input pixels; see the module docstring.

    Deterministic for a given ``seed``. Raises ValueError for fewer boxes (or distinct sizes)
    than ``k``.
    """
    wh = _check_wh(wh)
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if init not in ("kmeans++", "random"):
        raise ValueError(f"init must be 'kmeans++' or 'random', got {init!r}")
    if n_init < 1 or max_iter < 1:
        raise ValueError("n_init and max_iter must be at least 1")
    k = int(k)
    if wh.shape[0] < k:
        raise ValueError(f"{wh.shape[0]} boxes are too few for k = {k} anchors")
    if np.unique(wh, axis=0).shape[0] < k:
        raise ValueError(f"fewer than k = {k} distinct box sizes")
    rng = np.random.default_rng(seed)
    best: tuple[float, np.ndarray, int] | None = None
    for _ in range(n_init):
        centroids, iterations = _lloyd(wh, _init_centroids(wh, k, rng, init), max_iter)
        fitness = float(wh_iou(wh, centroids).max(axis=1).mean())
        if best is None or fitness > best[0]:
            best = (fitness, centroids, iterations)
    assert best is not None  # n_init >= 1
    fitness, centroids, iterations = best
    order = np.argsort(centroids[:, 0] * centroids[:, 1], kind="stable")
    anchors = centroids[order]
    assignments = wh_iou(wh, anchors).argmax(axis=1)
    return AnchorFit(
        anchors=anchors, avg_iou=fitness, assignments=assignments, iterations=iterations
    )


def split_anchors(anchors, per_scale: int = ANCHORS_PER_SCALE) -> np.ndarray:
    """(k, 2) anchors -> (k // per_scale, per_scale, 2), sorted by area, finest stride first."""
    anchors = np.asarray(anchors, dtype=np.float64).reshape(-1, 2)
    if per_scale < 1 or anchors.shape[0] % per_scale:
        raise ValueError(f"{anchors.shape[0]} anchors do not split into groups of {per_scale}")
    order = np.argsort(anchors[:, 0] * anchors[:, 1], kind="stable")
    return anchors[order].reshape(-1, per_scale, 2)


def sizes_at_input(wh, image_sizes, input_size) -> np.ndarray:
    """Box sizes (N, 2) in original pixels -> sizes on the letterboxed input.

    image_sizes: (N, 2) (width, height) of each box's image, or one (width, height) for all.
    input_size: int or (height, width). Uses the same rounding as ``letterbox``.
    """
    wh = _check_wh(wh)
    sizes = np.broadcast_to(np.asarray(image_sizes, dtype=np.int64), wh.shape)
    out = np.empty_like(wh)
    for size in np.unique(sizes, axis=0):
        rows = np.all(sizes == size, axis=1)
        info = letterbox_geometry(int(size[0]), int(size[1]), input_size)
        out[rows] = wh[rows] * np.array([info.scale_x, info.scale_y])
    return out
