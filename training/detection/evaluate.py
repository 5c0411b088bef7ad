"""Detector evaluation: COCO AP@0.5 per class and mAP, the paper's image-level metrics, the
image verdict confusion matrix, and the recall-first choice of the score threshold.

Pure NumPy module (no Django, no TensorFlow import).

AP@0.5 (``average_precision``) is pycocotools' ``COCOeval`` for bounding boxes restricted to one
IoU threshold (0.5), area "all", ``maxDets`` 100, no crowd boxes, computed the same way:
    - per image and class, detections sorted by score (stable) and cut to the best 100; IoU as
      COCO computes it from (x, y, w, h), with no +1 pixel;
    - greedy matching in score order: each detection takes the unmatched ground truth of its class
      with the highest IoU >= 0.5 (ties: the later ground truth, as COCOeval);
    - over all images, detections sorted by score (stable, images in order), cumulative TP and FP,
      precision made non-increasing from the right, read at the 101 recall points 0, 0.01, ..., 1
      (the first detection whose recall reaches each point; 0 past the last);
    - AP of a class is the mean of those 101 values; a class without ground truth has no AP (NaN)
      and is left out of the mAP, the mean over the other classes.

Image-level metrics (paper, section 2.3 and Table 2), at a score threshold: a detection counts
when its score is >= the threshold. Per class, an image is truly positive when it has a ground
truth box of the class, predicted positive when it has a counted detection of the class; likewise
for "atypical" (>= ASC-US: any class at all, or the classes from ``min_class`` up). The image's
verdict is its highest grade: 0 (NILM) without boxes, else 1 + the largest class id. The verdict
confusion matrix (rows truth) and its one-vs-rest rows are the paper's Tables 3 and 2.

``choose_threshold``: the highest threshold whose image-level recall for "atypical" on the
validation images is at least ``target_recall`` (1.0: no abnormal image missed), with the
precision it costs and the whole curve.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from annotation.bethesda import ATYPICAL, BETHESDA
from training.detection.boxes import xyxy_to_xywh
from training.detection.nms import Detections
from training.metrics import classification_report

#: COCOeval's recall points: np.linspace(0, 1, 101).
REC_THRS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)


@dataclass(frozen=True)
class GroundTruth:
    """One image's ground truth: boxes (N, 4) float64 xyxy pixels, classes (N,) int64."""

    boxes: np.ndarray
    classes: np.ndarray

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        classes = np.asarray(self.classes).reshape(-1)
        if boxes.shape[0] != classes.shape[0]:
            raise ValueError(f"{boxes.shape[0]} boxes but {classes.shape[0]} classes")
        if classes.size and not np.all(classes == np.round(classes)):
            raise ValueError("classes must be integer class ids")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "classes", classes.astype(np.int64))


def _check_pair(
    detections: Sequence[Detections], truths: Sequence[GroundTruth], num_classes: int
) -> None:
    if len(detections) != len(truths):
        raise ValueError(f"{len(detections)} detection sets for {len(truths)} images")
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes}")
    sets: tuple[tuple[str, Sequence[Detections | GroundTruth]], ...] = (
        ("detection", detections), ("ground truth", truths))
    for what, items in sets:
        for i, item in enumerate(items):
            c = item.classes
            if c.size and (c.min() < 0 or c.max() >= num_classes):
                raise ValueError(f"image {i}: {what} class out of range 0..{num_classes - 1}")


def default_class_names(num_classes: int) -> tuple[str, ...]:
    """ATYPICAL for the five-class detector, else "class 0", "class 1", ..."""
    if num_classes == len(ATYPICAL):
        return ATYPICAL
    return tuple(f"class {i}" for i in range(num_classes))


def _coco_iou(dt_xywh: np.ndarray, gt_xywh: np.ndarray) -> np.ndarray:
    """(D, G) IoU computed as pycocotools' bbIou does (no crowd)."""
    dx, dy, dw, dh = (dt_xywh[:, i : i + 1] for i in range(4))
    gx, gy, gw, gh = (gt_xywh[None, :, i] for i in range(4))
    w = np.minimum(dx + dw, gx + gw) - np.maximum(dx, gx)
    h = np.minimum(dy + dh, gy + gh) - np.maximum(dy, gy)
    inter = w * h
    union = (dw * dh + gw * gh) - inter
    out = np.zeros(inter.shape, dtype=np.float64)
    ok = (w > 0) & (h > 0)
    np.divide(inter, union, out=out, where=ok)
    return out


