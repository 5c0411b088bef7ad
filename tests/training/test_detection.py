"""YOLOv4 detection pieces: anchors, label encoder, CIoU loss and decoding, NMS, letterbox, and the
evaluation (AP@0.5 checked against pycocotools' COCOeval, image-level recall-first threshold)."""

from __future__ import annotations

import contextlib
import io
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from training.detection.anchors import avg_iou, kmeans_anchors, sizes_at_input, split_anchors
from training.detection.boxes import box_iou, xyxy_to_xywh
from training.detection.encoder import EncoderConfig, LabelEncoder
from training.detection.evaluate import (
    GroundTruth,
    average_precision,
    choose_threshold,
    image_level_report,
)
from training.detection.letterbox import letterbox, letterbox_geometry, unletterbox
from training.detection.loss import LossConfig, YoloLoss, bbox_ciou, decode
from training.detection.nms import Detections, batched_nms, nms, postprocess

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


# --- anchors -----------------------------------------------------------------------------------


def _planted_sizes(seed: int = 0, per_cluster: int = 60):
    rng = np.random.default_rng(seed)
    planted = np.array(
        [
            [12, 16],
            [19, 36],
            [40, 28],
            [36, 75],
            [76, 55],
            [72, 146],
            [142, 110],
            [192, 243],
            [459, 401],
        ],
        dtype=np.float64,
    )
    jitter = np.exp(rng.normal(0.0, 0.04, size=(planted.shape[0], per_cluster, 2)))
    return planted, (planted[:, None, :] * jitter).reshape(-1, 2)


def test_kmeans_recovers_planted_anchor_clusters():
    planted, wh = _planted_sizes()
    fit = kmeans_anchors(wh, k=9, seed=1)
    np.testing.assert_allclose(fit.anchors, planted, rtol=0.03)
    areas = fit.anchors[:, 0] * fit.anchors[:, 1]
    assert np.all(np.diff(areas) > 0)
    assert fit.avg_iou == pytest.approx(avg_iou(wh, fit.anchors), abs=1e-12)
    assert fit.avg_iou > 0.9
    assert fit.per_scale().shape == (3, 3, 2)
    np.testing.assert_array_equal(np.bincount(fit.assignments, minlength=9), [60] * 9)


def test_kmeans_is_reproducible_for_a_seed():
    _, wh = _planted_sizes(seed=3)
    a = kmeans_anchors(wh, k=6, seed=7, n_init=2)
    b = kmeans_anchors(wh, k=6, seed=7, n_init=2)
    np.testing.assert_array_equal(a.anchors, b.anchors)
    assert a.avg_iou == b.avg_iou


def test_avg_iou_is_corner_aligned_iou():
    assert avg_iou([[2.0, 2.0]], [[1.0, 1.0]]) == pytest.approx(0.25)
    assert avg_iou([[1.0, 2.0]], [[2.0, 1.0]]) == pytest.approx(1.0 / 3.0)
    assert avg_iou([[1.0, 2.0], [2.0, 2.0]], [[2.0, 1.0], [2.0, 2.0]]) == pytest.approx(
        (0.5 + 1.0) / 2
    )


def test_kmeans_refuses_too_few_distinct_sizes():
    with pytest.raises(ValueError, match="distinct"):
        kmeans_anchors([[10.0, 10.0]] * 20 + [[5.0, 5.0]] * 20, k=3)


def test_split_anchors_gives_the_finest_scale_the_smallest():
    anchors = np.array([[30, 30], [2, 2], [10, 10], [4, 4], [20, 20], [1, 1]], dtype=float)
    groups = split_anchors(anchors)
    np.testing.assert_array_equal(groups[0], [[1, 1], [2, 2], [4, 4]])
    np.testing.assert_array_equal(groups[1], [[10, 10], [20, 20], [30, 30]])


def test_sizes_at_input_follow_the_letterbox_scale():
    out = sizes_at_input([[100.0, 50.0]], (1636, 1088), 416)
    info = letterbox_geometry(1636, 1088, 416)
    np.testing.assert_allclose(out, [[100.0 * info.scale_x, 50.0 * info.scale_y]])


