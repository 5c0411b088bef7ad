"""Repairs of stored predictions (run by inference migration 0003; callable again, idempotent).

Before the pipeline kept one box per lesion (NMS across detector classes), a box the detector
kept in several of its classes was cropped and graded once per class: exact copies (same box,
label and score) of one image's prediction. ``merge_exact_copies`` keeps the first of each set
and deletes the others, after pointing what referred to a copy at the kept one (an expert box
that started from it, a ranked image's deciding cluster). Label Studio keeps what was pushed.
"""

from __future__ import annotations


def merge_exact_copies(*, PredictionBox, ClusterPrediction, ExpertBox, RankedImage) -> int:
    """Model classes as arguments (a migration passes its historical ones). Returns how many
    copies were removed."""
    kept: dict[tuple, tuple[int, int]] = {}  # (image prediction, box, label, score) -> (box id, cluster id)
    copies: list[tuple[int, int, int, int]] = []  # (copy box, copy cluster, kept box, kept cluster)
    rows = ClusterPrediction.objects.order_by("image_prediction_id", "box_id").values_list(
        "id", "image_prediction_id", "box_id", "box__x", "box__y", "box__width", "box__height", "box__label",
        "box__score")
    for cluster_id, prediction_id, box_id, *box in rows.iterator():
        key = (prediction_id, *box)
        if key in kept:
            copies.append((box_id, cluster_id, *kept[key]))
        else:
            kept[key] = (box_id, cluster_id)
    for box_id, cluster_id, keep_box, keep_cluster in copies:
        ExpertBox.objects.filter(prediction_id=box_id).update(prediction_id=keep_box)
        RankedImage.objects.filter(top_cluster_id=cluster_id).update(top_cluster_id=keep_cluster)
    copy_boxes = [c[0] for c in copies]
    for start in range(0, len(copy_boxes), 1000):  # the cluster rows (and their ranks) go with the box
        PredictionBox.objects.filter(pk__in=copy_boxes[start:start + 1000]).delete()
    return len(copies)
