"""The Label Studio mirror: webhook events and the periodic reconcile bring Label Studio's
annotations into CytoLoop (idempotent)."""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from annotation import labelstudio
from annotation.geometry import Box, InvalidBox
from annotation.models import Assignment, Dataset, ExpertAnnotation, Image, OutboxMessage
from annotation.services.consensus import queue_consensus
from annotation.services.outbox import flush_outbox
from annotation.services.submissions import save_expert_annotation, validate_boxes

log = logging.getLogger(__name__)


class WebhookPayloadError(ValueError):
    """A Label Studio event that does not say what CytoLoop needs; the message says what."""


ANNOTATION_ACTIONS = {"ANNOTATION_CREATED", "ANNOTATION_UPDATED"}


DELETE_ACTIONS = {"ANNOTATIONS_DELETED", "ANNOTATION_DELETED"}


def _ref_id(value, what: str) -> int:
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, bool) or not isinstance(value, int):
        raise WebhookPayloadError(f"{what} must be an id (integer), got {value!r}")
    return value


def mirror_ls_event(payload) -> str:
    """Apply one Label Studio webhook event; returns what happened. Same event twice: no change."""
    if not isinstance(payload, dict):
        raise WebhookPayloadError("the event must be a JSON object")
    action = payload.get("action")
    if action in DELETE_ACTIONS:
        items = payload.get("annotations")
        if items is None and isinstance(payload.get("annotation"), dict):
            items = [payload["annotation"]]
        if not isinstance(items, list):
            raise WebhookPayloadError(f"{action} needs a list 'annotations'")
        ids = [_ref_id(item, "annotations[].id") for item in items]
        return mirror_ls_deletions(ids)
    if action not in ANNOTATION_ACTIONS:
        raise WebhookPayloadError(
            f"unsupported action {action!r}; expected one of "
            f"{', '.join(sorted(ANNOTATION_ACTIONS | DELETE_ACTIONS))}"
        )
    ann = payload.get("annotation")
    if not isinstance(ann, dict):
        raise WebhookPayloadError("the event has no 'annotation' object")
    task = payload.get("task")
    task_id = _ref_id(task if task is not None else ann.get("task"), "task id")
    return mirror_ls_annotation(ann, task_id=task_id, task_data=(task or {}).get("data") if isinstance(task, dict) else None)


def mirror_ls_annotation(ann: dict, *, task_id: int, task_data: dict | None = None) -> str:
    ls_id = _ref_id(ann.get("id"), "annotation id")
    result = ann.get("result")
    if not isinstance(result, list):
        raise WebhookPayloadError("annotation 'result' must be a list")
    if ann.get("ground_truth"):
        return "ignored: ground truth is CytoLoop's own"
    if ann.get("was_cancelled"):
        return mirror_ls_deletions([ls_id])
    image = Image.objects.filter(ls_task_id=task_id).first()
    if image is None and task_data and isinstance(task_data.get("cytoloop_image_id"), int):
        image = Image.objects.filter(pk=task_data["cytoloop_image_id"]).first()
    if image is None:
        return f"ignored: task {task_id} is not a CytoLoop image"
    user = labelstudio.user_for_ls_id(_ref_id(ann.get("completed_by"), "completed_by"))
    if user is None:
        return "ignored: annotator unknown to CytoLoop"
    try:
        boxes = labelstudio.result_to_boxes(result, image.width, image.height)
        boxes = validate_boxes(boxes, image)
    except (ValueError, InvalidBox) as exc:
        raise WebhookPayloadError(f"annotation {ls_id}: {exc}") from None

    with transaction.atomic():
        # submit_annotation's lock order (the assignment, then the annotation): a webhook and a
        # submit for the same image and expert wait for each other, never deadlock
        Assignment.objects.select_for_update().filter(image=image, annotator=user).first()
        existing = (
            ExpertAnnotation.objects.select_for_update().filter(ls_annotation_id=ls_id).first()
            or ExpertAnnotation.objects.select_for_update().filter(image=image, annotator=user).first()
        )
        if existing is not None and OutboxMessage.objects.filter(
            kind=OutboxMessage.Kind.PUSH_ANNOTATION, object_id=existing.pk, status=OutboxMessage.Status.PENDING
        ).exists():
            return "ignored: a newer local edit is waiting to be pushed"
        if existing is not None:
            same = sorted((b.as_box() for b in existing.boxes.all()), key=Box.sort_key) == sorted(boxes, key=Box.sort_key)
            if same and existing.ls_annotation_id == ls_id:
                return "unchanged"
            if not same:
                save_expert_annotation(image=image, annotator=user, boxes=boxes, origin=existing.origin)
            ExpertAnnotation.objects.filter(pk=existing.pk).update(ls_annotation_id=ls_id)
            outcome = "updated" if not same else "linked"
        else:
            created = save_expert_annotation(
                image=image, annotator=user, boxes=boxes, origin=ExpertAnnotation.Origin.LABEL_STUDIO)
            ExpertAnnotation.objects.filter(pk=created.pk).update(ls_annotation_id=ls_id)
            outcome = "created"
        Assignment.objects.update_or_create(
            image=image, annotator=user,
            defaults={"status": Assignment.Status.SUBMITTED, "finished_at": timezone.now(),
                      "expires_at": timezone.now()},
        )
        queue_consensus(image.pk)
    return outcome