# --- label encoder -----------------------------------------------------------------------------


def _encoder(num_classes: int = 5, **config) -> LabelEncoder:
    return LabelEncoder(64, STRIDES, ANCHORS, num_classes, EncoderConfig(**config))


def test_encoder_targets_have_the_head_shapes():
    encoder = _encoder(num_classes=5)
    out = encoder.encode_batch([np.zeros((0, 4)), [[1, 1, 9, 9]]], [[], [2]])
    shapes = [t.shape for t in out.targets]
    assert shapes == [(2, 64 // s, 64 // s, 3, 10) for s in STRIDES]
    assert out.gt_boxes.shape == (2, 100, 4)
    assert not out.targets[0][0].any()
    assert encoder.output_shapes[:3] == tuple(s[1:] for s in shapes)


def test_encoder_puts_a_box_at_its_best_anchor_scale_and_centre_cell():
    encoder = _encoder(iou_thresh=1.0)  # best anchor only
    # 20 x 28 is anchor 1 of the stride-16 scale; centre (41, 22) -> column 2, row 1
    box = [31.0, 8.0, 51.0, 36.0]
    out = encoder.encode(np.array([box]), np.array([3]))
    fine, mid, coarse = out.targets
    assert not fine.any() and not coarse.any()
    assert np.count_nonzero(mid[..., 4]) == 1
    np.testing.assert_allclose(mid[1, 2, 1], [41, 22, 20, 28, 1, 0, 0, 0, 1, 0])
    np.testing.assert_allclose(out.gt_boxes[0], box)
    assert not out.gt_boxes[1:].any()


def test_encoder_also_assigns_anchors_above_iou_thresh():
    encoder = _encoder()  # iou_thresh 0.213
    # 16 x 16 at centre (20, 44): best anchor 16x12 (IoU 0.75); 8x8 (0.25), 10x16 (0.625),
    # 20x28 (0.457) and 32x24 (0.333) pass 0.213; 4x6 (0.094) and the coarse ones do not
    out = encoder.encode(np.array([[12.0, 36.0, 28.0, 52.0]]), np.array([0]))
    fine, mid, coarse = out.targets
    assert np.flatnonzero(fine[5, 2, :, 4]).tolist() == [1, 2]
    assert np.flatnonzero(mid[2, 1, :, 4]).tolist() == [0, 1, 2]
    assert fine[..., 4].sum() == 2 and mid[..., 4].sum() == 3 and not coarse.any()


def test_encoder_best_anchor_claim_beats_a_threshold_claim():
    encoder = _encoder()
    # both centred at (5, 8): fine cell row 1, column 0; the 10x16 box owns anchor 2 as its best anchor,
    # the 8x8 box would reach anchor 2 only through the threshold
    boxes = np.array([[0.0, 0.0, 10.0, 16.0], [1.0, 4.0, 9.0, 12.0]])
    out = encoder.encode(boxes, np.array([4, 1]))
    np.testing.assert_allclose(out.targets[0][1, 0, 2, :4], [5, 8, 10, 16])
    assert out.targets[0][1, 0, 2, 5 + 4] == 1
    np.testing.assert_allclose(out.targets[0][1, 0, 1, :4], [5, 8, 8, 8])


def test_encoder_assigns_a_shared_best_anchor_at_both_scales():
    # yolov4-tiny's masks: anchor 81 x 82 serves both the stride-16 and the stride-32 head
    anchors = np.array([[[23, 27], [37, 58], [81, 82]], [[81, 82], [135, 169], [344, 319]]])
    encoder = LabelEncoder(416, (16, 32), anchors, 1, EncoderConfig(iou_thresh=1.0))
    out = encoder.encode(np.array([[100.0, 100.0, 180.0, 184.0]]), np.array([0]))
    assert out.targets[0][8, 8, 2, 4] == 1 and out.targets[1][4, 4, 0, 4] == 1
    assert out.targets[0][..., 4].sum() == 1 and out.targets[1][..., 4].sum() == 1


def test_encoder_rejects_classes_out_of_range():
    with pytest.raises(ValueError, match="classes"):
        _encoder(num_classes=2).encode([[0, 0, 4, 4]], [2])


# --- CIoU, loss, decode ------------------------------------------------------------------------


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


# --- NMS and letterbox -------------------------------------------------------------------------


def test_nms_removes_overlaps_within_a_class_and_keeps_other_classes():
    boxes = np.array(
        [[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]], dtype=float
    )
    scores = np.array(
        [[0.9, 0.0], [0.8, 0.0], [0.0, 0.7], [0.6, 0.0]]  # box 2 is the same place, class 1
    )
    det = batched_nms(boxes, scores, score_threshold=0.1, iou_threshold=0.45)
    assert det.scores.tolist() == [0.9, 0.7, 0.6]
    assert det.classes.tolist() == [0, 1, 0]
    np.testing.assert_array_equal(det.boxes, boxes[[0, 2, 3]])
    loose = batched_nms(boxes, scores, score_threshold=0.1, iou_threshold=0.9)
    assert len(loose) == 4


def test_nms_keeps_max_detections_by_score():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 1000, (50, 2))
    boxes = np.concatenate([xy, xy + 5], axis=1)
    det = batched_nms(boxes, rng.uniform(0.1, 1, (50, 1)), max_detections=7)
    assert len(det) == 7 and np.all(np.diff(det.scores) <= 0)


def test_nms_agrees_with_tensorflow_and_stops_early_without_changing_the_result():
    rng = np.random.default_rng(4)
    xy = rng.uniform(0, 200, (300, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 60, (300, 2))], axis=1)
    scores = rng.permutation(300) / 300.0  # distinct scores: one greedy order
    ours = nms(boxes, scores, 0.45)
    theirs = tf.image.non_max_suppression(boxes, scores, 300, iou_threshold=0.45).numpy()
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(nms(boxes, scores, 0.45, max_output=10), ours[:10])


