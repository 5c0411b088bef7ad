"""YOLOv4 detection pieces: NMS, letterbox and post-processing, and the evaluation (AP@0.5
checked against pycocotools' COCOeval, image-level recall-first threshold)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from training.detection.boxes import xyxy_to_xywh
from training.detection.evaluate import (
    GroundTruth,
    average_precision,
    choose_threshold,
    image_level_report,
)
from training.detection.letterbox import letterbox, letterbox_geometry, unletterbox
from training.detection.nms import Detections, batched_nms, nms, postprocess

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
    root = Path(__file__).resolve().parents[3]
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
