"""Model help: the model as one extra voter that never counts toward the quorum (``merge_assisted``).

Pure (no Django import). The rules are under "Model help" in the package docstring.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace

from annotation.bethesda import BETHESDA, NUM_CLASSES
from annotation.consensus.core import (
    AGREED,
    DISPUTED,
    REASONS,
    WEAK_OVERLAP,
    ClusterResult,
    ConsensusConfig,
    _label_indices,
    _reasons,
    _winner,
    merge,
)
from annotation.geometry import Box, iou

#: the model's voter id in ``merge_assisted`` results (sorts after any expert id)
MODEL_VOTER = "~model"
#: two accepted model boxes of one model version and label at this IoU or more are the same box
MODEL_SAME_IOU = 0.9


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
    (see "Model help" in the package docstring).

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
