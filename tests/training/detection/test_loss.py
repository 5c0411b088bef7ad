"""YOLOv4 detection pieces: CIoU, decoding a head, and the loss (falls under Adam, ignores
unassigned predictions overlapping a ground truth)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from tests.training.detection.conftest import ANCHORS, SCALE_XY, STRIDES
from training.detection.encoder import EncoderConfig, LabelEncoder
from training.detection.loss import LossConfig, YoloLoss, bbox_ciou, decode


def _ciou(pred, target) -> tuple[float, float]:
    ciou, iou = bbox_ciou(tf.constant([pred], tf.float64), tf.constant([target], tf.float64))
    return float(ciou.numpy()[0]), float(iou.numpy()[0])


def test_ciou_equals_iou_for_same_centre_same_aspect_boxes():
    ciou, iou = _ciou([5.0, 5.0, 4.0, 2.0], [5.0, 5.0, 2.0, 1.0])
    assert iou == pytest.approx(0.25, abs=1e-9)
    assert ciou == pytest.approx(iou, abs=1e-9)


def test_ciou_is_one_and_loss_zero_for_identical_boxes():
    ciou, iou = _ciou([3.0, 7.0, 5.0, 9.0], [3.0, 7.0, 5.0, 9.0])
    assert ciou == pytest.approx(1.0, abs=1e-9)
    assert 1.0 - ciou == pytest.approx(0.0, abs=1e-9)


def test_ciou_decreases_with_centre_distance():
    values = [_ciou([10.0 + dx, 10.0, 6.0, 4.0], [10.0, 10.0, 6.0, 4.0])[0] for dx in range(12)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))
    assert values[-1] < 0  # disjoint boxes: IoU 0, the distance term still pulls


def test_ciou_matches_a_hand_computed_value():
    # pred corners (-1,-1)-(1,1), target (0,-2)-(2,2): intersection 1 x 2, union 4 + 8 - 2
    iou = 2.0 / 10.0
    rho2, c2 = 1.0, 3.0**2 + 4.0**2
    v = 4.0 / math.pi**2 * (math.atan(2.0 / 4.0) - math.atan(2.0 / 2.0)) ** 2
    alpha = v / (1.0 - iou + v)
    ciou, got_iou = _ciou([0.0, 0.0, 2.0, 2.0], [1.0, 0.0, 2.0, 4.0])
    assert got_iou == pytest.approx(iou, abs=1e-9)
    assert ciou == pytest.approx(iou - rho2 / c2 - alpha * v, abs=1e-9)


def test_decode_of_a_hand_built_head_gives_the_expected_box():
    heads = [np.zeros((1, 64 // s, 64 // s, 3, 7), np.float32) for s in STRIDES]
    heads = [h - 20.0 for h in heads]  # every other prediction: objectness ~ 0
    cell = heads[0][0, 2, 1, 1]  # fine scale, row 2, column 1, anchor 1 (8 x 8)
    cell[0] = math.log(0.75 / 0.25)  # sigmoid 0.75 -> 0.75 * 1.2 - 0.1 = 0.8
    cell[1] = 0.0  # sigmoid 0.5 -> 0.5 whatever scale_xy
    cell[2], cell[3] = math.log(2.0), math.log(0.5)
    cell[4] = 10.0
    cell[5:] = [-10.0, 10.0]
    boxes, scores = decode([tf.constant(h) for h in heads], ANCHORS, STRIDES, SCALE_XY)
    assert boxes.shape == (1, 3 * (8 * 8 + 4 * 4 + 2 * 2), 4) and scores.shape[-1] == 2
    i = (2 * 8 + 1) * 3 + 1
    cx, cy, w, h = (1 + 0.8) * 8, (2 + 0.5) * 8, 16.0, 4.0
    np.testing.assert_allclose(
        boxes[0, i].numpy(), [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], atol=1e-4
    )
    np.testing.assert_allclose(scores[0, i].numpy(), [0.0, 1.0], atol=1e-4)
    assert int(tf.argmax(scores[0, :, 1])) == i


def _loss_setup(seed: int = 0):
    strides, anchors = (
        (16, 32),
        np.array([[[8, 8], [12, 20], [20, 12]], [[24, 24], [32, 48], [48, 32]]]),
    )
    encoder = LabelEncoder(64, strides, anchors, 3)
    boxes = [np.array([[4.0, 6.0, 14.0, 26.0], [30.0, 30.0, 62.0, 60.0]]), np.zeros((0, 4))]
    labels = encoder.encode_batch(boxes, [np.array([2, 0]), np.zeros(0)])
    rng = np.random.default_rng(seed)
    heads = [
        tf.Variable(rng.normal(0.0, 0.1, (2, 64 // s, 64 // s, 3, 8)).astype(np.float32))
        for s in strides
    ]
    loss = YoloLoss(anchors, strides, (1.1, 1.05), 3, LossConfig(label_smoothing=0.1))
    return loss, labels, heads


def test_loss_is_finite_and_falls_under_a_few_adam_steps():
    loss, labels, heads = _loss_setup()
    targets = [tf.constant(t) for t in labels.targets]
    gt = tf.constant(labels.gt_boxes)
    optimizer = tf.keras.optimizers.Adam(learning_rate=0.05)
    history = []
    for _ in range(25):
        with tf.GradientTape() as tape:
            parts = loss(targets, gt, heads)
        grads = tape.gradient(parts["total"], heads)
        assert all(np.all(np.isfinite(g.numpy())) for g in grads)
        optimizer.apply_gradients(zip(grads, heads, strict=True))
        history.append({k: float(v) for k, v in parts.items()})
    first, last = history[0], history[-1]
    assert all(math.isfinite(v) for v in first.values())
    assert first["total"] == pytest.approx(first["box"] + first["obj"] + first["cls"], rel=1e-6)
    assert last["total"] < 0.5 * first["total"]
    assert last["box"] < first["box"] and last["cls"] < first["cls"]


def test_objectness_ignores_unassigned_predictions_overlapping_a_ground_truth():
    strides, anchors = (32,), np.array([[[16, 16], [30, 30], [60, 60]]])
    encoder = LabelEncoder(64, strides, anchors, 1, EncoderConfig(iou_thresh=1.0))
    labels = encoder.encode_batch([np.array([[2.0, 2.0, 30.0, 30.0]])], [np.array([0])])
    assert labels.targets[0][0, 0, 0, :, 4].tolist() == [0, 1, 0]  # 28 x 28 -> the 30 x 30 anchor
    head = np.zeros((1, 2, 2, 3, 6), np.float32)
    head[..., 4] = -30.0  # every prediction confidently "no object" ...
    head[0, 0, 0, 1, 4] = 30.0  # ... but the assigned one, confidently "object"
    # the unassigned 60 x 60 anchor of the same cell predicts (1, 1)-(31, 31): IoU 784 / 900
    head[0, 0, 0, 2, 2:4] = math.log(0.5)
    head[0, 0, 0, 2, 4] = 30.0
    targets = [tf.constant(t) for t in labels.targets]
    gt = tf.constant(labels.gt_boxes)

    def obj_loss(ignore_thresh):
        loss = YoloLoss(anchors, strides, 1.0, 1, LossConfig(ignore_thresh=ignore_thresh))
        return float(loss(targets, gt, [tf.constant(head)])["obj"])

    assert obj_loss(0.7) < 1e-6  # IoU 0.87 > 0.7: no objectness loss for it
    assert obj_loss(0.9) == pytest.approx(30.0, abs=1e-3)  # counted: BCE of logit 30 vs 0
