"""Shared by the YOLOv4 detection tests: a small three-scale anchor set, its strides and
scale_xy."""

import numpy as np

STRIDES = (8, 16, 32)
ANCHORS = np.array(
    [
        [[4, 6], [8, 8], [10, 16]],
        [[16, 12], [20, 28], [32, 24]],
        [[40, 40], [48, 64], [60, 56]],
    ],
    dtype=np.float64,
)
SCALE_XY = (1.2, 1.1, 1.05)