def test_detection_modules_import_neither_django_nor_tensorflow():
    code = (
        "import sys\n"
        "import training.detection.anchors, training.detection.encoder\n"
        "import training.detection.evaluate, training.detection.letterbox\n"
        "import training.detection.nms\n"
        "bad = [m for m in ('django', 'tensorflow') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(root)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, env=env, timeout=120)


def test_letterbox_round_trip_is_exact():
    info = letterbox_geometry(1636, 1088, 416)
    assert (info.resized_width, info.resized_height) == (416, 277)
    assert (info.pad_x, info.pad_y) == (0, 69)
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 1500, (200, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 80, (200, 2))], axis=1)
    back = unletterbox(info.to_input(boxes), info)
    np.testing.assert_allclose(back, np.minimum(boxes, [1636, 1088] * 2), rtol=0, atol=1e-9)


def test_letterbox_keeps_boxes_on_their_pixels():
    image = np.zeros((64, 128, 3), np.uint8)
    image[20:36, 40:72] = 255  # box (40, 20)-(72, 36)
    canvas, info = letterbox(image, 64)
    assert canvas.shape == (64, 64, 3) and info.pad_y == 16
    x1, y1, x2, y2 = info.to_input([[40, 20, 72, 36]])[0]
    assert (x1, y1, x2, y2) == (20.0, 26.0, 36.0, 34.0)
    assert np.all(canvas[26:34, 20:36] == 255)
    rows, cols = np.nonzero(canvas[..., 0] > 128)  # nothing bright outside the box
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (26, 34, 20, 36)
    assert np.all(canvas[:16] == 128) and np.all(canvas[48:] == 128)
    same, same_info = letterbox(image[:32], (32, 128))
    np.testing.assert_array_equal(same, image[:32])
    np.testing.assert_array_equal(unletterbox([[40, 20, 72, 31]], same_info), [[40, 20, 72, 31]])


