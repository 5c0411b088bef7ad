"""Reads for the training pages: runs, their learning curves, the model registry."""

from __future__ import annotations

import json
from pathlib import Path

from django.db.models import Count, Max, QuerySet

from annotation.models import Dataset
from training.models import ModelKind, ModelVersion, Promotion, TrainingRun

ACTIVE = (TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING)


def datasets_for_training() -> QuerySet[Dataset]:
    """Every dataset with ``image_count`` and ``latest_version`` (its newest split's number)."""
    return Dataset.objects.annotate(
        image_count=Count("images", distinct=True), latest_version=Max("versions__number")
    ).order_by("name")


def recent_runs(limit: int = 50) -> QuerySet[TrainingRun]:
    return TrainingRun.objects.select_related("dataset_version__dataset", "created_by", "model_version") \
        .order_by("-created_at", "-id")[:limit]


def any_run_active() -> bool:
    return TrainingRun.objects.filter(status__in=ACTIVE).exists()


def run(pk: int) -> QuerySet[TrainingRun]:
    return TrainingRun.objects.select_related("dataset_version__dataset", "created_by", "model_version") \
        .filter(pk=pk)


def run_history(run: TrainingRun) -> list[dict]:
    """The run's finished epochs. A finished run stores them on its row; while it trains they are
    in its checkpoint's state.json (when this process can read the worker's folder)."""
    if run.history:
        return list(run.history)
    if not run.checkpoint_dir:
        return []
    try:
        state = json.loads((Path(run.checkpoint_dir) / "state.json").read_text())
    except (OSError, ValueError):
        return []
    history = state.get("history") if isinstance(state, dict) else None
    return [h for h in history if isinstance(h, dict)] if isinstance(history, list) else []


def model_versions() -> QuerySet[ModelVersion]:
    return ModelVersion.objects.select_related("dataset_version__dataset", "run").order_by("kind", "-created_at", "-id")


def model_version(pk: int) -> QuerySet[ModelVersion]:
    return ModelVersion.objects.select_related("dataset_version__dataset", "run").filter(pk=pk)


def promotions(kind: str, limit: int = 10) -> QuerySet[Promotion]:
    return Promotion.objects.filter(kind=kind).select_related("model_version", "promoted_by") \
        .order_by("-promoted_at", "-id")[:limit]


def promoted_versions() -> dict[str, ModelVersion]:
    """The promoted version of each kind that has one ({"classifier": ..., "detector": ...})."""
    versions = ModelVersion.objects.filter(promoted=True, kind__in=ModelKind.values) \
        .select_related("dataset_version__dataset", "run").order_by("kind")
    return {v.kind: v for v in versions}


def promoted_version(kind: str, *, excluding: int | None = None) -> ModelVersion | None:
    """The promoted version of ``kind`` (other than the version ``excluding``, if given)."""
    found = ModelVersion.objects.filter(kind=kind, promoted=True)
    return (found.exclude(pk=excluding) if excluding is not None else found).first()


def rollback_target(kind: str) -> ModelVersion | None:
    """The version ``training.services.rollback`` would promote again, if any."""
    current = ModelVersion.objects.filter(kind=kind, promoted=True).values_list("pk", flat=True).first()
    entry = Promotion.objects.filter(kind=kind).exclude(model_version_id=current) \
        .select_related("model_version").order_by("-promoted_at", "-id").first()
    return entry.model_version if entry else None
