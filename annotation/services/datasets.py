"""Datasets: create or update one by name; record the split each image belongs to."""

from __future__ import annotations

from django.core.validators import validate_slug
from django.db import transaction

from annotation.models import Dataset, Image


def ensure_dataset(*, name: str, created_by=None, **fields) -> tuple[Dataset, bool]:
    validate_slug(name)
    with transaction.atomic():
        dataset, created = Dataset.objects.get_or_create(
            name=name, defaults={"created_by": created_by, "title": fields.pop("title", name), **fields}
        )
        if not created and fields:
            for key, value in fields.items():
                setattr(dataset, key, value)
            dataset.save()
    return dataset, created


def set_image_splits(*, splits: dict[str, list[int]]) -> None:
    """Mark each image with its split ({split: [image ids]}): a training dataset version's."""
    with transaction.atomic():
        for name, ids in splits.items():
            Image.objects.filter(pk__in=ids).update(split=name)
