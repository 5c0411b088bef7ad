"""The paper's classification metrics, checked against scikit-learn and the paper's tables."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from annotation.bethesda import BETHESDA
from training.metrics import (
    classification_report,
    confusion_matrix,
    format_report_table,
    macro_f1,
    plot_confusion_matrix,
)

LABELS = list(range(6))


def _random(seed: int, n: int = 300, missing: int | None = None):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 6, n)
    y_pred = np.where(rng.random(n) < 0.6, y_true, rng.integers(0, 6, n))
    if missing is not None:  # a class never predicted and never true: zero division
        y_true[y_true == missing] = (missing + 1) % 6
        y_pred[y_pred == missing] = (missing + 2) % 6
    return y_true, y_pred


@pytest.mark.parametrize("seed,missing", [(0, None), (1, None), (2, 3), (3, 0)])
def test_report_equals_scikit_learn(seed, missing):
    y_true, y_pred = _random(seed, missing=missing)
    report = classification_report(y_true, y_pred)
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=LABELS, zero_division=0)
    mcm = skm.multilabel_confusion_matrix(y_true, y_pred, labels=LABELS)
    acc = (mcm[:, 0, 0] + mcm[:, 1, 1]) / len(y_true)
    for i, name in enumerate(BETHESDA):
        row = report["classes"][name]
        assert row["precision"] == pytest.approx(p[i], abs=1e-12)
        assert row["recall"] == pytest.approx(r[i], abs=1e-12)
        assert row["f1"] == pytest.approx(f[i], abs=1e-12)
        assert row["accuracy"] == pytest.approx(acc[i], abs=1e-12)
        assert row["support"] == s[i]
    avg = report["average"]
    mp, mr, mf, _ = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=LABELS, average="macro", zero_division=0
    )
    assert avg["precision"] == pytest.approx(mp, abs=1e-12)
    assert avg["recall"] == pytest.approx(mr, abs=1e-12)
    assert avg["f1"] == pytest.approx(mf, abs=1e-12)
    assert avg["accuracy"] == pytest.approx(acc.mean(), abs=1e-12)
    assert report["overall_accuracy"] == pytest.approx(
        skm.accuracy_score(y_true, y_pred), abs=1e-12
    )
    assert macro_f1(y_true, y_pred) == pytest.approx(
        skm.f1_score(y_true, y_pred, labels=LABELS, average="macro", zero_division=0), abs=1e-12
    )


def test_confusion_matrix_equals_scikit_learn():
    y_true, y_pred = _random(4, missing=5)
    np.testing.assert_array_equal(
        confusion_matrix(y_true, y_pred), skm.confusion_matrix(y_true, y_pred, labels=LABELS)
    )


def test_zero_division_gives_zero():
    report = classification_report([0, 0, 1], [0, 0, 0])
    for name in ("ASC-US", "LSIL", "SCC"):
        assert report["classes"][name]["precision"] == 0.0
        assert report["classes"][name]["f1"] == 0.0
    assert report["classes"]["ASC-US"]["recall"] == 0.0


def test_report_is_json_serialisable():
    report = classification_report(*_random(5))
    assert json.loads(json.dumps(report)) == report


# The paper's Table 3, ResNeSt (second step): rows true class, columns predicted class.
PAPER_RESNEST_CM = np.array(
    [
        [24, 1, 0, 0, 0, 1],
        [0, 12, 4, 6, 4, 3],
        [2, 4, 16, 3, 1, 1],
        [0, 1, 0, 28, 2, 0],
        [0, 2, 1, 3, 22, 8],
        [0, 0, 0, 2, 9, 45],
    ]
)
# The paper's Table 2, ResNeSt columns (percent): accuracy, precision, recall, F-measure.
PAPER_RESNEST_TABLE = {
    "NILM": (98.0, 92.3, 92.3, 92.3),
    "ASC-US": (87.2, 60.0, 41.4, 49.0),
    "LSIL": (92.0, 76.2, 59.3, 66.7),
    "ASC-H": (92.1, 66.7, 90.3, 76.7),
    "HSIL": (85.5, 57.9, 61.1, 59.5),
    "SCC": (88.4, 77.6, 80.4, 78.9),
    "Average": (90.5, 71.8, 70.8, 70.5),
}


def _paper_report():
    rows, cols = np.nonzero(PAPER_RESNEST_CM)
    counts = PAPER_RESNEST_CM[rows, cols]
    return classification_report(np.repeat(rows, counts), np.repeat(cols, counts))


def test_paper_table_2_precision_recall_f1_follow_from_table_3():
    report = _paper_report()
    np.testing.assert_array_equal(report["confusion_matrix"], PAPER_RESNEST_CM)
    for name, expected in PAPER_RESNEST_TABLE.items():
        row = report["average"] if name == "Average" else report["classes"][name]
        got = [100 * row[k] for k in ("precision", "recall", "f1")]
        np.testing.assert_allclose(got, expected[1:], atol=0.05 + 1e-9)


def test_paper_table_2_accuracy_close_to_one_vs_rest_from_table_3():
    # The paper's per-class accuracies do not all follow from its own Table 3 with
    # (TP + TN) / N (ASC-US: 180/205 = 87.8%, printed 87.2%); they agree within 0.6 points.
    report = _paper_report()
    for name, expected in PAPER_RESNEST_TABLE.items():
        row = report["average"] if name == "Average" else report["classes"][name]
        assert 100 * row["accuracy"] == pytest.approx(expected[0], abs=0.65)
    assert report["classes"]["NILM"]["accuracy"] == pytest.approx(201 / 205, abs=1e-15)


def test_format_report_table_lists_classes_and_average():
    text = format_report_table(classification_report([0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 4]))
    lines = text.splitlines()
    assert "Precision" in lines[0] and "F-measure" in lines[0]
    for name in BETHESDA:
        assert any(line.startswith(name) for line in lines)
    assert any(line.startswith("Average") for line in lines)
    assert "100.0%" in text


def test_plot_confusion_matrix_writes_a_png(tmp_path):
    cm = confusion_matrix(*_random(6))
    cm[2] = 0  # an empty row must not break the row normalisation
    path = plot_confusion_matrix(cm, tmp_path / "plots" / "cm.png", title="ResNeSt test")
    data = path.read_bytes()
    assert len(data) > 1000
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