def _match_image(dt_xywh, dt_scores, gt_xywh, iou_threshold, max_detections):
    """Scores and TP flags of one image's detections of one class, in COCOeval's order."""
    order = np.argsort(-dt_scores, kind="mergesort")[:max_detections]
    dt_xywh, dt_scores = dt_xywh[order], dt_scores[order]
    tp = np.zeros(order.size, dtype=bool)
    if order.size and gt_xywh.shape[0]:
        ious = _coco_iou(dt_xywh, gt_xywh).tolist()
        matched = [False] * gt_xywh.shape[0]
        for d, row in enumerate(ious):
            best, m = min(iou_threshold, 1 - 1e-10), -1
            for g, value in enumerate(row):
                if matched[g] or value < best:
                    continue
                best, m = value, g
            if m >= 0:
                matched[m] = True
                tp[d] = True
    return dt_scores, tp


def _ap_from_matches(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> float:
    order = np.argsort(-scores, kind="mergesort")
    tps = tp[order]
    tp_sum = np.cumsum(tps).astype(float)
    fp_sum = np.cumsum(~tps).astype(float)
    nd = tp_sum.size
    q = np.zeros(REC_THRS.size)
    if nd:
        rc = tp_sum / num_gt
        pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
        pr = np.maximum.accumulate(pr[::-1])[::-1]
        idx = np.searchsorted(rc, REC_THRS, side="left")
        valid = idx < nd
        q[valid] = pr[idx[valid]]
    return float(np.mean(q))


@dataclass(frozen=True)
class APResult:
    """ap: (C,) AP@iou per class, NaN for a class without ground truth; map: mean of the
    others (NaN when none has any); num_gt: (C,) ground-truth boxes per class."""

    ap: np.ndarray
    map: float
    num_gt: np.ndarray
    class_names: tuple[str, ...]

    def as_dict(self) -> dict:
        return {
            "map": None if math.isnan(self.map) else self.map,
            "classes": {
                name: {
                    "ap": None if math.isnan(a) else float(a),
                    "num_gt": int(n),
                }
                for name, a, n in zip(self.class_names, self.ap, self.num_gt, strict=True)
            },
        }


def average_precision(
    detections: Sequence[Detections],
    truths: Sequence[GroundTruth],
    num_classes: int = len(ATYPICAL),
    *,
    iou_threshold: float = 0.5,
    max_detections: int = 100,
    class_names: Sequence[str] | None = None,
) -> APResult:
    """COCO-style AP at one IoU threshold per class and their mean (module docstring)."""
    _check_pair(detections, truths, num_classes)
    names = tuple(class_names) if class_names is not None else default_class_names(num_classes)
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes")
    ap = np.full(num_classes, np.nan)
    num_gt = np.zeros(num_classes, dtype=np.int64)
    dt_xywh = [xyxy_to_xywh(d.boxes) for d in detections]
    gt_xywh = [xyxy_to_xywh(t.boxes) for t in truths]
    for k in range(num_classes):
        scores, tps = [], []
        for det, truth, dxywh, gxywh in zip(detections, truths, dt_xywh, gt_xywh, strict=True):
            d_sel = det.classes == k
            g_sel = truth.classes == k
            if not d_sel.any() and not g_sel.any():
                continue
            s, tp = _match_image(
                dxywh[d_sel], det.scores[d_sel], gxywh[g_sel], iou_threshold, max_detections
            )
            scores.append(s)
            tps.append(tp)
            num_gt[k] += int(g_sel.sum())
        if num_gt[k] == 0:
            continue
        ap[k] = _ap_from_matches(np.concatenate(scores), np.concatenate(tps), int(num_gt[k]))
    valid = ~np.isnan(ap)
    mean = float(np.mean(ap[valid])) if valid.any() else math.nan
    return APResult(ap=ap, map=mean, num_gt=num_gt, class_names=names)


# --- image level ------------------------------------------------------------------------------


def _binary_row(truth: np.ndarray | np.bool_, pred: np.ndarray | np.bool_) -> dict:
    tp = int(np.sum(truth & pred))
    fp = int(np.sum(~truth & pred))
    fn = int(np.sum(truth & ~pred))
    tn = int(np.sum(~truth & ~pred))
    n = tp + fp + fn + tn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": (tp + tn) / n if n else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": tp + fn,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }


def image_presence(items: Sequence, num_classes: int, threshold: float | None = None) -> np.ndarray:
    """(n_images, C) bool: image i has a box of class c (detections: with score >= threshold)."""
    out = np.zeros((len(items), num_classes), dtype=bool)
    for i, item in enumerate(items):
        classes = item.classes
        if threshold is not None:
            classes = classes[item.scores >= threshold]
        out[i, classes] = True
    return out


def image_verdicts(items: Sequence, threshold: float | None = None) -> np.ndarray:
    """(n_images,) int64 verdicts: 0 (NILM) without boxes, else 1 + the largest class id.
    ``items`` are GroundTruth or Detections (detections count when score >= threshold)."""
    out = np.zeros(len(items), dtype=np.int64)
    for i, item in enumerate(items):
        classes = item.classes
        if threshold is not None:
            classes = classes[item.scores >= threshold]
        if classes.size:
            out[i] = 1 + int(classes.max())
    return out


