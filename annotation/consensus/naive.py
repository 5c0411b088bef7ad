"""``naive_merge``: ``merge`` in plain Python with greedy assignment (benchmark baseline, cross-check).

Pure (no Django import).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations

from annotation.bethesda import BETHESDA, NUM_CLASSES
from annotation.consensus.core import (
    _PIXEL_TOL,
    AGREED,
    DISPUTED,
    ClusterResult,
    ConsensusConfig,
    _prepare,
    _reasons,
    _winner,
)
from annotation.geometry import Box, iou


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
            assert best_member is not None  # the nearest member is within _PIXEL_TOL of itself
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