def test_postprocess_returns_boxes_in_the_original_image():
    info = letterbox_geometry(200, 100, 64)  # scale 0.32, pad_y 16
    boxes = np.array([[[16.0, 24.0, 32.0, 40.0], [0.0, 0.0, 64.0, 10.0]]])
    scores = np.array([[[0.9], [0.8]]])
    (det,) = postprocess(boxes, scores, [info], score_threshold=0.5)
    np.testing.assert_allclose(det.boxes, [[50.0, 25.0, 100.0, 75.0]])  # border box dropped
    assert det.classes.tolist() == [0]


# --- evaluation --------------------------------------------------------------------------------


def _random_dataset(seed: int, n_images: int = 50, num_classes: int = 5):
    rng = np.random.default_rng(seed)
    truths, detections = [], []
    for i in range(n_images):
        n_gt = 0 if i % 7 == 0 else int(rng.integers(1, 6))
        xy = rng.uniform(0, 400, (n_gt, 2))
        gt = np.concatenate([xy, xy + rng.uniform(10, 80, (n_gt, 2))], axis=1)
        gt_cls = rng.integers(0, num_classes - 1, n_gt)  # the last class never has ground truth
        boxes, scores, classes = [], [], []
        for box, c in zip(gt, gt_cls, strict=True):
            for _ in range(int(rng.integers(0, 3))):  # near hits, some duplicates
                boxes.append(box + rng.normal(0, 6, 4))
                scores.append(rng.uniform())
                classes.append(c if rng.uniform() < 0.8 else rng.integers(0, num_classes))
        for _ in range(int(rng.integers(0, 5))):  # false positives, some of the last class
            p = rng.uniform(0, 400, 2)
            boxes.append(np.concatenate([p, p + rng.uniform(10, 80, 2)]))
            scores.append(rng.uniform())
            classes.append(rng.integers(0, num_classes))
        b = np.array(boxes, dtype=float).reshape(-1, 4)
        b[:, 2:] = np.maximum(b[:, 2:], b[:, :2] + 1)
        truths.append(GroundTruth(gt, gt_cls))
        detections.append(Detections(b, np.array(scores), np.array(classes, dtype=int)))
    return detections, truths


