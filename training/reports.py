"""A model version's test figures as the model page shows them: the paper's per-class table
(one-vs-rest accuracy, precision, recall, F1 in percent) and the detector's AP and image-level
figures. Pure (no Django import): plain dicts in, plain dicts out."""

from __future__ import annotations

import math

from annotation.bethesda import BETHESDA, DESCRIPTIONS
from training.metrics import METRIC_NAMES


def number(value) -> float | None:
    """A finite number, or None (JSON figures may be missing, null, NaN or text)."""
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def percentages(values: dict) -> list[float | None]:
    """accuracy, precision, recall, F1 of one row as percentages (the paper's Table 2)."""
    return [None if number(values.get(k)) is None else 100 * values[k] for k in METRIC_NAMES]


def report_rows(report: dict) -> dict | None:
    """The test report as the paper's table: per class and average, one-vs-rest."""
    classes = report.get("classes") or {}
    if not classes:
        return None
    # class_names keeps the report's order (Bethesda's); a JSON column does not keep key order
    order = [n for n in report.get("class_names") or BETHESDA if n in classes]
    order += [n for n in classes if n not in order]
    rows = [{"name": name, "description": DESCRIPTIONS.get(name, ""), "cells": percentages(classes[name]),
             "support": classes[name].get("support")} for name in order]
    overall = number(report.get("overall_accuracy"))
    return {"rows": rows, "average": percentages(report.get("average") or {}),
            "overall_accuracy": None if overall is None else 100 * overall, "n": report.get("n")}


def detector_report(metrics: dict) -> dict:
    """A detector version's test figures: AP@0.5 per class and mAP, image-level presence per
    class and for >= ASC-US at the operating threshold, and the threshold with what it costs."""
    test = metrics.get("test") or {}
    ap = (test.get("ap") or {}).get("classes") or {}
    presence = test.get("classes") or {}

    def pct(value):
        value = number(value)
        return None if value is None else 100 * value

    def presence_row(name, row):
        return {"name": name, "recall": pct(row.get("recall")), "precision": pct(row.get("precision")),
                "f1": pct(row.get("f1")), "accuracy": pct(row.get("accuracy"))}

    rows = []
    for name in BETHESDA[1:]:
        if name in ap or name in presence:
            rows.append({**presence_row(name, presence.get(name) or {}),
                         "ap": pct((ap.get(name) or {}).get("ap")), "num_gt": (ap.get(name) or {}).get("num_gt")})
    threshold = metrics.get("threshold") or {}
    anchors = metrics.get("anchors") or {}
    return {
        "map": pct(test.get("map")), "rows": rows,
        "atypical": presence_row(">= ASC-US", test.get("atypical") or {}) if test.get("atypical") else None,
        "threshold": number(threshold.get("threshold")), "val_recall": pct(threshold.get("recall")),
        "val_precision": pct(threshold.get("precision")), "target_recall": pct(threshold.get("target_recall")),
        "threshold_source": threshold.get("source"), "threshold_reason": threshold.get("reason"),
        "anchors_source": anchors.get("source"), "anchors_reason": anchors.get("reason"),
        "n": test.get("n"),
    }
