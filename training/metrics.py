"""Classification metrics as the paper reports them (section 2.3, Tables 2 and 3).

Pure module (NumPy; matplotlib only inside ``plot_confusion_matrix``, Agg backend).

Per class, one-vs-rest, with TP, FP, FN, TN counted over all N images:
    accuracy  = (TP + TN) / N
    precision = TP / (TP + FP)
    recall    = TP / (TP + FN)          (sensitivity)
    F1        = 2 * precision * recall / (precision + recall)
"Average" (the paper's row) is the unweighted mean over the classes (macro average) of each of
the four; the macro F1 is the mean of the per-class F1s, not the F1 of the mean precision and
recall. Overall accuracy (share of images whose class is right) is reported beside them.

Zero division: a ratio whose denominator is 0 (a class never predicted, or absent from the
truth) is 0, as scikit-learn's ``zero_division=0``; such a class still counts in the averages.
Rows of the confusion matrix are the true class, columns the predicted class, in Bethesda order.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from annotation.bethesda import BETHESDA, NUM_CLASSES

METRIC_NAMES: tuple[str, ...] = ("accuracy", "precision", "recall", "f1")


def _labels(values, num_classes: int, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be 1-D class indices, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        if arr.dtype.kind != "f" or not np.all(arr == np.round(arr)):
            raise ValueError(f"{what} must be integer class indices")
    arr = arr.astype(np.int64)
    bad = np.flatnonzero((arr < 0) | (arr >= num_classes))
    if bad.size:
        raise ValueError(
            f"{what}[{int(bad[0])}] = {int(arr[bad[0]])} out of range 0..{num_classes - 1}"
        )
    return arr


def confusion_matrix(y_true, y_pred, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """(num_classes, num_classes) int64 counts: rows true class, columns predicted class."""
    t = _labels(y_true, num_classes, "y_true")
    p = _labels(y_pred, num_classes, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} items but y_pred has {p.size}")
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = num.astype(np.float64)
    den = den.astype(np.float64)
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den != 0)
    return out


def per_class_metrics(cm: np.ndarray) -> dict[str, np.ndarray]:
    """One-vs-rest accuracy, precision, recall, F1 (and tp, fp, fn, tn, support) per class."""
    cm = np.asarray(cm, dtype=np.int64)
    n = cm.sum()
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    tn = n - tp - fp - fn
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    f1 = _ratio(2.0 * precision * recall, precision + recall)
    accuracy = _ratio(tp + tn, np.full_like(tp, n))
    return {
        "accuracy": accuracy,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "support": tp + fn,
    }


def classification_report(
    y_true, y_pred, num_classes: int = NUM_CLASSES, class_names: Sequence[str] | None = None
) -> dict:
    """The paper's table as plain JSON-serialisable data.

    {"classes": {name: {"accuracy", "precision", "recall", "f1", "support", "tp", "fp", "fn",
    "tn"}}, "average": {"accuracy", "precision", "recall", "f1"} (macro means over the classes),
    "overall_accuracy", "n", "class_names", "confusion_matrix" (list of lists)}.
    Ratios are floats in [0, 1]; a zero denominator gives 0.
    """
    names = _names(class_names, num_classes)
    cm = confusion_matrix(y_true, y_pred, num_classes)
    m = per_class_metrics(cm)
    n = int(cm.sum())
    classes = {}
    for i, name in enumerate(names):
        classes[name] = {
            "accuracy": float(m["accuracy"][i]),
            "precision": float(m["precision"][i]),
            "recall": float(m["recall"][i]),
            "f1": float(m["f1"][i]),
            "support": int(m["support"][i]),
            "tp": int(m["tp"][i]),
            "fp": int(m["fp"][i]),
            "fn": int(m["fn"][i]),
            "tn": int(m["tn"][i]),
        }
    average = {key: float(np.mean(m[key])) for key in METRIC_NAMES}
    return {
        "classes": classes,
        "average": average,
        "overall_accuracy": float(np.trace(cm) / n) if n else 0.0,
        "n": n,
        "class_names": list(names),
        "confusion_matrix": cm.tolist(),
    }


def macro_f1(y_true, y_pred, num_classes: int = NUM_CLASSES) -> float:
    """Mean of the per-class F1 scores (the paper's average F-measure; model selection metric)."""
    return float(np.mean(per_class_metrics(confusion_matrix(y_true, y_pred, num_classes))["f1"]))


def _names(class_names: Sequence[str] | None, num_classes: int) -> tuple[str, ...]:
    if class_names is None:
        if num_classes == NUM_CLASSES:
            return BETHESDA
        return tuple(str(i) for i in range(num_classes))
    names = tuple(str(n) for n in class_names)
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes")
    return names


def format_report_table(report: dict, digits: int = 1) -> str:
    """A text table in the style of the paper's Table 2: one row per class and an Average row,
    columns Accuracy, Precision, Recall, F-measure as percentages, plus support (n)."""
    headers = ("Bethesda class", "Accuracy", "Precision", "Recall", "F-measure", "n")
    rows = []
    for name, values in report["classes"].items():
        rows.append(
            (
                name,
                *(f"{100 * values[k]:.{digits}f}%" for k in METRIC_NAMES),
                str(values["support"]),
            )
        )
    avg = report["average"]
    rows.append(
        ("Average", *(f"{100 * avg[k]:.{digits}f}%" for k in METRIC_NAMES), str(report["n"]))
    )
    widths = [max(len(headers[c]), *(len(r[c]) for r in rows)) for c in range(len(headers))]

    def line(cells):
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(widths[c + 1]) for c, cell in enumerate(cells[1:]))
        return "  ".join((first, *rest))

    rule = "-" * len(line(headers))
    out = [line(headers), rule, *(line(r) for r in rows[:-1]), rule, line(rows[-1])]
    out.append(
        f"Overall accuracy: {100 * report['overall_accuracy']:.{digits}f}% (n = {report['n']})"
    )
    return "\n".join(out)


def plot_confusion_matrix(
    cm,
    path,
    class_names: Sequence[str] = BETHESDA,
    title: str = "Confusion matrix",
) -> Path:
    """Save the confusion matrix as a PNG: counts written in the cells, colours by the row
    share (each true class's row normalised to 1; an empty row stays white). Returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cm = np.asarray(cm, dtype=np.int64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {cm.shape}")
    names = list(class_names)
    if len(names) != cm.shape[0]:
        raise ValueError(f"{len(names)} class names for a {cm.shape[0]}-class matrix")
    rows = cm.sum(axis=1, keepdims=True)
    share = _ratio(cm, np.broadcast_to(rows, cm.shape))

    k = cm.shape[0]
    fig = Figure(figsize=(1.1 * k + 2.2, 1.0 * k + 1.8), dpi=100)
    FigureCanvasAgg(fig)  # the Agg backend for this figure only; no global pyplot state
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    ax.set_xticks(range(k), labels=names, rotation=45, ha="right")
    ax.set_yticks(range(k), labels=names)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    ax.set_title(title)
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                str(int(cm[i, j])),
                ha="center",
                va="center",
                color="white" if share[i, j] > 0.5 else "black",
                fontsize=9,
            )
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
