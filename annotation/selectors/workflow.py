"""Reads for the annotation workflow: an expert's own annotations and queue, and what consensus
reads of an image's annotations. Expert annotations are read through annotation.access
(blind annotation: these are the only reads of them)."""

from __future__ import annotations

from django.db.models import Count, F, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce

from annotation import access
from annotation.geometry import Box
from annotation.models import Assignment, ExpertAnnotation, ExpertBox, Image


def own_annotations(user) -> QuerySet:
    return (
        ExpertAnnotation.objects.filter(annotator=user)
        .select_related("annotator").prefetch_related("boxes").order_by("-updated_at")
    )


def visible_annotations(user, image: Image) -> QuerySet:
    """The expert annotations of ``image`` that ``user`` may see now (annotation.access: only
    their own while they have a pending vote or before consensus; every expert's after)."""
    return access.annotations(user, access.image_view(user, image), image)


def queue_candidates(annotator, dataset=None):
    """Images this annotator may be handed next, in queue order (see next_assignment)."""
    done = (
        ExpertAnnotation.objects.filter(image=OuterRef("pk")).order_by().values("image")
        .annotate(n=Count("id")).values("n")
    )
    extra = (
        Assignment.objects.filter(image=OuterRef("pk"), extra=True).order_by().values("image")
        .annotate(n=Count("id")).values("n")
    )
    candidates = (
        Image.objects.annotate(
            n_done=Coalesce(Subquery(done), Value(0)), n_extra=Coalesce(Subquery(extra), Value(0))
        )
        .filter(n_done__lt=F("dataset__experts_per_image") + F("n_extra"))
        .exclude(assignments__status=Assignment.Status.ACTIVE)
        .exclude(assignments__annotator=annotator, assignments__status__in=[
            Assignment.Status.SUBMITTED, Assignment.Status.SKIPPED])
        .exclude(expert_annotations__annotator=annotator)
        .order_by(F("queue_rank").asc(nulls_last=True), "created_at", "id")
    )
    if dataset is not None:
        candidates = candidates.filter(dataset=dataset)
    return candidates


def queue_progress(*, annotator) -> dict:
    rows = Assignment.objects.filter(annotator=annotator)
    remaining = queue_candidates(annotator).count()
    held = rows.filter(status=Assignment.Status.ACTIVE).count()
    return {
        "done": rows.filter(status=Assignment.Status.SUBMITTED).count(),
        "skipped": rows.filter(status=Assignment.Status.SKIPPED).count(),
        "assigned": rows.exclude(status=Assignment.Status.RELEASED).count(),
        # images still waiting for this annotator (not counting one they hold now)
        "remaining": remaining,
        "held": held,
        # what a person reads: images still to do, the one they hold included
        "waiting": remaining + held,
    }


def required_experts(image: Image) -> int:
    """N for this image: the dataset's experts per image plus extra experts reviewers asked for."""
    return image.dataset.experts_per_image + Assignment.objects.filter(image=image, extra=True).count()


def annotation_rows(image_ids) -> dict[int, list]:
    """{image_id: [(annotation_id, annotator_id, [(box_id, Box, model), ...]), ...]} in two
    queries; ``model`` is the model version of a pre-annotation accepted unchanged, else None."""
    rows: dict[int, dict[int, tuple]] = {}
    for ann_id, image_id, annotator_id in ExpertAnnotation.objects.filter(image_id__in=image_ids).values_list(
        "id", "image_id", "annotator_id"
    ):
        rows.setdefault(image_id, {})[ann_id] = (ann_id, annotator_id, [])
    boxes = ExpertBox.objects.filter(annotation__image_id__in=image_ids).values_list(
        "id", "annotation_id", "annotation__image_id", "x", "y", "width", "height", "label",
        "prediction_model", "prediction_changed",
    ).order_by("annotation_id", "id")
    for box_id, ann_id, image_id, x, y, w, h, label, model, changed in boxes:
        accepted = model if model and changed is False else None
        rows[image_id][ann_id][2].append((box_id, Box(x, y, w, h, label), accepted))
    return {image_id: sorted(anns.values()) for image_id, anns in rows.items()}