def image_level_report(
    detections: Sequence[Detections],
    truths: Sequence[GroundTruth],
    threshold: float,
    num_classes: int = len(ATYPICAL),
    *,
    min_class: int = 0,
    class_names: Sequence[str] | None = None,
) -> dict:
    """The paper's image-level table at ``threshold`` as plain JSON-serialisable data.

    {"threshold", "n", "classes": {name: row} (presence per class), "atypical": row (any class
    >= min_class; ">= ASC-US" by default), "verdict": ``training.metrics.classification_report``
    of the verdicts (NILM first, then the classes; its "confusion_matrix" has rows truth)}.
    A row: accuracy, precision, recall, f1, support, tp, fp, fn, tn (zero division gives 0).
    """
    _check_pair(detections, truths, num_classes)
    names = tuple(class_names) if class_names is not None else default_class_names(num_classes)
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes")
    truth = image_presence(truths, num_classes)
    pred = image_presence(detections, num_classes, threshold)
    classes = {name: _binary_row(truth[:, c], pred[:, c]) for c, name in enumerate(names)}
    atypical = _binary_row(truth[:, min_class:].any(axis=1), pred[:, min_class:].any(axis=1))
    if num_classes == len(ATYPICAL) and class_names is None:
        verdict_names = BETHESDA
    else:
        verdict_names = ("none", *names)
    verdict = classification_report(
        image_verdicts(truths),
        image_verdicts(detections, threshold),
        num_classes=num_classes + 1,
        class_names=verdict_names,
    )
    return {
        "threshold": float(threshold),
        "n": len(truths),
        "classes": classes,
        "atypical": atypical,
        "verdict": verdict,
    }


# --- threshold ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThresholdChoice:
    """threshold: the chosen score threshold (detections count when score >= it).
    recall, precision, f1: image-level "atypical" values on the validation images there.
    achieved: whether recall reached the target (False when some abnormal image has no
    detection of the counted classes at all; the threshold is then the lowest such score, the
    best recall possible). thresholds, recalls, precisions: the curve at every distinct image
    score, thresholds descending."""

    threshold: float
    recall: float
    precision: float
    f1: float
    achieved: bool
    target_recall: float
    thresholds: np.ndarray
    recalls: np.ndarray
    precisions: np.ndarray


def image_scores(detections: Sequence[Detections], min_class: int = 0) -> np.ndarray:
    """(n_images,) the best score of a detection of class >= min_class (-inf without one)."""
    out = np.full(len(detections), -np.inf)
    for i, det in enumerate(detections):
        sel = det.classes >= min_class
        if sel.any():
            out[i] = float(det.scores[sel].max())
    return out


def choose_threshold(
    detections: Sequence[Detections],
    truths: Sequence[GroundTruth],
    *,
    target_recall: float = 1.0,
    min_class: int = 0,
) -> ThresholdChoice:
    """The highest score threshold that keeps image-level recall for "atypical" (an image with a
    ground truth box of class >= min_class; by default any: ">= ASC-US") at ``target_recall``
    or more on these (validation) images. Raises ValueError without a positive image."""
    if len(detections) != len(truths):
        raise ValueError(f"{len(detections)} detection sets for {len(truths)} images")
    if not 0.0 < target_recall <= 1.0:
        raise ValueError(f"target_recall must be in (0, 1], got {target_recall}")
    positive = np.array([bool(np.any(t.classes >= min_class)) for t in truths], dtype=bool)
    n_pos = int(positive.sum())
    if n_pos == 0:
        raise ValueError("no image with an atypical ground truth box: recall is undefined")
    scores = image_scores(detections, min_class)

    thresholds = np.unique(scores[np.isfinite(scores)])[::-1]
    counted = scores[None, :] >= thresholds[:, None]  # (T, n_images)
    tp = (counted & positive[None, :]).sum(axis=1)
    predicted = counted.sum(axis=1)
    recalls = tp / n_pos
    precisions = np.divide(tp, predicted, out=np.zeros(tp.shape), where=predicted > 0)

    needed = math.ceil(target_recall * n_pos - 1e-9)
    pos_scores = np.sort(scores[positive])[::-1]
    threshold = float(pos_scores[needed - 1])
    achieved = math.isfinite(threshold)
    if not achieved:
        finite = pos_scores[np.isfinite(pos_scores)]
        threshold = float(finite[-1]) if finite.size else 0.0
    pred = scores >= threshold
    tp_at = int(np.sum(pred & positive))
    recall = tp_at / n_pos
    precision = tp_at / int(pred.sum()) if pred.any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return ThresholdChoice(
        threshold=threshold,
        recall=recall,
        precision=precision,
        f1=f1,
        achieved=achieved,
        target_recall=float(target_recall),
        thresholds=thresholds,
        recalls=recalls,
        precisions=precisions,
    )
