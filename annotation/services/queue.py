"""The annotation queue: handing an expert their next image, skipping, lapsed holds."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from annotation.models import Assignment, Dataset, Image
from annotation.selectors import queue_candidates
from annotation.services.common import NotAssigned


def _lock_timeout():
    return timedelta(minutes=settings.ANNOTATION_LOCK_MINUTES)


def release_expired_assignments() -> int:
    """Hand back images whose holder went quiet past the lock timeout."""
    return Assignment.objects.filter(
        status=Assignment.Status.ACTIVE, expires_at__lt=timezone.now()
    ).update(status=Assignment.Status.RELEASED, finished_at=timezone.now())


def next_assignment(*, annotator, dataset: Dataset | None = None):
    """Lock the next image needing ``annotator``'s annotation, or return their current one.

    Each image goes to its dataset's N distinct experts, one expert at a time (an active
    assignment is exclusive), in ranking order (queue_rank, then age). Concurrent requests skip
    rows another transaction holds (select_for_update(skip_locked=True))."""
    release_expired_assignments()
    now = timezone.now()
    current = Assignment.objects.filter(annotator=annotator, status=Assignment.Status.ACTIVE)
    if dataset is not None:
        current = current.filter(image__dataset=dataset)
    current = current.select_related("image", "image__dataset").first()
    if current:
        Assignment.objects.filter(pk=current.pk).update(expires_at=now + _lock_timeout())
        return current

    candidates = queue_candidates(annotator, dataset)
    for _ in range(5):  # a racing request may take the same image between our read and insert
        with transaction.atomic():
            image = candidates.select_for_update(skip_locked=True, of=("self",)).first()
            if image is None:
                return None
            try:
                with transaction.atomic():
                    assignment, _ = Assignment.objects.update_or_create(
                        image=image, annotator=annotator,
                        defaults={"status": Assignment.Status.ACTIVE, "expires_at": now + _lock_timeout(),
                                  "finished_at": None},
                    )
            except IntegrityError:
                continue
            assignment.image = image
            return assignment
    return None


def skip_assignment(*, image: Image, annotator) -> None:
    updated = Assignment.objects.filter(
        image=image, annotator=annotator, status=Assignment.Status.ACTIVE
    ).update(status=Assignment.Status.SKIPPED, finished_at=timezone.now())
    if not updated:
        raise NotAssigned(f"image {image.pk} is not assigned to {annotator.get_username()}")
