"""Where each image stands in the loop, in one annotated query (the admin's home and the
"images by state" page read it; nothing here writes).

States, first match wins:
- ``disputed``: consensus exists and at least one of its clusters waits for a reviewer;
- ``agreed``: consensus exists and every cluster is agreed or decided by a reviewer;
- ``awaiting_consensus``: every expert it needs has submitted, consensus not computed yet;
- ``in_progress``: some experts submitted, or one holds it now, but not all it needs;
- ``not_annotated``: no expert has submitted and no one holds it.
An image needs its dataset's experts_per_image plus the extra experts reviewers asked for.
"""

from __future__ import annotations

from django.db.models import (
    Case,
    Count,
    Exists,
    F,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Coalesce
from django.utils import timezone

from annotation.models import Assignment, Cluster, ExpertAnnotation, Image

STATES = {
    "not_annotated": "not annotated",
    "in_progress": "in progress",
    "awaiting_consensus": "awaiting consensus",
    "disputed": "disputed",
    "agreed": "agreed or reviewed",
}


def _count(model, **filters):
    return Coalesce(Subquery(
        model.objects.filter(image=OuterRef("pk"), **filters).order_by().values("image")
        .annotate(n=Count("id")).values("n"), output_field=IntegerField()), Value(0))


def images_with_state() -> QuerySet[Image]:
    """Every image with ``state`` (a key of STATES)."""
    held = Assignment.objects.filter(image=OuterRef("pk"), status=Assignment.Status.ACTIVE,
                                     expires_at__gte=timezone.now())
    disputed = Cluster.objects.filter(image=OuterRef("pk"), status=Cluster.Status.DISPUTED)
    images = Image.objects.annotate(
        n_done=_count(ExpertAnnotation), n_extra=_count(Assignment, extra=True),
        held=Exists(held), has_dispute=Exists(disputed),
    )
    return images.annotate(state=Case(
        When(Q(consensus_at__isnull=False, has_dispute=True), then=Value("disputed")),
        When(Q(consensus_at__isnull=False), then=Value("agreed")),
        When(Q(n_done__gte=F("dataset__experts_per_image") + F("n_extra")), then=Value("awaiting_consensus")),
        When(Q(n_done__gt=0) | Q(held=True), then=Value("in_progress")),
        default=Value("not_annotated"),
    ))


def state_counts() -> dict[str, int]:
    """{state: images}, every state present (0 when none): one query."""
    counts = dict.fromkeys(STATES, 0)
    for state, n in images_with_state().order_by().values_list("state").annotate(n=Count("id")):
        counts[state] = n
    return counts


def images_in_state(state: str) -> QuerySet[Image]:
    return images_with_state().filter(state=state).select_related("dataset").order_by("dataset__name", "original_name", "id")
