"""YOLOv4 loss (CIoU box loss, objectness and class binary cross entropy) and head decoding.

TensorFlow module (no Django import). Works eagerly and inside ``tf.function``.

Heads (the network's contract): a list of raw tensors, one per scale from the finest stride to
the coarsest, each ``(B, H / stride, W / stride, A, 5 + C)`` with last axis
``[tx, ty, tw, th, objectness, class logits...]``. Decoding, as Darknet's yolo layer with
``scale_x_y``::

    centre = (sigmoid(t_xy) * scale_xy - 0.5 * (scale_xy - 1) + cell_xy) * stride
    size   = exp(t_wh) * anchor            (t_wh clipped to +-MAX_LOG_WH against overflow)
    objectness, class probabilities = sigmoid

giving boxes in input pixels (x right, y down; the cell's x is its column).

Loss, with targets from ``LabelEncoder`` (``cxcywh`` pixels, objectness, one-hot classes) and
its padded ``gt_boxes``:

    box  = sum over assigned anchors of (1 - CIoU(predicted, target))
    obj  = BCE(objectness) over assigned anchors (target 1) and over unassigned anchors whose
           predicted box has IoU <= ignore_thresh with every ground truth (target 0); the others
           are ignored (Darknet's ignore_thresh)
    cls  = BCE over the classes of assigned anchors, one-hot targets smoothed as
           ``y (1 - eps) + eps / 2`` (Darknet's label_smooth_eps; Keras' BCE smoothing)

Each is summed over cells and anchors of a scale, multiplied by that scale's weight, summed over
scales and divided by the batch size; then weighted (box_weight is yolov4.cfg's
``iou_normalizer = 0.07``, obj and cls ``1.0``). The components come back weighted, so
``total = box + obj + cls``.

CIoU (Zheng et al. 2020, "Distance-IoU loss"): ``CIoU = IoU - rho^2 / c^2 - alpha v`` with rho the
distance between the centres, c the diagonal of the smallest box enclosing both,
``v = 4 / pi^2 (atan(w_gt / h_gt) - atan(w / h))^2`` and ``alpha = v / ((1 - IoU) + v)``;
alpha is held constant in the gradient, as the paper prescribes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from training.detection.encoder import check_head_spec

#: exp(12) ~ 1.6e5 times an anchor: far past any image, short of float32 overflow.
MAX_LOG_WH = 12.0
EPS = 1e-9


@dataclass(frozen=True)
class LossConfig:
    """Loss weights and thresholds; defaults are yolov4.cfg's.

    scale_weights: one weight per scale (finest first), or None for all 1.
    """

    ignore_thresh: float = 0.7
    box_weight: float = 0.07
    obj_weight: float = 1.0
    cls_weight: float = 1.0
    label_smoothing: float = 0.0
    scale_weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.ignore_thresh <= 1.0:
            raise ValueError(f"ignore_thresh must be in [0, 1], got {self.ignore_thresh}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        for name in ("box_weight", "obj_weight", "cls_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.scale_weights is not None and any(w < 0 for w in self.scale_weights):
            raise ValueError("scale_weights must be >= 0")


def bbox_ciou(pred, target) -> tuple[tf.Tensor, tf.Tensor]:
    """CIoU and IoU of boxes ``pred`` and ``target``, ``(..., 4)`` cxcywh; both of shape ``(...)``.

    ``target`` is the ground truth (alpha is computed without gradient).
    """
    pred = tf.convert_to_tensor(pred)
    target = tf.cast(target, pred.dtype)
    p_xy, p_wh = pred[..., 0:2], pred[..., 2:4]
    t_xy, t_wh = target[..., 0:2], target[..., 2:4]
    p_min, p_max = p_xy - p_wh / 2.0, p_xy + p_wh / 2.0
    t_min, t_max = t_xy - t_wh / 2.0, t_xy + t_wh / 2.0
    inter_wh = tf.maximum(tf.minimum(p_max, t_max) - tf.maximum(p_min, t_min), 0.0)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    union = p_wh[..., 0] * p_wh[..., 1] + t_wh[..., 0] * t_wh[..., 1] - inter
    iou = inter / (union + EPS)
    enclose = tf.maximum(p_max, t_max) - tf.minimum(p_min, t_min)
    c2 = tf.reduce_sum(tf.square(enclose), axis=-1) + EPS
    rho2 = tf.reduce_sum(tf.square(p_xy - t_xy), axis=-1)
    v = (4.0 / math.pi**2) * tf.square(
        tf.atan2(t_wh[..., 0], t_wh[..., 1]) - tf.atan2(p_wh[..., 0], p_wh[..., 1])
    )
    alpha = tf.stop_gradient(v / (1.0 - iou + v + EPS))
    return iou - rho2 / c2 - alpha * v, iou


def _grid(raw: tf.Tensor) -> tf.Tensor:
    """(1, rows, cols, 1, 2) cell offsets, last axis (column, row)."""
    shape = tf.shape(raw)
    cols = tf.range(shape[2], dtype=raw.dtype)
    rows = tf.range(shape[1], dtype=raw.dtype)
    gx, gy = tf.meshgrid(cols, rows)  # each (rows, cols)
    return tf.stack([gx, gy], axis=-1)[tf.newaxis, :, :, tf.newaxis, :]


def decode_scale(raw, anchors, stride: float, scale_xy: float = 1.0) -> tuple[tf.Tensor, ...]:
    """One head ``(B, H, W, A, 5 + C)`` -> (centre xy, size wh) in pixels, objectness logit
    ``(B, H, W, A)``, class logits ``(B, H, W, A, C)``."""
    raw = tf.convert_to_tensor(raw)
    if raw.dtype not in (tf.float32, tf.float64):  # ints, and half precision (exp overflows)
        raw = tf.cast(raw, tf.float32)
    anchors = tf.constant(np.asarray(anchors, dtype=np.float64), dtype=raw.dtype)
    sxy = float(scale_xy)
    xy = (tf.sigmoid(raw[..., 0:2]) * sxy - 0.5 * (sxy - 1.0) + _grid(raw)) * float(stride)
    wh = tf.exp(tf.clip_by_value(raw[..., 2:4], -MAX_LOG_WH, MAX_LOG_WH)) * anchors
    return xy, wh, raw[..., 4], raw[..., 5:]


def _scale_xy_list(scale_xy, n: int) -> tuple[float, ...]:
    if np.ndim(scale_xy) == 0:
        return (float(scale_xy),) * n
    values = tuple(float(v) for v in scale_xy)
    if len(values) != n:
        raise ValueError(f"{len(values)} scale_xy values for {n} scales")
    return values


def decode(outputs: Sequence, anchors, strides: Sequence[int], scale_xy=1.0):
    """All heads -> ``(boxes, scores)`` per image.

    boxes: (B, N, 4) xyxy in input pixels; scores: (B, N, C) objectness x class probability
    (Darknet's detection score, one per class so that NMS can run per class). N counts every
    anchor of every cell, finest scale first, then rows, columns, anchors. Map boxes to the
    original image with ``Letterbox.to_image`` (``nms.postprocess`` does it).
    """
    strides, anchors = check_head_spec(strides, anchors, 1)
    if len(outputs) != len(strides):
        raise ValueError(f"{len(outputs)} heads for {len(strides)} strides")
    sxy = _scale_xy_list(scale_xy, len(strides))
    all_boxes, all_scores = [], []
    for raw, anchor, stride, s in zip(outputs, anchors, strides, sxy, strict=True):
        xy, wh, obj, cls = decode_scale(raw, anchor, stride, s)
        boxes = tf.concat([xy - wh / 2.0, xy + wh / 2.0], axis=-1)
        scores = tf.sigmoid(obj)[..., tf.newaxis] * tf.sigmoid(cls)
        batch = tf.shape(boxes)[0]
        all_boxes.append(tf.reshape(boxes, [batch, -1, 4]))
        all_scores.append(tf.reshape(scores, [batch, -1, tf.shape(scores)[-1]]))
    return tf.concat(all_boxes, axis=1), tf.concat(all_scores, axis=1)


def _pairwise_iou(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """(B, N, 4) xyxy against (B, M, 4) xyxy -> (B, N, M)."""
    a = a[:, :, tf.newaxis, :]
    b = b[:, tf.newaxis, :, :]
    wh = tf.maximum(tf.minimum(a[..., 2:], b[..., 2:]) - tf.maximum(a[..., :2], b[..., :2]), 0.0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / (area_a + area_b - inter + EPS)


class YoloLoss:
    """The YOLOv4 loss over all scales (module docstring).

    anchors: (num_scales, A, 2) in input pixels; strides finest first; scale_xy one value or one
    per scale; num_classes C. Call with ``(targets, gt_boxes, outputs)``: the encoder's per-scale
    targets ``(B, H/s, W/s, A, 5 + C)``, its ``gt_boxes`` ``(B, max_boxes, 4)`` and the heads.
    Returns ``{"total", "box", "obj", "cls"}`` scalar tensors, components already weighted.
    """

    def __init__(
        self,
        anchors,
        strides: Sequence[int],
        scale_xy=1.0,
        num_classes: int = 5,
        config: LossConfig = LossConfig(),
    ) -> None:
        self.strides, self.anchors = check_head_spec(strides, anchors, num_classes)
        self.scale_xy = _scale_xy_list(scale_xy, len(self.strides))
        self.num_classes = int(num_classes)
        self.config = config
        weights = config.scale_weights
        if weights is None:
            weights = (1.0,) * len(self.strides)
        if len(weights) != len(self.strides):
            raise ValueError(f"{len(weights)} scale weights for {len(self.strides)} scales")
        self.scale_weights = tuple(float(w) for w in weights)

    def _scale_terms(self, target, gt_boxes, raw, s: int) -> tuple[tf.Tensor, ...]:
        cfg = self.config
        xy, wh, obj_logit, cls_logit = decode_scale(
            raw, self.anchors[s], self.strides[s], self.scale_xy[s]
        )
        dtype = xy.dtype
        target = tf.cast(target, dtype)
        positive = target[..., 4] > 0.5
        obj_target = tf.cast(positive, dtype)

        pred_box = tf.concat([xy, wh], axis=-1)
        ciou, _ = bbox_ciou(
            tf.boolean_mask(pred_box, positive), tf.boolean_mask(target[..., 0:4], positive)
        )
        box = tf.reduce_sum(1.0 - ciou)

        batch = tf.shape(raw)[0]
        pred_xyxy = tf.reshape(
            tf.stop_gradient(tf.concat([xy - wh / 2.0, xy + wh / 2.0], axis=-1)), [batch, -1, 4]
        )
        best_iou = tf.reduce_max(_pairwise_iou(pred_xyxy, tf.cast(gt_boxes, dtype)), axis=-1)
        ignored = tf.reshape(best_iou > cfg.ignore_thresh, tf.shape(obj_logit))
        counted = tf.logical_or(positive, tf.logical_not(ignored))
        obj_bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=obj_target, logits=obj_logit)
        obj = tf.reduce_sum(obj_bce * tf.cast(counted, dtype))

        onehot = tf.boolean_mask(target[..., 5:], positive)
        eps = cfg.label_smoothing
        cls_target = onehot * (1.0 - eps) + 0.5 * eps
        cls_bce = tf.nn.sigmoid_cross_entropy_with_logits(
            labels=cls_target, logits=tf.boolean_mask(cls_logit, positive)
        )
        cls = tf.reduce_sum(cls_bce)
        return box, obj, cls

    def __call__(self, targets: Sequence, gt_boxes, outputs: Sequence) -> dict[str, tf.Tensor]:
        n = len(self.strides)
        if len(targets) != n or len(outputs) != n:
            raise ValueError(
                f"expected {n} targets and {n} heads, got {len(targets)} and {len(outputs)}"
            )
        cfg = self.config
        box = obj = cls = 0.0
        for s in range(n):
            b, o, c = self._scale_terms(targets[s], gt_boxes, outputs[s], s)
            w = self.scale_weights[s]
            box, obj, cls = box + w * b, obj + w * o, cls + w * c
        batch = tf.cast(tf.shape(outputs[0])[0], box.dtype)  # type: ignore[union-attr]  # a tensor: n >= 1
        box = cfg.box_weight * box / batch
        obj = cfg.obj_weight * obj / batch
        cls = cfg.cls_weight * cls / batch
        return {"total": box + obj + cls, "box": box, "obj": obj, "cls": cls}
