"""The editor's state on the server: drafts (work in progress per assignment), the editor's
result items (with the model box each region started from), and releasing held images on log-out.

A draft is what the expert's editor last had, autosaved as they draw. It belongs to the
assignment (one per image and expert, kept while the assignment is released and taken again),
remembers the annotation revision it was edited from, and is removed when the annotation is
submitted (services.submit_annotation). A draft edited from an older revision than the one
saved now is stale: saving it is refused (StaleAnnotation, HTTP 409) and it is never restored.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.dispatch import receiver
from django.utils import timezone

from annotation.formats import ls_value_to_box, pixels_to_ls_value
from annotation.geometry import Box
from annotation.labelstudio import FROM_NAME, TO_NAME
from annotation.models import AnnotationDraft, Assignment, ExpertAnnotation, Image
from annotation.services import AnnotationRejected, NotAssigned, StaleAnnotation

#: region id of a box that started as the model's box (PredictionBox id N): "pred-N"
PREDICTION_REGION = re.compile(r"^pred-(\d+)$")
#: a draft holds at most this many boxes (a smear has tens of clusters, not thousands)
MAX_DRAFT_BOXES = 500

OPEN_STATES = (Assignment.Status.ACTIVE, Assignment.Status.SUBMITTED)


def prediction_region_id(prediction_id: int) -> str:
    return f"pred-{prediction_id}"


def parse_result(result: Sequence[dict], width: int, height: int) -> tuple[list[Box], list[int | None]]:
    """Pixel boxes from the editor's Label Studio result items, and for each the PredictionBox id
    it started from (region id "pred-N") or None. Raises ValueError saying what is wrong."""
    boxes, predictions = [], []
    for i, item in enumerate(result):
        if not isinstance(item, dict) or item.get("type") != "rectanglelabels":
            continue
        value = item.get("value")
        if not isinstance(value, dict):
            raise ValueError(f"result item {i}: a rectangle has no value")
        boxes.append(ls_value_to_box(value, width, height))
        match = PREDICTION_REGION.match(str(item.get("id", "")))
        predictions.append(int(match.group(1)) if match else None)
    return boxes, predictions


def editor_result(items: Sequence[tuple[Box, int | None]], width: int, height: int) -> list[dict]:
    """Label Studio result items for the editor; a box that started as a model box keeps the
    region id "pred-N", so a re-submit still says where it came from."""
    out = []
    for box, prediction in items:
        item = {
            "from_name": FROM_NAME, "to_name": TO_NAME, "type": "rectanglelabels",
            "original_width": width, "original_height": height, "image_rotation": 0,
            "value": pixels_to_ls_value(box, width, height),
        }
        if prediction is not None:
            item["id"] = prediction_region_id(prediction)
            item["origin"] = "prediction-changed"
        out.append(item)
    return out


def annotation_items(annotation: ExpertAnnotation) -> list[tuple[Box, int | None]]:
    return [(b.as_box(), b.prediction_id) for b in annotation.boxes.all()]


def draft_items(draft: AnnotationDraft) -> list[tuple[Box, int | None]]:
    return [(Box(b["x"], b["y"], b["width"], b["height"], b["label"]), b.get("prediction")) for b in draft.boxes]


def current_revision(image: Image, annotator) -> int:
    """The revision of the annotator's saved annotation of ``image`` (0: nothing saved)."""
    return (ExpertAnnotation.objects.filter(image=image, annotator=annotator)
            .values_list("revision", flat=True).first()) or 0


def restorable_draft(assignment: Assignment) -> AnnotationDraft | None:
    """The assignment's draft if it was edited from what is saved now (else None: stale)."""
    draft = AnnotationDraft.objects.filter(assignment=assignment).first()
    if draft is None:
        return None
    if (draft.base_revision or 0) != current_revision(assignment.image, assignment.annotator):
        return None
    return draft


def save_draft(*, image: Image, annotator, boxes: list[Box], predictions: list[int | None],
               base_revision: int | None) -> AnnotationDraft:
    """Keep the editor's work in progress for the annotator's assignment of ``image``.

    Raises services.NotAssigned (no open assignment), services.AnnotationRejected (too many
    boxes) or services.StaleAnnotation (edited from an older revision than the one saved now)."""
    if len(boxes) > MAX_DRAFT_BOXES:
        raise AnnotationRejected([f"a draft holds at most {MAX_DRAFT_BOXES} boxes, got {len(boxes)}"])
    with transaction.atomic():
        assignment = (Assignment.objects.select_for_update()
                      .filter(image=image, annotator=annotator, status__in=OPEN_STATES).first())
        if assignment is None:
            raise NotAssigned(f"image {image.pk} is not assigned to {annotator.get_username()}")
        saved = ExpertAnnotation.objects.filter(image=image, annotator=annotator).first()
        if (base_revision or 0) != (saved.revision if saved else 0):
            raise StaleAnnotation(annotation=saved, seen=base_revision or 0)
        rows = [{"x": b.x, "y": b.y, "width": b.width, "height": b.height, "label": b.label,
                 **({"prediction": p} if p is not None else {})}
                for b, p in zip(boxes, predictions, strict=True)]
        draft, _ = AnnotationDraft.objects.update_or_create(
            assignment=assignment, defaults={"boxes": rows, "base_revision": base_revision or None})
    return draft


def release_held_assignments(*, user) -> int:
    """Hand back every image ``user`` holds now (their drafts stay with the assignments)."""
    with transaction.atomic():
        return Assignment.objects.filter(annotator=user, status=Assignment.Status.ACTIVE).update(
            status=Assignment.Status.RELEASED, finished_at=timezone.now())


@receiver(user_logged_out, dispatch_uid="annotation.release_on_logout")
def _release_on_logout(sender, request, user, **kwargs):
    if user is not None and user.is_authenticated:
        release_held_assignments(user=user)
