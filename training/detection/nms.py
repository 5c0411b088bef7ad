"""Non-max suppression per class, and the step from decoded heads to detections in the original
image's pixels.

Pure NumPy module (no Django, no TensorFlow import; TensorFlow tensors are accepted and read
with ``np.asarray``).

Per image and per class, Darknet's greedy NMS: candidates are the boxes whose score for that
class is at least ``score_threshold``; take the highest-scoring, drop every remaining one whose
IoU with it is above ``iou_threshold``, repeat. A box may survive in several classes (its score
for each class is objectness x that class's probability), as Darknet reports it. Boxes of
different classes never suppress each other. Then the ``max_detections`` best over all classes
are kept, highest score first.

A class can contribute at most ``max_detections`` boxes to the final list, and greedy NMS keeps
boxes in score order, so each class's NMS stops once it has kept that many: the result is the
same as running it to the end, and an untrained model's thousands of candidates stay cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from training.detection.boxes import box_area, box_iou
from training.detection.letterbox import Letterbox

#: Darknet's defaults: mAP evaluation keeps detections down to 0.005; NMS at 0.45.
SCORE_THRESHOLD = 0.005
IOU_THRESHOLD = 0.45
MAX_DETECTIONS = 100


@dataclass(frozen=True)
class Detections:
    """One image's detections, highest score first.

    boxes: (K, 4) float64 xyxy pixels; scores: (K,) float64; classes: (K,) int64 class ids.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        classes = np.asarray(self.classes).reshape(-1)
        if not (boxes.shape[0] == scores.shape[0] == classes.shape[0]):
            raise ValueError(
                f"{boxes.shape[0]} boxes, {scores.shape[0]} scores, {classes.shape[0]} classes"
            )
        if classes.size and not np.all(classes == np.round(classes)):
            raise ValueError("classes must be integer class ids")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "classes", classes.astype(np.int64))

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def above(self, threshold: float) -> Detections:
        """The detections with score >= ``threshold``."""
        keep = self.scores >= threshold
        return Detections(self.boxes[keep], self.scores[keep], self.classes[keep])


def nms(
    boxes, scores, iou_threshold: float = IOU_THRESHOLD, max_output: int | None = None
) -> np.ndarray:
    """Greedy NMS of one class: indices of the kept boxes, highest score first (ties: lower
    index first). A box is dropped when its IoU with a kept box is above ``iou_threshold``.
    ``max_output``: stop after keeping that many (the same first boxes as without it)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    ordered = boxes[order]
    suppressed = np.zeros(order.size, dtype=bool)
    keep: list[int] = []
    for i in range(order.size):
        if suppressed[i]:
            continue
        keep.append(i)
        if max_output is not None and len(keep) >= max_output:
            break
        rest = ordered[i + 1 :]
        suppressed[i + 1 :] |= box_iou(ordered[i : i + 1], rest)[0] > iou_threshold
    return order[np.asarray(keep, dtype=np.int64)]


def batched_nms(
    boxes,
    scores,
    *,
    score_threshold: float = SCORE_THRESHOLD,
    iou_threshold: float = IOU_THRESHOLD,
    max_detections: int = MAX_DETECTIONS,
) -> Detections:
    """NMS per class for one image: ``boxes`` (N, 4) xyxy, ``scores`` (N, C) per class."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] != boxes.shape[0]:
        raise ValueError(f"scores must be (N, C) for {boxes.shape[0]} boxes, got {scores.shape}")
    kept_boxes, kept_scores, kept_classes = [], [], []
    for c in range(scores.shape[1]):
        idx = np.flatnonzero(scores[:, c] >= score_threshold)
        if idx.size == 0:
            continue
        keep = idx[nms(boxes[idx], scores[idx, c], iou_threshold, max_detections)]
        kept_boxes.append(boxes[keep])
        kept_scores.append(scores[keep, c])
        kept_classes.append(np.full(keep.size, c, dtype=np.int64))
    if not kept_scores:
        return Detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64))
    all_scores = np.concatenate(kept_scores)
    order = np.argsort(-all_scores, kind="stable")[:max_detections]
    return Detections(
        np.concatenate(kept_boxes)[order], all_scores[order], np.concatenate(kept_classes)[order]
    )


def postprocess(
    boxes,
    scores,
    letterboxes: Sequence[Letterbox] | None = None,
    *,
    score_threshold: float = SCORE_THRESHOLD,
    iou_threshold: float = IOU_THRESHOLD,
    max_detections: int = MAX_DETECTIONS,
) -> list[Detections]:
    """Decoded batch (``loss.decode``: boxes (B, N, 4) xyxy input pixels, scores (B, N, C)) ->
    one ``Detections`` per image.

    With ``letterboxes`` (one per image), boxes are mapped back to the original image's pixels
    and clipped to it; a box left with no area (it lay in the grey border) is dropped. NMS runs
    on the input-frame boxes, before the mapping.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if boxes.ndim != 3 or scores.ndim != 3 or boxes.shape[:2] != scores.shape[:2]:
        raise ValueError(f"boxes (B, N, 4) and scores (B, N, C), got {boxes.shape}, {scores.shape}")
    if letterboxes is not None and len(letterboxes) != boxes.shape[0]:
        raise ValueError(f"{len(letterboxes)} letterboxes for a batch of {boxes.shape[0]}")
    out = []
    for b in range(boxes.shape[0]):
        det = batched_nms(
            boxes[b],
            scores[b],
            score_threshold=score_threshold,
            iou_threshold=iou_threshold,
            max_detections=max_detections,
        )
        if letterboxes is not None:
            mapped = letterboxes[b].to_image(det.boxes, clip=True)
            keep = box_area(mapped) > 0
            det = Detections(mapped[keep], det.scores[keep], det.classes[keep])
        out.append(det)
    return out
