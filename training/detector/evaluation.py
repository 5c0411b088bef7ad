"""The detector's evaluation (no Django import): a trained detector's detections in the
original images' pixels (``DetectorPredictor``), the validation mAP@0.5 the loop keeps the best
weights by, the operating score threshold chosen on the validation images, and the test split's
report. The AP and image-level math is in ``training.detection.evaluate`` (pure NumPy).
"""

from __future__ import annotations

import math

import numpy as np

from training.detection.evaluate import (
    GroundTruth,
    average_precision,
    choose_threshold,
    image_level_report,
)
from training.detection.nms import SCORE_THRESHOLD, postprocess
from training.detector.data import Split

#: The threshold used when the validation images cannot choose one (no atypical image among
#: them): Darknet's default detection threshold.
DEFAULT_THRESHOLD = 0.25
#: ">= ASC-US": any detector class counts as atypical for the image-level verdict.
MIN_ATYPICAL_CLASS = 0


class DetectorPredictor:
    """Raw heads -> ``Detections`` in the original images' pixels, for a trained detector.

    ``predict(canvases uint8 (N, S, S, 3), letterboxes)``: the forward pass and decoding run in
    one traced function (any batch size, traced once); NMS and the letterbox undo in NumPy.
    """

    def __init__(self, detector, batch_size: int = 16, score_threshold: float | None = None) -> None:
        import tensorflow as tf  # heavy optional imports (the loss module imports TensorFlow)

        from training.detection.loss import decode

        self.detector = detector
        self.batch_size = int(batch_size)
        self.score_threshold = score_threshold
        size = int(detector.input_size)
        anchors = np.asarray(detector.anchors, dtype=np.float64)
        strides = tuple(detector.strides)
        scale_xy = tuple(detector.scale_x_y) if detector.scale_x_y else 1.0

        @tf.function(input_signature=[tf.TensorSpec((None, size, size, 3), tf.uint8)])
        def forward(batch):
            images = tf.cast(batch, tf.float32) / 255.0
            return decode(detector(images, training=False), anchors, strides, scale_xy)

        self._forward = forward

    def predict(self, canvases: np.ndarray, letterboxes) -> list:
        threshold = SCORE_THRESHOLD if self.score_threshold is None else self.score_threshold
        out = []
        for start in range(0, len(canvases), self.batch_size):
            boxes, scores = self._forward(canvases[start : start + self.batch_size])
            out.extend(postprocess(np.asarray(boxes), np.asarray(scores),
                                   letterboxes[start : start + self.batch_size],
                                   score_threshold=threshold))
        return out


def ground_truths(split: Split) -> list:
    return [GroundTruth(b, c) for b, c in zip(split.boxes, split.classes, strict=True)]


def threshold_dict(choice, min_class: int = 0) -> dict:
    """A ``ThresholdChoice`` as JSON data (the curve under "curve")."""
    return {
        "threshold": float(choice.threshold),
        "recall": float(choice.recall),
        "precision": float(choice.precision),
        "f1": float(choice.f1),
        "achieved": bool(choice.achieved),
        "target_recall": float(choice.target_recall),
        "min_class": int(min_class),
        "source": "validation",
        "reason": None,
        "curve": {
            "thresholds": [float(v) for v in choice.thresholds],
            "recalls": [float(v) for v in choice.recalls],
            "precisions": [float(v) for v in choice.precisions],
        },
    }


def detection_report(detections, truths, threshold: float, num_classes: int) -> dict:
    """The test split's report: ``image_level_report`` at ``threshold`` (threshold, n, classes,
    atypical, verdict with its confusion matrix) plus "ap" (``APResult.as_dict``) and "map"."""
    ap = average_precision(detections, truths, num_classes).as_dict()
    report = image_level_report(detections, truths, threshold, num_classes)
    return {**report, "ap": ap, "map": ap["map"]}


def map_or_none(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def validation_map(predictor: DetectorPredictor, canvases, letterboxes, truths, num_classes: int
                   ) -> float | None:
    """mAP@0.5 of the validation images (None when it is not a number)."""
    detections = predictor.predict(canvases, letterboxes)
    return map_or_none(average_precision(detections, truths, num_classes).map)


def operating_threshold(predictor: DetectorPredictor, val: Split, canvases, letterboxes, truths,
                        target_recall: float) -> dict:
    """The operating score threshold as JSON data: the highest that keeps image-level recall for
    ">= ASC-US" at ``target_recall`` on the validation images (``threshold_dict``), or
    ``DEFAULT_THRESHOLD`` when no validation image has an atypical box."""
    min_class = MIN_ATYPICAL_CLASS
    if len(val) and any(c.size and c.max() >= min_class for c in val.classes):
        detections = predictor.predict(canvases, letterboxes)
        choice = choose_threshold(detections, truths, target_recall=target_recall, min_class=min_class)
        return threshold_dict(choice, min_class)
    return {"threshold": DEFAULT_THRESHOLD, "source": "default", "min_class": min_class,
            "reason": "no validation image has an atypical box to set the threshold on"}
