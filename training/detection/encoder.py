"""Label encoder: ground-truth boxes of one image -> YOLOv4 training targets, one array per scale.

Pure NumPy module (no Django, no TensorFlow import). It runs per image, either as plain
pre-computation or inside tf.data through ``tf.numpy_function``::

    encoder = LabelEncoder(input_size=416, strides=(8, 16, 32), anchors=anchors, num_classes=5)
    out = tf.numpy_function(encoder.encode_flat, [boxes, classes], encoder.output_dtypes)
    # then set_shape(s) from encoder.output_shapes: targets per scale..., gt_boxes

Input: ``boxes`` (N, 4) xyxy in pixels of the network input, that is after letterboxing
(``Letterbox.to_input``) and augmentation; ``classes`` (N,) detector class ids 0..C-1.

Output, per scale ``s`` (finest stride first), an array shaped like that scale's head without
the batch axis, ``(H / stride, W / stride, A, 5 + C)``, float32, last axis:

    [cx, cy, w, h]   the box's centre and size in input pixels (0 where nothing is assigned)
    objectness       1 where a box is assigned, else 0
    classes          one-hot class of the assigned box (no smoothing here; the loss smooths)

plus ``gt_boxes`` (max_boxes, 4) float32 xyxy input pixels, all boxes of the image padded with
zeros: the loss compares every prediction with these to ignore, in the objectness loss, the
predictions that overlap some ground truth above ``ignore_thresh`` without being assigned to it
(Darknet's ``ignore_thresh = .7``). A zero box has IoU 0 with everything, so padding is inert.

Assignment (Darknet's yolo layer with yolov4.cfg's ``iou_thresh = 0.213``): each box is compared
by shape (corner-aligned IoU of (w, h)) with every anchor of every scale. Its best anchor always
takes it (every copy of it, when a preset shares one anchor between two scales, as yolov4-tiny's
masks 1,2,3 and 3,4,5 do); so does every other anchor whose IoU is above ``iou_thresh``. The cell is the one that
holds the box's centre at that anchor's scale, ``floor(c / stride)``, clipped to the grid. When
two boxes claim the same cell and anchor, the one with the stronger claim keeps it: a best-anchor
claim beats a threshold-only claim, then the higher anchor IoU wins (ties: the later box).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from training.detection.boxes import wh_iou
from training.detection.letterbox import input_hw

#: yolov4.cfg: ``iou_thresh=0.213`` (extra anchors per box), ``ignore_thresh = .7``.
IOU_THRESH = 0.213
MAX_BOXES = 100


@dataclass(frozen=True)
class EncoderConfig:
    """Label-assignment settings (saved with the run config)."""

    iou_thresh: float = IOU_THRESH
    max_boxes: int = MAX_BOXES

    def __post_init__(self) -> None:
        if not 0.0 <= self.iou_thresh <= 1.0:
            raise ValueError(f"iou_thresh must be in [0, 1], got {self.iou_thresh}")
        if int(self.max_boxes) != self.max_boxes or self.max_boxes < 1:
            raise ValueError(f"max_boxes must be a positive integer, got {self.max_boxes}")


@dataclass(frozen=True)
class EncodedLabels:
    """targets: one array per scale, (..., H/s, W/s, A, 5 + C); gt_boxes: (..., max_boxes, 4).
    A leading batch axis is there when it came from ``encode_batch``."""

    targets: tuple[np.ndarray, ...]
    gt_boxes: np.ndarray


def check_head_spec(strides, anchors, num_classes: int) -> tuple[tuple[int, ...], np.ndarray]:
    """Validated ``(strides, anchors)``: strides ascending positive ints, anchors (S, A, 2) > 0."""
    strides = tuple(int(s) for s in strides)
    if not strides or any(s <= 0 for s in strides) or list(strides) != sorted(set(strides)):
        raise ValueError(f"strides must be distinct positive ints, finest first, got {strides}")
    anchors = np.asarray(anchors, dtype=np.float64)
    if anchors.ndim != 3 or anchors.shape[0] != len(strides) or anchors.shape[2] != 2:
        raise ValueError(
            f"anchors must have shape ({len(strides)}, A, 2) for strides {strides}, "
            f"got {anchors.shape}"
        )
    if not np.all(np.isfinite(anchors)) or np.any(anchors <= 0):
        raise ValueError("anchors must be finite and positive")
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes}")
    return strides, anchors


class LabelEncoder:
    """Encodes one image's boxes into per-scale targets matching the heads (module docstring).

    input_size: int or (height, width) of the network input; each side a multiple of every
    stride. strides: finest first, e.g. (8, 16, 32). anchors: (num_scales, A, 2) (w, h) in input
    pixels, row ``s`` for ``strides[s]``. num_classes: C.
    """

    def __init__(
        self,
        input_size,
        strides: Sequence[int],
        anchors,
        num_classes: int,
        config: EncoderConfig = EncoderConfig(),
    ) -> None:
        self.input_size = input_size
        self.strides, self.anchors = check_head_spec(strides, anchors, num_classes)
        self.num_classes = int(num_classes)
        self.config = config
        self.input_height, self.input_width = input_hw(input_size)
        for s in self.strides:
            if self.input_height % s or self.input_width % s:
                raise ValueError(
                    f"input size {self.input_height} x {self.input_width} is not a multiple "
                    f"of stride {s}"
                )
        self.num_anchors = self.anchors.shape[1]
        self._flat_anchors = self.anchors.reshape(-1, 2)

    @property
    def grid_sizes(self) -> tuple[tuple[int, int], ...]:
        """(rows, cols) of each scale's grid."""
        return tuple((self.input_height // s, self.input_width // s) for s in self.strides)

    @property
    def output_shapes(self) -> tuple[tuple[int, ...], ...]:
        """Shapes of ``encode_flat``'s outputs: each scale's target, then gt_boxes."""
        depth = 5 + self.num_classes
        heads = tuple((gh, gw, self.num_anchors, depth) for gh, gw in self.grid_sizes)
        return (*heads, (self.config.max_boxes, 4))

    @property
    def output_dtypes(self) -> list:
        """``Tout`` for ``tf.numpy_function``: float32 for every output."""
        return [np.float32] * (len(self.strides) + 1)

    def _check_inputs(self, boxes, classes) -> tuple[np.ndarray, np.ndarray]:
        b = np.asarray(boxes, dtype=np.float64)
        if b.size == 0:
            b = b.reshape(0, 4)
        if b.ndim != 2 or b.shape[1] != 4:
            raise ValueError(f"boxes must have shape (N, 4) xyxy, got {b.shape}")
        if not np.all(np.isfinite(b)):
            raise ValueError("boxes must be finite")
        if np.any(b[:, 2] <= b[:, 0]) or np.any(b[:, 3] <= b[:, 1]):
            raise ValueError("every box needs x2 > x1 and y2 > y1 (xyxy pixels)")
        c = np.asarray(classes)
        if c.size == 0:
            c = c.reshape(0)
        if c.ndim != 1 or c.shape[0] != b.shape[0]:
            raise ValueError(f"{b.shape[0]} boxes but classes has shape {c.shape}")
        if c.size and (not np.all(c == np.round(c)) or c.min() < 0 or c.max() >= self.num_classes):
            raise ValueError(f"classes must be integers in 0..{self.num_classes - 1}")
        return b, c.astype(np.int64)

    def encode(self, boxes, classes) -> EncodedLabels:
        """Targets for one image: ``boxes`` (N, 4) xyxy input pixels, ``classes`` (N,)."""
        b, c = self._check_inputs(boxes, classes)
        depth = 5 + self.num_classes
        targets = [
            np.zeros((gh, gw, self.num_anchors, depth), dtype=np.float32)
            for gh, gw in self.grid_sizes
        ]
        centre = (b[:, :2] + b[:, 2:]) / 2.0
        size = b[:, 2:] - b[:, :2]
        ious = wh_iou(size, self._flat_anchors)  # (N, S * A)
        best = ious.max(axis=1, keepdims=True)
        claims = []  # (is_best, iou, box index, flat anchor)
        for i in range(b.shape[0]):
            is_best = ious[i] == best[i]
            for j in np.flatnonzero(is_best | (ious[i] > self.config.iou_thresh)):
                claims.append((int(is_best[j]), float(ious[i, j]), i, int(j)))
        claims.sort(key=lambda claim: (claim[0], claim[1], claim[2]))
        for _, _, i, j in claims:  # weakest first; stronger claims overwrite
            s, a = divmod(j, self.num_anchors)
            stride = self.strides[s]
            gh, gw = self.grid_sizes[s]
            col = min(max(int(np.floor(centre[i, 0] / stride)), 0), gw - 1)
            row = min(max(int(np.floor(centre[i, 1] / stride)), 0), gh - 1)
            cell = targets[s][row, col, a]
            cell[:] = 0.0
            cell[0:2] = centre[i]
            cell[2:4] = size[i]
            cell[4] = 1.0
            cell[5 + c[i]] = 1.0
        gt = np.zeros((self.config.max_boxes, 4), dtype=np.float32)
        kept = b[: self.config.max_boxes]
        gt[: kept.shape[0]] = kept
        return EncodedLabels(targets=tuple(targets), gt_boxes=gt)

    __call__ = encode

    def encode_flat(self, boxes, classes) -> tuple[np.ndarray, ...]:
        """``encode`` as a flat tuple (targets per scale..., gt_boxes) for ``tf.numpy_function``."""
        out = self.encode(boxes, classes)
        return (*out.targets, out.gt_boxes)

    def encode_batch(self, boxes: Sequence, classes: Sequence) -> EncodedLabels:
        """``encode`` for each image, stacked with a leading batch axis."""
        if len(boxes) != len(classes):
            raise ValueError(f"{len(boxes)} box arrays but {len(classes)} class arrays")
        encoded = [self.encode(b, c) for b, c in zip(boxes, classes, strict=True)]
        targets = tuple(np.stack([e.targets[s] for e in encoded]) for s in range(len(self.strides)))
        return EncodedLabels(targets=targets, gt_boxes=np.stack([e.gt_boxes for e in encoded]))
