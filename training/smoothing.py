"""Training targets for the ResNeSt classifier: one-hot, the paper's ordinal label smoothing, or
soft labels from expert vote shares.

Pure NumPy module (no Django, no TensorFlow import).

Ordinal label smoothing (paper, section 2.3): for a cell whose true class is ``k`` the target is

    y_i = n ** (-|k - i|),    i = 0..5 in Bethesda order (NILM, ASC-US, LSIL, ASC-H, HSIL, SCC)

with ``n`` a hyperparameter (the paper uses 2 or 3). The true class has weight 1 and each step
away along the ordinal scale divides the weight by ``n``, so neighbouring classes (HSIL and SCC)
share probability mass and distant ones (NILM and SCC) barely do. By default the weights are
normalised to sum to 1, so the target is a probability distribution; ``normalize=False`` gives
the paper's raw weights (the true class exactly 1, the row sum above 1).

The loss: Keras ``keras.losses.CategoricalCrossentropy()`` (``from_logits=False`` on a softmax
output, or ``from_logits=True`` on logits) computes ``-sum_i y_i log(p_i)`` for any target rows,
soft or not, and does not renormalise ``y_true``. So it is the paper's loss as written on either
form of these targets; no custom loss is needed. ``soft_cross_entropy`` below is the same
formula in NumPy for tests and offline checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from annotation.bethesda import NUM_CLASSES

TargetKind = Literal["onehot", "ordinal", "votes"]
TARGET_KINDS: tuple[str, ...] = ("onehot", "ordinal", "votes")

#: Tolerance on a vote distribution's row sum.
VOTE_SUM_TOLERANCE = 1e-6

#: Keras' default epsilon (``keras.config.epsilon()``): predictions are clipped to [eps, 1 - eps].
EPSILON = 1e-7


def _check_n(n: float) -> float:
    n = float(n)
    if not np.isfinite(n) or n < 1.0:
        raise ValueError(f"smoothing base n must be a finite number >= 1, got {n}")
    return n


def _check_num_classes(num_classes: int) -> int:
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes}")
    return int(num_classes)


def ordinal_smoothing(
    k: int, n: float = 2, num_classes: int = NUM_CLASSES, normalize: bool = True
) -> np.ndarray:
    """Smoothed target for true class ``k``: ``y_i = n ** -|k - i|`` over ``num_classes``.

    n: the base (paper: 2 or 3; n >= 1; n = 1 gives a uniform target). normalize: divide by the
    sum so the row is a probability distribution (default); False keeps the paper's raw weights
    with ``y_k = 1``. Returns a float64 vector of length ``num_classes``.
    """
    num_classes = _check_num_classes(num_classes)
    n = _check_n(n)
    if isinstance(k, (bool, np.bool_)) or int(k) != k or not 0 <= int(k) < num_classes:
        raise ValueError(f"class index k must be an integer in 0..{num_classes - 1}, got {k!r}")
    distance = np.abs(np.arange(num_classes) - int(k))
    weights = n ** (-distance.astype(np.float64))
    if normalize:
        weights = weights / weights.sum()
    return weights


def smoothing_table(
    n: float = 2, num_classes: int = NUM_CLASSES, normalize: bool = True
) -> np.ndarray:
    """All smoothed targets at once: row ``k`` is ``ordinal_smoothing(k, n, ...)``."""
    num_classes = _check_num_classes(num_classes)
    return np.stack([ordinal_smoothing(k, n, num_classes, normalize) for k in range(num_classes)])


def _check_labels(labels, num_classes: int) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"labels must be a 1-D array of class indices, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError("labels must be integer class indices")
    elif arr.dtype.kind not in "iu":
        raise ValueError(f"labels must be integer class indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    bad = np.flatnonzero((arr < 0) | (arr >= num_classes))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"label {int(arr[i])} at row {i} out of range 0..{num_classes - 1}")
    return arr


def one_hot_targets(labels, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """(N, num_classes) float64 one-hot rows for integer ``labels``."""
    num_classes = _check_num_classes(num_classes)
    idx = _check_labels(labels, num_classes)
    return np.eye(num_classes, dtype=np.float64)[idx]


def smooth_targets(
    labels, n: float = 2, normalize: bool = True, num_classes: int = NUM_CLASSES
) -> np.ndarray:
    """(N, num_classes) float64 ordinal-smoothed targets for integer ``labels`` (0..5)."""
    num_classes = _check_num_classes(num_classes)
    idx = _check_labels(labels, num_classes)
    return smoothing_table(n, num_classes, normalize)[idx]


def vote_targets(vote_distributions, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Soft targets from consensus vote shares: one row per item, one column per class.

    Each row must be finite, non-negative and sum to 1 within ``VOTE_SUM_TOLERANCE`` (1e-6);
    otherwise ValueError naming the first offending row. Returns a float64 copy with each row
    divided by its sum (a change of at most 1e-6), so rows sum to 1 to rounding.
    """
    num_classes = _check_num_classes(num_classes)
    arr = np.array(vote_distributions, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != num_classes:
        raise ValueError(f"vote distributions must have shape (N, {num_classes}), got {arr.shape}")
    if arr.shape[0] == 0:
        return arr
    nonfinite = np.flatnonzero(~np.all(np.isfinite(arr), axis=1))
    if nonfinite.size:
        raise ValueError(f"vote distribution row {int(nonfinite[0])} has a non-finite value")
    negative = np.flatnonzero(np.any(arr < 0, axis=1))
    if negative.size:
        i = int(negative[0])
        raise ValueError(f"vote distribution row {i} has a negative share: {arr[i].tolist()}")
    sums = arr.sum(axis=1)
    off = np.flatnonzero(np.abs(sums - 1.0) > VOTE_SUM_TOLERANCE)
    if off.size:
        i = int(off[0])
        raise ValueError(
            f"vote distribution row {i} sums to {sums[i]!r}, not 1 (tolerance {VOTE_SUM_TOLERANCE})"
        )
    return arr / sums[:, None]


@dataclass(frozen=True)
class TargetConfig:
    """Which training targets to use.

    kind: "onehot" (plain cross entropy), "ordinal" (the paper's label smoothing, base ``n``)
    or "votes" (vote shares from the consensus). n and normalize apply to "ordinal" only.
    """

    kind: TargetKind = "ordinal"
    n: float = 2
    normalize: bool = True

    def __post_init__(self) -> None:
        if self.kind not in TARGET_KINDS:
            raise ValueError(f"target kind must be one of {TARGET_KINDS}, got {self.kind!r}")
        _check_n(self.n)
        if not isinstance(self.normalize, (bool, np.bool_)):
            raise ValueError(f"normalize must be a bool, got {self.normalize!r}")


def make_targets(labels=None, votes=None, config: TargetConfig = TargetConfig()) -> np.ndarray:
    """(N, 6) float64 targets as ``config`` says.

    labels: integer class indices (needed for "onehot" and "ordinal"). votes: (N, 6) vote shares
    (needed for "votes"). When both are given their lengths must agree.
    """
    if labels is not None and votes is not None and len(labels) != len(votes):
        raise ValueError(f"{len(labels)} labels but {len(votes)} vote distributions")
    if config.kind == "votes":
        if votes is None:
            raise ValueError('target kind "votes" needs vote distributions')
        return vote_targets(votes)
    if labels is None:
        raise ValueError(f'target kind "{config.kind}" needs integer labels')
    if config.kind == "onehot":
        return one_hot_targets(labels)
    return smooth_targets(labels, n=config.n, normalize=config.normalize)


def soft_cross_entropy(y_true, y_pred, epsilon: float = EPSILON) -> np.ndarray:
    """Per-row cross entropy ``-sum_i y_true_i * log(y_pred_i)`` in NumPy.

    Same arithmetic as Keras' ``CategoricalCrossentropy(from_logits=False)``: predictions are
    divided by their row sum and clipped to [epsilon, 1 - epsilon]; ``y_true`` is used as given
    (raw or normalised weights). Returns shape (N,) (a single row gives shape (1,)); its mean is
    the Keras loss value with the default reduction.
    """
    t = np.atleast_2d(np.asarray(y_true, dtype=np.float64))
    p = np.atleast_2d(np.asarray(y_pred, dtype=np.float64))
    if t.shape != p.shape:
        raise ValueError(f"y_true shape {t.shape} and y_pred shape {p.shape} differ")
    p = p / p.sum(axis=-1, keepdims=True)
    p = np.clip(p, epsilon, 1.0 - epsilon)
    return -np.sum(t * np.log(p), axis=-1)
