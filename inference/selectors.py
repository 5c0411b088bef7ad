"""Reads for the Active learning pages: promoted models, prediction jobs, ranking rounds."""

from __future__ import annotations

from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery, Value

from annotation.models import Dataset, Image, PredictionBox
from inference.models import ImagePrediction, PredictionJob, RankedImage, RankingRound
from training.models import ModelVersion

ACTIVE_JOBS = (PredictionJob.Status.QUEUED, PredictionJob.Status.RUNNING)


def datasets_for_prediction() -> QuerySet[Dataset]:
    """Every dataset with ``image_count``."""
    return Dataset.objects.annotate(image_count=Count("images", distinct=True)).order_by("name")


def datasets_for_ranking(detector: ModelVersion | None, classifier: ModelVersion | None) -> QuerySet[Dataset]:
    """Every dataset with ``image_count`` and ``pool_count``: its images without consensus that
    the promoted pair has predicted (what a ranking round would rank; 0 without a pair)."""
    datasets = Dataset.objects.annotate(image_count=Count("images", distinct=True))
    if detector is None or classifier is None:
        return datasets.annotate(pool_count=Value(0, output_field=IntegerField())).order_by("name")
    pool = Q(images__consensus_at__isnull=True,
             images__model_predictions__detector_version=detector,
             images__model_predictions__classifier_version=classifier)
    return datasets.annotate(pool_count=Count("images", filter=pool, distinct=True)).order_by("name")


def recent_jobs(limit: int = 20) -> QuerySet[PredictionJob]:
    return PredictionJob.objects.select_related("dataset", "detector_version", "classifier_version", "created_by") \
        .order_by("-created_at", "-id")[:limit]


def any_job_active() -> bool:
    return PredictionJob.objects.filter(status__in=ACTIVE_JOBS).exists()


def recent_rounds(limit: int = 20) -> QuerySet[RankingRound]:
    return RankingRound.objects.select_related("dataset", "detector_version", "classifier_version", "created_by") \
        .order_by("-created_at", "-id")[:limit]


def ranking_round(pk: int) -> QuerySet[RankingRound]:
    return RankingRound.objects.select_related("dataset", "detector_version", "classifier_version", "created_by") \
        .filter(pk=pk)


def newer_round(round_: RankingRound) -> RankingRound | None:
    """The dataset's active round when it is not ``round_`` (the one that replaced it)."""
    return RankingRound.objects.filter(dataset_id=round_.dataset_id, active=True).exclude(pk=round_.pk) \
        .order_by("-created_at", "-id").first()


def ranked_images(round_: RankingRound) -> QuerySet[RankedImage]:
    """The round's images, the selected ones first, then by rank; each with its image, its top
    cluster's box and ``verdict`` (the round's model versions' call on the image)."""
    verdict = ImagePrediction.objects.filter(
        image_id=OuterRef("image_id"), detector_version_id=round_.detector_version_id,
        classifier_version_id=round_.classifier_version_id,
    ).values("verdict")[:1]
    return RankedImage.objects.filter(round=round_) \
        .select_related("image", "top_cluster__box") \
        .annotate(verdict=Subquery(verdict)) \
        .order_by("-selected", "rank")


def round_scores(round_: RankingRound) -> list[tuple[float, bool]]:
    """(score, selected) of every image the round ranked."""
    return list(RankedImage.objects.filter(round=round_).values_list("score", "selected"))


def round_cluster_count(round_: RankingRound) -> int:
    return round_.ranked_clusters.count()


def predicted_boxes(round_: RankingRound, image_ids: list[int]) -> dict[int, list[PredictionBox]]:
    """Per image, the boxes the round's model versions predicted (every cluster, not only the top)."""
    boxes = PredictionBox.objects.filter(
        detail__image_prediction__image_id__in=image_ids,
        detail__image_prediction__detector_version_id=round_.detector_version_id,
        detail__image_prediction__classifier_version_id=round_.classifier_version_id,
    ).order_by("image_id", "id")
    out: dict[int, list[PredictionBox]] = {}
    for box in boxes:
        out.setdefault(box.image_id, []).append(box)
    return out


def preannotations_allowed(image: Image) -> RankingRound | None:
    """Whether the editor may show this image's model boxes: the image was selected by its
    dataset's active round and that round allows pre-annotations. Returns that round. (The
    editor itself reads ``Image.preannotation_model``, which start_ranking_round writes.)"""
    return (RankingRound.objects.filter(dataset_id=image.dataset_id, active=True, allow_preannotations=True,
                                        ranked__image=image, ranked__selected=True).first())
