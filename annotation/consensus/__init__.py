"""Consensus of several experts' boxes on one image: clusters, label votes, agreed or disputed.

Pure package (no Django import): the database layer calls ``merge`` and stores what it returns.

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

The package: ``core`` (configuration, result, ``merge``), ``naive`` (``naive_merge``) and
``assisted`` (``group_model_boxes``, ``merge_assisted``); the public names are re-exported here.
"""

from annotation.consensus.assisted import (
    MODEL_SAME_IOU,
    MODEL_VOTER,
    group_model_boxes,
    merge_assisted,
)
from annotation.consensus.core import (
    AGREED,
    BOX_METHODS,
    DISPUTED,
    LABEL_SPLIT,
    MODEL_BOX_MODES,
    REASONS,
    TOO_FEW_EXPERTS,
    WEAK_OVERLAP,
    ClusterResult,
    ConsensusConfig,
    merge,
)
from annotation.consensus.naive import naive_merge

__all__ = [
    "AGREED",
    "BOX_METHODS",
    "DISPUTED",
    "LABEL_SPLIT",
    "MODEL_BOX_MODES",
    "MODEL_SAME_IOU",
    "MODEL_VOTER",
    "REASONS",
    "TOO_FEW_EXPERTS",
    "WEAK_OVERLAP",
    "ClusterResult",
    "ConsensusConfig",
    "group_model_boxes",
    "merge",
    "merge_assisted",
    "naive_merge",
]
