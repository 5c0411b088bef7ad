"""Consensus of several experts' boxes on one image: clusters, label votes, agreed or disputed.

Pure module (no Django import): the database layer calls ``merge`` and stores what it returns.

How boxes become clusters
    Experts are taken in sorted order of their ids (so the result never depends on dict order).
    The first expert's boxes each start a cluster. Each following expert's boxes are assigned to
    the clusters built so far by an optimal one-to-one assignment (Hungarian method, scipy's
    ``linear_sum_assignment``) on the similarity "best IoU between the box and any member of the
    cluster" (cost 1 - similarity). A pair is accepted only when that IoU is at least
    ``ConsensusConfig.iou_threshold``; boxes left over start new clusters. Because each expert
    is assigned in one step and one-to-one, every box lands in exactly one cluster and no cluster
    ever holds two boxes of one expert; two clusters whose boxes overlap less than the threshold
    never merge. "Best IoU to any member" lets a box join a cluster that one expert drew a
    little off; a cluster whose members overlap poorly on average is flagged ``weak_overlap``.
    Coordinates are not validated here (``Box.validated`` does that at ingest); an empty box
    overlaps nothing.

How a cluster is judged
    Let ``n`` be the number of experts who annotated the image (``n_experts``; an expert who
    drew nothing counts) and ``q`` the quorum (default: strict majority, ``n // 2 + 1``; a
    configured quorum above ``n`` leaves every cluster ``too_few_experts``).
    Weights are measured in "expert units": each annotating expert's weight divided by the mean
    weight of the annotating experts, so with equal weights every expert weighs exactly 1 and
    a weight sum is a head count (an expert counted in ``n_experts`` but absent from
    ``annotations`` is taken to weigh the average).

    * winning label: the label with the largest weight among the cluster's members. On a
      tie (weights equal within a relative 1e-9) the most severe label wins (higher Bethesda
      index) and the cluster is marked ``label_split`` -- for safety a tie never downgrades.
    * ``too_few_experts``: fewer than ``q`` experts drew the cluster, or their total weight
      is below ``q`` (quorum comparisons allow 1e-9 expert units of rounding).
    * ``label_split``: the top weight is tied, or the members gave more than one label and the
      winning label's weight is below ``q``. With equal weights: "fewer than q experts gave
      the winning label"; with weights: "winning weight share of the panel < q / n". (A
      unanimous cluster short of ``q`` is ``too_few_experts`` only.)
    * ``weak_overlap``: two or more members and their mean pairwise IoU is below
      ``weak_iou`` (default 0.6: the members overlap enough to be matched but not enough for
      the box itself to be trusted without a reviewer's look).

    A cluster is ``agreed`` exactly when no reason applies, i.e. at least ``q`` experts found
    it, the winning label (untied) weighs at least ``q`` expert units and the overlap is not
    weak. Otherwise it is ``disputed`` and ``reasons`` lists every reason that applies, in the
    order of ``REASONS``.

The consensus box
    ``"medoid"`` (default): the member box nearest, by L1 distance on (x1, y1, x2, y2), to the
    vote-weighted mean of the members' corners; its coordinates are kept exactly. Distances
    within 1e-6 px count as equal, and then a box drawn with the winning label is preferred,
    then the box of the expert who sorts first. ``"weighted_mean"``: the vote-weighted mean of
    the members' corners. The returned box carries the winning label and ``score=None``
    (the vote share is on the cluster).

Model help (``merge_assisted``)
    A box an expert accepted unchanged from the model's pre-annotations is the model's vote, not
    the expert's (``ConsensusConfig.model_boxes = "model"``, the default; ``"expert"`` counts it
    as the expert's own, as ``merge`` does). The model is one more voter, after every expert:
    each distinct model box counts once however many experts accepted it (``group_model_boxes``:
    same model version, same label, IoU >= ``MODEL_SAME_IOU``), with the weight of an average
    expert. It enters the cluster's ``votes`` (the reviewer sees it) and the consensus box
    (medoid), but never the dispute rules: ``too_few_experts`` and ``label_split`` are judged on
    the independent experts only (the quorum is still ``q`` of the image's ``n`` experts, those who
    accepted model boxes included), so a cluster the model alone supports is disputed, never
    agreed, and the model never breaks the experts' tie. ``weak_overlap`` is judged on every box
    of the cluster, the model's included. The winning label is the independent experts' (the
    model's only when no expert drew the cluster); ``n_experts_found`` counts independent experts.

``merge`` is the vectorised implementation (all IoUs of an image in one numpy computation).
``naive_merge`` is a plain-Python version with greedy (best-IoU-first) assignment, kept as the
benchmark baseline and as a cross-check: the two agree whenever no box could be matched to two
clusters at once; under such contention the Hungarian assignment may choose differently from
the greedy one (both are valid partitions).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from itertools import combinations

import numpy as np
from scipy.optimize import linear_sum_assignment

from annotation.bethesda import BETHESDA, NUM_CLASSES, normalize_label
from annotation.geometry import Box, iou

AGREED = "agreed"
DISPUTED = "disputed"
LABEL_SPLIT = "label_split"
TOO_FEW_EXPERTS = "too_few_experts"
WEAK_OVERLAP = "weak_overlap"
#: Every reason a cluster can be disputed, in the order ``ClusterResult.reasons`` lists them.
REASONS: tuple[str, ...] = (LABEL_SPLIT, TOO_FEW_EXPERTS, WEAK_OVERLAP)
BOX_METHODS: tuple[str, ...] = ("medoid", "weighted_mean")
MODEL_BOX_MODES: tuple[str, ...] = ("model", "expert")
#: the model's voter id in ``merge_assisted`` results (sorts after any expert id)
MODEL_VOTER = "~model"
#: two accepted model boxes of one model version and label at this IoU or more are the same box
MODEL_SAME_IOU = 0.9

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
    box_method: "medoid" or "weighted_mean" (see the module docstring).
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
        indices = [_LABEL_INDEX[normalize_label(b.label)] for b in boxes]
    return tuple(indices)


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


def naive_merge(
    annotations: Mapping[str, Sequence[Box]],
    *,
    n_experts: int | None = None,
    weights: Mapping[str, float] | None = None,
    config: ConsensusConfig = ConsensusConfig(),
) -> list[ClusterResult]:
    """``merge`` in plain Python, with greedy best-IoU-first assignment instead of Hungarian.

    Same arguments and result; equal to ``merge`` whenever no box of an expert could join two
    clusters (nor two of its boxes the same cluster) at the IoU threshold. The benchmark's
    baseline and the tests' cross-check.
    """
    panel = _prepare(annotations, n_experts, weights, config)
    clusters: list[list[tuple[int, int]]] = []  # members as (expert position, box index)
    for p, boxes in enumerate(panel.boxes):
        candidates = []
        for i, box in enumerate(boxes):
            for c, cluster in enumerate(clusters):
                best = max(iou(box, panel.boxes[q][j]) for q, j in cluster)
                if best >= config.iou_threshold:
                    candidates.append((-best, i, c))
        candidates.sort()
        taken_boxes: set[int] = set()
        taken_clusters: set[int] = set()
        assigned: dict[int, int] = {}
        for _, i, c in candidates:
            if i not in taken_boxes and c not in taken_clusters:
                taken_boxes.add(i)
                taken_clusters.add(c)
                assigned[i] = c
        for i in range(len(boxes)):
            if i in assigned:
                clusters[assigned[i]].append((p, i))
            else:
                clusters.append([(p, i)])

    results = []
    for cluster in clusters:
        weight_by_label = [0.0] * NUM_CLASSES
        for p, i in cluster:
            weight_by_label[panel.labels[p][i]] += panel.weights[p]
        total = sum(panel.weights[p] for p, _ in cluster)
        winner, tie = _winner(weight_by_label)
        label = BETHESDA[winner]

        pair_ious = [
            iou(panel.boxes[p][i], panel.boxes[q][j]) for (p, i), (q, j) in combinations(cluster, 2)
        ]
        mean_iou = sum(pair_ious) / len(pair_ious) if pair_ious else 1.0

        corners = [
            (b.x, b.y, b.x2, b.y2) for b in (panel.boxes[p][i] for p, i in cluster)
        ]
        mean_box = [
            sum(corner[k] * panel.weights[p] for corner, (p, _) in zip(corners, cluster, strict=True))
            / total
            for k in range(4)
        ]
        if config.box_method == "medoid":
            dists = [sum(abs(corner[k] - mean_box[k]) for k in range(4)) for corner in corners]
            nearest = min(dists)
            best_key, best_member = None, None
            for dist, (p, i) in zip(dists, cluster, strict=True):
                if dist <= nearest + _PIXEL_TOL:
                    key = (panel.labels[p][i] != winner, p)
                    if best_key is None or key < best_key:
                        best_key, best_member = key, (p, i)
            m = panel.boxes[best_member[0]][best_member[1]]
            box = Box(m.x, m.y, m.width, m.height, label)
        else:
            box = Box(mean_box[0], mean_box[1], mean_box[2] - mean_box[0],
                      mean_box[3] - mean_box[1], label)

        reasons = _reasons(
            tie=tie,
            several_labels=weight_by_label[winner] < total,
            winner_weight=weight_by_label[winner],
            n_found=len(cluster),
            total_weight=total,
            mean_iou=mean_iou,
            quorum=panel.quorum,
            weak_iou=config.weak_iou,
        )
        votes = tuple(w / total for w in weight_by_label)
        results.append(ClusterResult(
            members=tuple((panel.experts[p], i) for p, i in cluster),
            box=box,
            votes=votes,
            label=label,
            vote_share=votes[winner],
            n_experts_found=len(cluster),
            mean_iou=mean_iou,
            status=DISPUTED if reasons else AGREED,
            reasons=reasons,
        ))
    return results


def group_model_boxes(boxes: Sequence[tuple[str, Box]]) -> list[list[int]]:
    """Which of the accepted model boxes ``(model version, box)`` are one model box: groups of
    indices, in first-seen order. A box joins the first group of the same model version and
    label whose first box it overlaps at IoU >= ``MODEL_SAME_IOU`` (a pre-annotation accepted by
    several experts, or a duplicated prediction)."""
    groups: list[list[int]] = []
    for i, (version, box) in enumerate(boxes):
        for group in groups:
            first_version, first = boxes[group[0]]
            if first_version == version and first.label == box.label and iou(first, box) >= MODEL_SAME_IOU:
                group.append(i)
                break
        else:
            groups.append([i])
    return groups


def merge_assisted(
    annotations: Mapping[str, Sequence[Box]],
    model_boxes: Sequence[Box] = (),
    *,
    n_experts: int | None = None,
    weights: Mapping[str, float] | None = None,
    config: ConsensusConfig = ConsensusConfig(),
) -> list[ClusterResult]:
    """``merge`` with the model as one extra voter whose boxes never count toward the quorum
    (see "Model help" in the module docstring).

    annotations: expert id -> the boxes the expert drew or changed (accepted-unchanged model boxes
        left out); an expert whose only boxes were accepted model boxes is given with [] and still
        counts toward ``n_experts``.
    model_boxes: the distinct model boxes experts accepted unchanged (``group_model_boxes``).
    Members ``(MODEL_VOTER, i)`` are ``model_boxes[i]``. Without model boxes: exactly ``merge``.
    """
    if MODEL_VOTER in annotations:
        raise ValueError(f"{MODEL_VOTER!r} is the model's voter id; no expert may use it")
    if not model_boxes:
        return merge(annotations, n_experts=n_experts, weights=weights, config=config)
    n = len(annotations) if n_experts is None else n_experts
    if isinstance(n, bool) or not isinstance(n, int) or n < len(annotations):
        raise ValueError(f"n_experts must be an integer, at least the {len(annotations)} experts who annotated")
    quorum = config.quorum_for(n)
    panel = {**annotations, MODEL_VOTER: tuple(model_boxes)}
    panel_weights = None
    unit = dict.fromkeys(annotations, 1.0)
    if weights is not None:
        given = [weights[e] for e in annotations if e in weights]
        mean = sum(given) / len(given) if given and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in given
        ) else 1.0
        panel_weights = {**weights, MODEL_VOTER: mean}
        unit = {e: weights[e] / mean for e in annotations if e in weights}
    results = merge(panel, n_experts=n + 1, weights=panel_weights, config=replace(config, quorum=quorum))
    out = []
    for r in results:
        independent = [(e, i) for e, i in r.members if e != MODEL_VOTER]
        if len(independent) == len(r.members):
            out.append(r)
            continue
        by_label = [0.0] * NUM_CLASSES
        for e, i in independent:
            by_label[_label_indices((annotations[e][i],))[0]] += unit[e]
        total = sum(unit[e] for e, _ in independent)
        if independent:
            winner, tie = _winner(by_label)
        else:
            model_index = next(i for e, i in r.members if e == MODEL_VOTER)
            winner, tie = _label_indices((model_boxes[model_index],))[0], False
        reasons = _reasons(
            tie=tie, several_labels=bool(independent) and by_label[winner] < total, winner_weight=by_label[winner],
            n_found=len(independent), total_weight=total, mean_iou=r.mean_iou, quorum=quorum,
            weak_iou=config.weak_iou,
        )
        if r.n_experts_found >= 2 and r.mean_iou < config.weak_iou and WEAK_OVERLAP not in reasons:
            reasons = tuple(x for x in REASONS if x in reasons or x == WEAK_OVERLAP)
        label = BETHESDA[winner]
        box = r.box if r.box.label == label else Box(r.box.x, r.box.y, r.box.width, r.box.height, label)
        out.append(ClusterResult(
            members=r.members, box=box, votes=r.votes, label=label, vote_share=r.votes[winner],
            n_experts_found=len(independent), mean_iou=r.mean_iou,
            status=DISPUTED if reasons else AGREED, reasons=reasons,
        ))
    return out