def mirror_ls_deletions(ls_ids: list[int]) -> str:
    with transaction.atomic():
        doomed = list(ExpertAnnotation.objects.select_for_update().filter(ls_annotation_id__in=ls_ids))
        for annotation in doomed:
            Assignment.objects.filter(image=annotation.image_id, annotator=annotation.annotator_id).update(
                status=Assignment.Status.RELEASED)
            annotation.delete()
            queue_consensus(annotation.image_id)
    return f"deleted {len(doomed)}" if doomed else "unchanged"


def reconcile_label_studio(*, dataset: Dataset | None = None) -> dict:
    """Pull every annotation from Label Studio that the webhook may have missed, drop local
    copies of annotations deleted there, then flush the outbox. Idempotent."""
    stats: dict[str, int] = {}
    if not labelstudio.is_configured():
        return {"skipped": 1}
    datasets = [dataset] if dataset else list(Dataset.objects.exclude(ls_project_id=None))
    ls = labelstudio.client()
    for ds in datasets:
        seen: set[int] = set()
        with labelstudio.translate_errors():
            tasks = list(ls.tasks.list(project=ds.ls_project_id, fields="all"))
        for task in tasks:
            for ann in task.annotations or []:
                data = ann if isinstance(ann, dict) else ann.model_dump()
                if data.get("ground_truth"):
                    continue
                seen.add(data["id"])
                try:
                    outcome = mirror_ls_annotation(data, task_id=task.id, task_data=task.data)
                except WebhookPayloadError as exc:
                    log.warning("reconcile: %s", exc)
                    outcome = "invalid"
                key = outcome.split(":")[0]
                stats[key] = stats.get(key, 0) + 1
        pending = OutboxMessage.objects.filter(
            kind=OutboxMessage.Kind.PUSH_ANNOTATION, status=OutboxMessage.Status.PENDING
        ).values_list("object_id", flat=True)
        gone = (
            ExpertAnnotation.objects.filter(image__dataset=ds).exclude(ls_annotation_id=None)
            .exclude(ls_annotation_id__in=seen).exclude(pk__in=list(pending))
            .values_list("ls_annotation_id", flat=True)
        )
        gone = list(gone)
        if gone:
            mirror_ls_deletions(gone)
            stats["deleted"] = stats.get("deleted", 0) + len(gone)
    flushed = flush_outbox()
    stats["pushed"] = flushed["done"]
    return stats
