"""Reads that training makes of annotation's tables: the images of a dataset or a split, and
each image's training truth. Training asks these instead of querying annotation's models."""

from __future__ import annotations

from django.db.models import QuerySet

from annotation.geometry import Box
from annotation.models import Cluster, Dataset, GroundTruthBox, Image


def images_by_id(*, dataset: Dataset | None = None, ids=None) -> QuerySet[Image]:
    """Images in id order: the dataset's, or those of ``ids`` (a split), or both filters."""
    images = Image.objects.all()
    if dataset is not None:
        images = images.filter(dataset=dataset)
    if ids is not None:
        images = images.filter(pk__in=list(ids))
    return images.order_by("id")


def training_truth(image_ids) -> dict[int, list[tuple[Box, list | None]]]:
    """Each image's training truth: (Box, vote distribution or None) per lesion, in row order.

    The current ground truth only (``GroundTruthBox.objects``): one box per lesion, from the
    highest source that spoke about it (reviewer decision > consensus > imported reference, see
    annotation.ground_truth); superseded rows are history and never trained on. Boxes of agreed
    clusters carry the experts' vote shares."""
    ids = list(image_ids)
    votes = {}
    for image_id, x, y, w, h, v in Cluster.objects.filter(
            image_id__in=ids, status=Cluster.Status.AGREED).values_list(
            "image_id", "x", "y", "width", "height", "votes"):
        votes[(image_id, x, y, w, h)] = v
    out: dict[int, list[tuple[Box, list | None]]] = {i: [] for i in ids}
    for gt in GroundTruthBox.objects.filter(image_id__in=ids).order_by("image_id", "id"):
        consensus = gt.source == GroundTruthBox.Source.CONSENSUS
        vote = votes.get((gt.image_id, gt.x, gt.y, gt.width, gt.height)) if consensus else None
        out[gt.image_id].append((gt.as_box(), vote))
    return out
