"""The classifier's evaluation (no Django import): probabilities for a set of crops, the
validation macro-F1 the loop keeps the best weights by, and the test split's report in the
paper's form (``training.metrics.classification_report``)."""

from __future__ import annotations

import numpy as np

from training.classifier.data import eval_dataset
from training.metrics import classification_report, macro_f1


def predict_probabilities(model, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    if len(images) == 0:
        return np.zeros((0, 6), dtype=np.float32)
    dummy = np.zeros((len(images), 6), dtype=np.float32)
    out = []
    for batch, _ in eval_dataset(images, dummy, batch_size):
        out.append(np.asarray(model(batch, training=False)["probabilities"]))
    return np.concatenate(out)


def validation_macro_f1(model, images: np.ndarray, labels: np.ndarray) -> float:
    """Macro-F1 of the argmax predictions; 0.0 without validation crops."""
    if not len(labels):
        return 0.0
    return float(macro_f1(labels, predict_probabilities(model, images).argmax(axis=1)))


def split_report(model, images: np.ndarray, labels: np.ndarray) -> dict | None:
    """The paper's per-class report of a split's crops (the test split's, at the end); None
    without any."""
    if not len(labels):
        return None
    return classification_report(labels, predict_probabilities(model, images).argmax(axis=1))