def _cocoeval_precision(detections, truths, num_classes):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, results = [], [], []
    for i, (det, truth) in enumerate(zip(detections, truths, strict=True)):
        images.append({"id": i + 1, "width": 500, "height": 500})
        for box, c in zip(xyxy_to_xywh(truth.boxes), truth.classes, strict=True):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": int(c) + 1,
                    "bbox": [float(v) for v in box],
                    "area": float(box[2] * box[3]),
                    "iscrowd": 0,
                }
            )
        for box, s, c in zip(xyxy_to_xywh(det.boxes), det.scores, det.classes, strict=True):
            results.append(
                {
                    "image_id": i + 1,
                    "category_id": int(c) + 1,
                    "bbox": [float(v) for v in box],
                    "score": float(s),
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": k + 1, "name": str(k)} for k in range(num_classes)],
        }
        gt.createIndex()
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.params.iouThrs = np.array([0.5])
        ev.evaluate()
        ev.accumulate()
    assert ev.params.maxDets[-1] == 100
    return ev.eval["precision"][0, :, :, 0, -1]  # (101 recall points, K), area "all", 100 dets


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_map_equals_pycocotools_cocoeval(seed):
    detections, truths = _random_dataset(seed)
    precision = _cocoeval_precision(detections, truths, 5)
    ours = average_precision(detections, truths, 5)
    valid = precision[0] > -1
    assert valid.tolist() == [True, True, True, True, False]
    coco_ap = np.where(valid, precision.mean(axis=0), np.nan)
    np.testing.assert_allclose(ours.ap, coco_ap, rtol=0, atol=1e-6, equal_nan=True)
    assert abs(ours.map - float(np.mean(precision[precision > -1]))) < 1e-6
    assert ours.num_gt[4] == 0


def test_ap_matching_is_greedy_by_score_one_truth_per_detection():
    truth = GroundTruth([[0, 0, 10, 10]], [0])
    det = Detections([[0, 0, 10, 10], [0, 0, 10, 10]], [0.5, 0.9], [0, 0])
    result = average_precision([det], [truth], 1)
    assert result.ap[0] == pytest.approx(1.0)  # the 0.9 one matches; the duplicate is an FP later
    worse = Detections([[0, 0, 10, 10], [30, 30, 40, 40]], [0.5, 0.9], [0, 0])
    assert average_precision([worse], [truth], 1).ap[0] == pytest.approx(0.5)


def _image_level_fixture():
    # four images: HSIL (class 3), LSIL (class 1), NILM, NILM
    truths = [
        GroundTruth([[0, 0, 10, 10]], [3]),
        GroundTruth([[0, 0, 10, 10]], [1]),
        GroundTruth(np.zeros((0, 4)), []),
        GroundTruth(np.zeros((0, 4)), []),
    ]
    box = [[0, 0, 10, 10]]
    detections = [
        Detections(box * 2, [0.6, 0.3], [3, 0]),
        Detections(box, [0.2], [1]),
        Detections(box, [0.4], [0]),
        Detections(np.zeros((0, 4)), [], []),
    ]
    return detections, truths


def test_choose_threshold_keeps_every_abnormal_image_at_the_highest_threshold():
    detections, truths = _image_level_fixture()
    choice = choose_threshold(detections, truths)
    assert choice.threshold == pytest.approx(0.2)  # the weakest abnormal image's best score
    assert choice.achieved and choice.recall == 1.0
    assert choice.precision == pytest.approx(2 / 3)  # the NILM image at 0.4 is flagged too
    above = image_level_report(detections, truths, np.nextafter(choice.threshold, 1.0))
    assert above["atypical"]["recall"] == 0.5  # any higher threshold loses an abnormal image
    np.testing.assert_allclose(choice.thresholds, [0.6, 0.4, 0.2])
    np.testing.assert_allclose(choice.recalls, [0.5, 0.5, 1.0])
    np.testing.assert_allclose(choice.precisions, [1.0, 0.5, 2 / 3])


def test_choose_threshold_reports_an_unreachable_recall():
    detections, truths = _image_level_fixture()
    detections[1] = Detections(np.zeros((0, 4)), [], [])
    choice = choose_threshold(detections, truths)
    assert not choice.achieved and choice.recall == 0.5 and choice.threshold == pytest.approx(0.6)


def test_image_level_report_counts_images_and_builds_the_verdict_matrix():
    detections, truths = _image_level_fixture()
    report = image_level_report(detections, truths, threshold=0.25)
    assert report["atypical"] == {
        "accuracy": 0.5,
        "precision": 0.5,
        "recall": 0.5,
        "f1": 0.5,
        "support": 2,
        "tp": 1,
        "fp": 1,
        "fn": 1,
        "tn": 1,
    }
    assert report["classes"]["HSIL"]["tp"] == 1
    assert report["classes"]["LSIL"]["fn"] == 1
    assert report["classes"]["ASC-US"]["fp"] == 2  # images 0 and 2 at 0.3 and 0.4
    cm = np.array(report["verdict"]["confusion_matrix"])
    assert report["verdict"]["class_names"] == ["NILM", "ASC-US", "LSIL", "ASC-H", "HSIL", "SCC"]
    expected = np.zeros((6, 6), int)
    expected[4, 4] = 1  # HSIL called HSIL (its ASC-US box is a lower grade)
    expected[2, 0] = 1  # LSIL missed at 0.25
    expected[0, 1] = 1  # NILM called ASC-US
    expected[0, 0] = 1
    np.testing.assert_array_equal(cm, expected)


def test_box_iou_of_disjoint_and_nested_boxes():
    iou = box_iou([[0, 0, 10, 10]], [[20, 20, 30, 30], [0, 0, 5, 10]])
    np.testing.assert_allclose(iou, [[0.0, 0.5]])
