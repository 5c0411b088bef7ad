"""Consensus of several experts' boxes on one image: ``merge`` (vectorised, Hungarian assignment),
its configuration, its result and the rules a cluster is judged by.

Pure (no Django import). The rules are in the package docstring (``annotation/consensus/__init__.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations

import numpy as np
from scipy.optimize import linear_sum_assignment

from annotation.bethesda import BETHESDA, NUM_CLASSES, normalize_label
from annotation.geometry import Box

AGREED = "agreed"
DISPUTED = "disputed"
LABEL_SPLIT = "label_split"
TOO_FEW_EXPERTS = "too_few_experts"
WEAK_OVERLAP = "weak_overlap"
#: Every reason a cluster can be disputed, in the order ``ClusterResult.reasons`` lists them.
REASONS: tuple[str, ...] = (LABEL_SPLIT, TOO_FEW_EXPERTS, WEAK_OVERLAP)
BOX_METHODS: tuple[str, ...] = ("medoid", "weighted_mean")
MODEL_BOX_MODES: tuple[str, ...] = ("model", "expert")

_WEIGHT_TOL = 1e-9  # weights are in expert units (about 1), so an absolute tolerance is enough
_PIXEL_TOL = 1e-6  # medoid distances closer than this (in pixels) are a tie
_LABEL_INDEX = {name: i for i, name in enumerate(BETHESDA)}
# reasons by code: label_split * 4 + too_few_experts * 2 + weak_overlap
_REASONS_BY_CODE = tuple(
    tuple(reason for bit, reason in zip((4, 2, 1), REASONS, strict=True) if code & bit)
    for code in range(8)
)
_N_FEATURES = NUM_CLASSES + 4 + 1  # per box: weighted one-hot label, weighted corners, weight
_SMALLEST = float(np.finfo(np.float64).smallest_subnormal)


@dataclass(frozen=True)
class ConsensusConfig:
    """How boxes are matched and when a cluster counts as agreed.

    iou_threshold: two boxes can be matched only if IoU >= this (0 < t <= 1).
    quorum: experts (in expert units when weighted) needed to find a cluster and to give its
        label; None = strict majority of the image's experts, ``n_experts // 2 + 1``.
    weak_iou: a cluster of two or more whose mean pairwise IoU is below this is "weak_overlap".
    box_method: "medoid" or "weighted_mean" (see the package docstring).
    model_boxes: "model" (a model box accepted unchanged is the model's vote, counted once) or
        "expert" (it is the accepting expert's own vote); read by callers of ``merge_assisted``.
    """

    iou_threshold: float = 0.5
    quorum: int | None = None
    weak_iou: float = 0.6
    box_method: str = "medoid"
    model_boxes: str = "model"

    def __post_init__(self) -> None:
        if not (isinstance(self.iou_threshold, int | float) and 0.0 < self.iou_threshold <= 1.0):
            raise ValueError(f"iou_threshold must be in (0, 1], got {self.iou_threshold!r}")
        if not (isinstance(self.weak_iou, int | float) and 0.0 <= self.weak_iou <= 1.0):
            raise ValueError(f"weak_iou must be in [0, 1], got {self.weak_iou!r}")
        if self.quorum is not None and (
            not isinstance(self.quorum, int) or isinstance(self.quorum, bool) or self.quorum < 1
        ):
            raise ValueError(f"quorum must be a positive integer or None, got {self.quorum!r}")
        if self.box_method not in BOX_METHODS:
            raise ValueError(
                f"box_method must be one of {', '.join(BOX_METHODS)}, got {self.box_method!r}"
            )
        if self.model_boxes not in MODEL_BOX_MODES:
            raise ValueError(
                f"model_boxes must be one of {', '.join(MODEL_BOX_MODES)}, got {self.model_boxes!r}"
            )

    def quorum_for(self, n_experts: int) -> int:
        """The quorum for an image annotated by ``n_experts`` experts."""
        return self.quorum if self.quorum is not None else n_experts // 2 + 1


@dataclass(frozen=True)
class ClusterResult:
    """One consensus cluster of an image.

    members: (expert id, index of the box in that expert's list), in sorted expert order.
    box: the consensus box, labelled with the winning label.
    votes: weight of each Bethesda class (index 0..5) among the members, summing to 1.
    label: the winning label; vote_share: its entry in ``votes``.
    n_experts_found: how many experts drew the cluster.
    mean_iou: mean pairwise IoU among the members (1.0 for a single box).
    status: "agreed" or "disputed"; reasons: why disputed (empty when agreed), see ``REASONS``.
    """

    members: tuple[tuple[str, int], ...]
    box: Box
    votes: tuple[float, ...]
    label: str
    vote_share: float
    n_experts_found: int
    mean_iou: float
    status: str
    reasons: tuple[str, ...]

    @property
    def agreed(self) -> bool:
        return self.status == AGREED


@dataclass(frozen=True, slots=True)
class _Panel:
    """The input made canonical: experts sorted, labels as indices, weights in expert units."""

    experts: tuple  # sorted expert ids
    boxes: tuple[tuple[Box, ...], ...]  # per expert, in the caller's order
    labels: tuple[tuple[int, ...], ...]  # per expert, Bethesda index of each box
    weights: tuple[float, ...]  # per expert, in expert units (mean 1)
    n_experts: int
    quorum: int


def _label_indices(boxes: Sequence[Box]) -> tuple[int, ...]:
    indices = [_LABEL_INDEX.get(b.label) for b in boxes]  # canonical spellings, the usual case
    if None in indices:
        return tuple(_LABEL_INDEX[normalize_label(b.label)] for b in boxes)
    return tuple(i for i in indices if i is not None)


def _prepare(
    annotations: Mapping[str, Sequence[Box]],
    n_experts: int | None,
    weights: Mapping[str, float] | None,
    config: ConsensusConfig,
) -> _Panel:
    experts = tuple(sorted(annotations))
    if n_experts is None:
        n_experts = len(experts)
    elif isinstance(n_experts, bool) or not isinstance(n_experts, int):
        raise ValueError(f"n_experts must be an integer, got {n_experts!r}")
    elif n_experts < len(experts):
        raise ValueError(
            f"n_experts={n_experts} is fewer than the {len(experts)} experts who annotated"
        )
    boxes = tuple(tuple(annotations[e]) for e in experts)
    labels = tuple(_label_indices(bs) for bs in boxes)
    if weights is None:
        unit = (1.0,) * len(experts)
    else:
        raw = []
        for expert in experts:
            if expert not in weights:
                raise ValueError(f"no weight given for expert {expert!r}")
            value = weights[expert]
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ValueError(f"weight of expert {expert!r} must be positive, got {value!r}")
            raw.append(float(value))
        mean = sum(raw) / len(raw) if raw else 1.0
        unit = tuple(w / mean for w in raw)
    return _Panel(experts, boxes, labels, unit, n_experts, config.quorum_for(n_experts))


def _winner(weight_by_label: Sequence[float]) -> tuple[int, bool]:
    """(winning label index, whether the top weight is tied); ties go to the most severe label."""
    top = max(weight_by_label)
    tied = [k for k, w in enumerate(weight_by_label) if w >= top * (1.0 - _WEIGHT_TOL)]
    return tied[-1], len(tied) > 1


def _reasons(
    *, tie: bool, several_labels: bool, winner_weight: float, n_found: int, total_weight: float,
    mean_iou: float, quorum: int, weak_iou: float,
) -> tuple[str, ...]:
    reasons = []
    if tie or (several_labels and winner_weight < quorum - _WEIGHT_TOL):
        reasons.append(LABEL_SPLIT)
    if n_found < quorum or total_weight < quorum - _WEIGHT_TOL:
        reasons.append(TOO_FEW_EXPERTS)
    if n_found >= 2 and mean_iou < weak_iou:
        reasons.append(WEAK_OVERLAP)
    return tuple(reasons)


@lru_cache(maxsize=64)
def _expert_pairs(n_experts: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions (first, second) of every pair of experts, in the order combinations gives,
    and by number of members k the number of pairs among them (at least 1, to divide by)."""
    pairs = np.array(list(combinations(range(n_experts), 2)), dtype=np.intp).reshape(-1, 2)
    count = np.array([max(k * (k - 1) // 2, 1) for k in range(n_experts + 1)], dtype=np.float64)
    return pairs[:, 0].copy(), pairs[:, 1].copy(), count


def _iou_block(rows: np.ndarray, cols: np.ndarray, out: np.ndarray) -> None:
    """out[i, j] = IoU of box i of ``rows`` with box j of ``cols`` (arrays x1, y1, x2, y2, area).

    The same floating-point steps as ``geometry.iou``, so both give identical numbers; a union
    that is not positive only happens with an empty box (intersection 0), and gives 0.
    """
    size = np.minimum(rows[2:4, :, None], cols[2:4, None, :])
    size -= np.maximum(rows[0:2, :, None], cols[0:2, None, :])
    np.maximum(size, 0.0, out=size)
    inter = size[0] * size[1]
    union = rows[4][:, None] + cols[4][None, :]
    union -= inter
    np.maximum(union, _SMALLEST, out=union)
    np.divide(inter, union, out=out)


def merge(
    annotations: Mapping[str, Sequence[Box]],
    *,
    n_experts: int | None = None,
    weights: Mapping[str, float] | None = None,
    config: ConsensusConfig = ConsensusConfig(),
) -> list[ClusterResult]:
    """Merge several experts' boxes for one image into consensus clusters.

    annotations: expert id -> that expert's boxes (an empty list: the expert found nothing;
        the expert still counts toward ``n_experts``). Labels may use any spelling
        ``normalize_label`` accepts; an unknown label raises ``UnknownLabel``.
    n_experts: experts on the image's panel (default ``len(annotations)``; not fewer).
    weights: expert id -> positive reliability weight, for every expert in ``annotations``
        (extra ids are ignored); equal weights when None.
    Returns the clusters ordered by their first member (expert order, then box index).
    """
    panel = _prepare(annotations, n_experts, weights, config)
    flat = [b for bs in panel.boxes for b in bs]
    n = len(flat)
    if n == 0:
        return []
    n_exp = len(panel.experts)
    quorum = panel.quorum
    sizes = [len(bs) for bs in panel.boxes]
    labels = [k for ls in panel.labels for k in ls]

    # Column i describes box i, column n is a "no box" sentinel (index -1 lands there).
    # geo: x1, y1, x2, y2, area, computed as geometry.Box does; the sentinel's corners are
    # infinitely far from any box (the medoid search relies on it; IoUs never read it).
    xywh = np.array(
        [b.x for b in flat] + [b.y for b in flat] + [b.width for b in flat]
        + [b.height for b in flat],
        dtype=np.float64,
    ).reshape(4, n)
    geo = np.full((5, n + 1), np.inf)
    geo[0:2, :n] = xywh[0:2]
    np.add(xywh[0:2], xywh[2:4], out=geo[2:4, :n])
    np.multiply(xywh[2], xywh[3], out=geo[4, :n])
    # feat: what a cluster sums over its members: weight * one-hot label, weight * corners,
    # weight. Zero for the sentinel.
    box_weight = np.repeat(panel.weights, sizes)
    label_of = np.array(labels + [-1], dtype=np.intp)
    feat = np.zeros((n + 1, _N_FEATURES))
    feat[np.arange(n), label_of[:n]] = box_weight
    np.multiply(geo[0:4, :n].T, box_weight[:, None], out=feat[:n, NUM_CLASSES:NUM_CLASSES + 4])
    feat[:n, -1] = box_weight

    # ious[i, j] = IoU of box i with box j where i's expert comes after j's (only those are
    # read); the sentinel row and column stay 0. One computation covers every expert's step.
    ious = np.zeros((n + 1, n + 1))
    first_rows, last_cols = sizes[0], n - sizes[-1]
    if n_exp >= 2 and first_rows < n and last_cols > 0:
        _iou_block(geo[:, first_rows:n], geo[:, :last_cols], out=ious[first_rows:n, :last_cols])

    # members[c, p] = flat index of expert p's box in cluster c, or -1.
    members = np.full((n, n_exp), -1, dtype=np.intp)
    n_clusters = 0
    threshold = config.iou_threshold
    start = 0
    for p, count in enumerate(sizes):
        if count == 0:
            continue
        stop = start + count
        new_rows = np.arange(start, stop)
        if n_clusters:
            # similarity of each of this expert's boxes to each cluster: best IoU to a member
            sim = ious[start:stop, members[:n_clusters, :p]].max(axis=2)
            valid = sim >= threshold
            row_hits = valid.sum(axis=1)
            most = row_hits.max()
            if most:
                col_hits = valid.sum(axis=0)
                if most == 1 and col_hits.max() == 1:
                    rows, cols = valid.nonzero()  # no box or cluster has a rival: no choice
                else:
                    rr = np.flatnonzero(row_hits)
                    cc = np.flatnonzero(col_hits)
                    sub = np.where(valid[np.ix_(rr, cc)], sim[np.ix_(rr, cc)], 0.0)
                    r, c = linear_sum_assignment(sub, maximize=True)
                    keep = valid[rr[r], cc[c]]
                    rows, cols = rr[r[keep]], cc[c[keep]]
                    row_hits[:] = 0
                    row_hits[rows] = 1
                members[cols, p] = rows + start
                new_rows = new_rows[row_hits == 0]
        k = len(new_rows)
        members[n_clusters:n_clusters + k, p] = new_rows
        n_clusters += k
        start = stop
    members = members[:n_clusters]
    present = members >= 0

    # Per-cluster sums over members, in expert order (as naive_merge adds them).
    sums = feat[members].sum(axis=1)
    weight_by_label = sums[:, :NUM_CLASSES]
    total = sums[:, -1]
    mean_box = sums[:, NUM_CLASSES:NUM_CLASSES + 4] / total[:, None]
    n_found = present.sum(axis=1)

    # Winner: the most severe label within a relative 1e-9 of the top weight. When it is not
    # tied, its weight is the top weight.
    # More than one label was given exactly when the top weight is below the total.
    top = weight_by_label.max(axis=1)
    tied = weight_by_label >= (top * (1.0 - _WEIGHT_TOL))[:, None]
    winner = (NUM_CLASSES - 1) - np.argmax(tied[:, ::-1], axis=1)
    short = quorum - _WEIGHT_TOL
    label_split = (tied.sum(axis=1) > 1) | ((top < total) & (top < short))
    too_few = (n_found < quorum) | (total < short)

    # Mean pairwise IoU: expert pairs in order; an absent member's pairs add 0; 1.0 if single.
    single = n_found < 2
    if n_exp >= 2:
        first, second, pair_count = _expert_pairs(n_exp)
        mean_iou = ious[members[:, second], members[:, first]].sum(axis=1) / pair_count[n_found]
        mean_iou[single] = 1.0
    else:
        mean_iou = np.ones(n_clusters)
    reason_code = label_split * 4 + too_few * 2 + (mean_iou < config.weak_iou)

    use_medoid = config.box_method == "medoid"
    if use_medoid:
        # nearest to the mean box (absent members are infinitely far); among the nearest
        # (within _PIXEL_TOL), a box with the winning label first, then the first expert.
        dist = np.abs(geo[0:4].T[members] - mean_box[:, None, :]).sum(axis=2)
        far = dist > (dist.min(axis=1) + _PIXEL_TOL)[:, None]
        other_label = label_of[members] != winner[:, None]
        rank = far * (2 * n_exp) + other_label * n_exp + np.arange(n_exp)
        medoids = members[np.arange(n_clusters), np.argmin(rank, axis=1)].tolist()
    else:
        mean_corners = mean_box.tolist()

    keys = [(e, i) for e, size in zip(panel.experts, sizes, strict=True) for i in range(size)]
    votes = (weight_by_label / total[:, None]).tolist()
    winners = winner.tolist()
    codes = reason_code.tolist()
    found = n_found.tolist()
    mean_ious = mean_iou.tolist()
    results = []
    for c, row in enumerate(members.tolist()):
        k = winners[c]
        label = BETHESDA[k]
        if use_medoid:
            m = flat[medoids[c]]
            box = m if m.label == label and m.score is None else Box(
                m.x, m.y, m.width, m.height, label
            )
        else:
            x1, y1, x2, y2 = mean_corners[c]
            box = Box(x1, y1, x2 - x1, y2 - y1, label)
        reasons = _REASONS_BY_CODE[codes[c]]
        vote = tuple(votes[c])
        results.append(ClusterResult(
            tuple([keys[g] for g in row if g >= 0]),
            box,
            vote,
            label,
            vote[k],
            found[c],
            mean_ious[c],
            DISPUTED if reasons else AGREED,
            reasons,
        ))
    return results
