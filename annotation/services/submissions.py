"""An expert's boxes for an image: validated, stored with optimistic concurrency, pushed."""

from __future__ import annotations

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from annotation.geometry import Box, InvalidBox
from annotation.models import (
    AnnotationDraft,
    Assignment,
    ExpertAnnotation,
    ExpertBox,
    Image,
    OutboxMessage,
    PredictionBox,
)
from annotation.services.common import AnnotationRejected, NotAssigned, StaleAnnotation
from annotation.services.consensus import queue_consensus
from annotation.services.outbox import enqueue_outbox

#: ``base_revision`` default of save_expert_annotation/submit_annotation: no concurrency check
#: (the simulation, the Label Studio mirror, tests); every save from an editor names its revision.
UNCHECKED = object()


#: a pre-annotation within this many pixels (each of x, y, width, height) and with its label is
#: "accepted unchanged"
PREDICTION_TOLERANCE_PX = 0.5


def _prediction_provenance(image: Image, boxes: list[Box], predictions) -> list[dict]:
    """Per box: which model box it started from and whether the expert changed it."""
    if not predictions:
        return [{} for _ in boxes]
    if len(predictions) != len(boxes):
        raise AnnotationRejected([f"{len(predictions)} prediction ids for {len(boxes)} boxes"])
    wanted = {p for p in predictions if p is not None}
    rows = {p.pk: p for p in PredictionBox.objects.filter(image=image, pk__in=wanted)}
    errors = [f"box {i}: prediction {p} is not one of this image's predictions"
              for i, p in enumerate(predictions) if p is not None and p not in rows]
    if errors:
        raise AnnotationRejected(errors)
    out = []
    for box, pid in zip(boxes, predictions, strict=True):
        if pid is None:
            out.append({})
            continue
        row = rows[pid]
        same = row.label == box.label and all(
            abs(getattr(row, f) - getattr(box, f)) <= PREDICTION_TOLERANCE_PX for f in ("x", "y", "width", "height"))
        out.append({"prediction": row, "prediction_model": row.model_version, "prediction_changed": not same})
    return out


@transaction.atomic
def save_expert_annotation(*, image: Image, annotator, boxes: list[Box], origin: str,
                           base_revision=UNCHECKED, predictions: list[int | None] | None = None) -> ExpertAnnotation:
    """Create or replace one expert's boxes for one image (validated against the image size).

    Optimistic concurrency: ``base_revision`` is the revision the editor was opened on (0 or
    None: nothing was submitted then). A save from an older revision raises StaleAnnotation and
    writes nothing; every save bumps ``revision``. ``predictions`` (aligned with ``boxes``): the
    PredictionBox id each box started from (a pre-annotation), or None for a drawn box."""
    checked = [b.validated(image.width, image.height) for b in boxes]
    provenance = _prediction_provenance(image, checked, predictions)
    existing = ExpertAnnotation.objects.select_for_update().filter(image=image, annotator=annotator).first()
    if existing is None:
        if base_revision is not UNCHECKED and (base_revision or 0) != 0:
            raise StaleAnnotation(annotation=None, seen=base_revision)
        annotation = ExpertAnnotation.objects.create(image=image, annotator=annotator, origin=origin, revision=1)
    else:
        rows = ExpertAnnotation.objects.filter(pk=existing.pk)
        if base_revision is not UNCHECKED:
            rows = rows.filter(revision=base_revision or 0)
        if not rows.update(origin=origin, revision=F("revision") + 1, updated_at=timezone.now()):
            raise StaleAnnotation(annotation=existing, seen=base_revision or 0)
        annotation = ExpertAnnotation.objects.get(pk=existing.pk)
    annotation.boxes.all().delete()
    ExpertBox.objects.bulk_create(
        ExpertBox(annotation=annotation, x=b.x, y=b.y, width=b.width, height=b.height, label=b.label, **extra)
        for b, extra in zip(checked, provenance, strict=True)
    )
    return annotation


def validate_boxes(boxes: list, image: Image) -> list[Box]:
    """Box objects checked against the image: every problem listed, nothing stored."""
    errors, checked = [], []
    for i, box in enumerate(boxes):
        try:
            checked.append(box.validated(image.width, image.height))
        except InvalidBox as exc:
            errors.append(f"box {i}: {exc}")
    if errors:
        raise AnnotationRejected(errors)
    return checked


def submit_annotation(*, image: Image, annotator, boxes: list[Box], origin: str = ExpertAnnotation.Origin.EDITOR,
                      base_revision=UNCHECKED, predictions: list[int | None] | None = None):
    """Store an expert's boxes for an image they were assigned, and queue the Label Studio push.

    ``base_revision``: the revision the editor was opened on (see save_expert_annotation; a
    stale one raises StaleAnnotation, nothing written). The assignment's draft is removed.
    The database write is the acknowledgement: Label Studio and the broker may be down; the
    outbox keeps the push until it succeeds."""
    checked = validate_boxes(boxes, image)
    with transaction.atomic():
        assignment = (
            Assignment.objects.select_for_update()
            .filter(image=image, annotator=annotator,
                    status__in=[Assignment.Status.ACTIVE, Assignment.Status.SUBMITTED])
            .first()
        )
        if assignment is None:
            raise NotAssigned(f"image {image.pk} is not assigned to {annotator.get_username()}")
        annotation = save_expert_annotation(image=image, annotator=annotator, boxes=checked, origin=origin,
                                            base_revision=base_revision, predictions=predictions)
        AnnotationDraft.objects.filter(assignment=assignment).delete()
        assignment.status = Assignment.Status.SUBMITTED
        assignment.finished_at = timezone.now()
        assignment.save(update_fields=["status", "finished_at"])
        enqueue_outbox(kind=OutboxMessage.Kind.PUSH_ANNOTATION, object_id=annotation.pk)
        queue_consensus(image.pk)
    return annotation
