"""Review: reviewers resolve disputed clusters; every decision is audited."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from annotation import ground_truth
from annotation.bethesda import normalize_label
from annotation.geometry import Box, InvalidBox
from annotation.models import (
    Assignment,
    AuditEntry,
    Cluster,
    ExpertAnnotation,
    Image,
    OutboxMessage,
)
from annotation.services.common import AnnotationRejected
from annotation.services.outbox import enqueue_outbox
from annotation.services.queue import release_expired_assignments
from cytoloop.roles import Role, has_role


class ReviewRefused(Exception):
    """A review action that is not allowed (the message says why)."""


def _cluster_state(cluster) -> dict:
    return {"status": cluster.status, "label": cluster.label, "x": cluster.x, "y": cluster.y,
            "width": cluster.width, "height": cluster.height}


def _check_reviewer(cluster_or_image, reviewer) -> None:
    if not has_role(reviewer, Role.REVIEWER):
        raise ReviewRefused("only reviewers resolve clusters")
    image_id = getattr(cluster_or_image, "image_id", None) or cluster_or_image.pk
    if not settings.REVIEWERS_MAY_RESOLVE_OWN_IMAGES and ExpertAnnotation.objects.filter(
        image_id=image_id, annotator=reviewer
    ).exists():
        raise ReviewRefused("you annotated this image yourself: another reviewer must resolve it")


def _audit(*, actor, action, image_id, cluster=None, before=None, after=None, comment=""):
    return AuditEntry.objects.create(actor=actor, action=action, image_id=image_id, cluster=cluster,
                                     before=before, after=after, comment=comment)


def _queue_ground_truth_push(image_id: int) -> None:
    enqueue_outbox(kind=OutboxMessage.Kind.PUSH_GROUND_TRUTH, object_id=image_id)


def resolve_cluster(*, cluster, reviewer, label: str | None = None, box: Box | None = None, comment: str = ""):
    """The reviewer's decision on a cluster: its label (default: the vote's winner) and, when
    given, an adjusted box. It becomes ground truth (source review), is written to Label Studio
    as the ground-truth annotation (outbox) and is recorded in the audit log."""
    with transaction.atomic():
        cluster = Cluster.objects.select_for_update().select_related("image").get(pk=cluster.pk)
        _check_reviewer(cluster, reviewer)
        image = cluster.image
        before = _cluster_state(cluster)
        try:
            new_label = normalize_label(label) if label else cluster.label
            new_box = (box or cluster.as_box())
            new_box = Box(new_box.x, new_box.y, new_box.width, new_box.height, new_label).validated(
                image.width, image.height)
        except (ValueError, InvalidBox) as exc:
            raise AnnotationRejected([str(exc)]) from None
        # the reviewer's truth supersedes the lesion's current box, whatever its source (an earlier
        # decision included): kept as history, never duplicated (annotation.ground_truth)
        now = timezone.now()
        ground_truth.apply_review(image=image, cluster=cluster, before=cluster.as_box(), box=new_box,
                                  reviewer=reviewer, now=now)
        cluster.x, cluster.y, cluster.width, cluster.height = new_box.x, new_box.y, new_box.width, new_box.height
        cluster.label = new_box.label
        cluster.status = Cluster.Status.RESOLVED
        cluster.resolved_at, cluster.resolved_by = now, reviewer
        cluster.save()
        changed_box = (before["x"], before["y"], before["width"], before["height"]) != (
            new_box.x, new_box.y, new_box.width, new_box.height)
        action = AuditEntry.Action.ADJUST_BOX if changed_box else (
            AuditEntry.Action.SET_LABEL if new_label != before["label"] else AuditEntry.Action.ACCEPT)
        _audit(actor=reviewer, action=action, image_id=image.pk, cluster=cluster, before=before,
               after=_cluster_state(cluster), comment=comment)
        _queue_ground_truth_push(image.pk)
    return cluster


def reject_cluster(*, cluster, reviewer, comment: str = ""):
    """Not a lesion: the lesion's current ground truth is retired (kept as history); recorded in
    the audit log. A later decision on the cluster supersedes this one."""
    with transaction.atomic():
        cluster = Cluster.objects.select_for_update().get(pk=cluster.pk)
        _check_reviewer(cluster, reviewer)
        before = _cluster_state(cluster)
        # the lesion's current box (imported, consensus or an earlier decision) is retired, kept
        # as history; the rejected cluster keeps later imports and recomputes off it
        now = timezone.now()
        ground_truth.retire_for_rejection(image_id=cluster.image_id, cluster=cluster, now=now)
        cluster.status = Cluster.Status.REJECTED
        cluster.resolved_at, cluster.resolved_by = now, reviewer
        cluster.save(update_fields=["status", "resolved_at", "resolved_by"])
        _audit(actor=reviewer, action=AuditEntry.Action.REJECT, image_id=cluster.image_id, cluster=cluster,
               before=before, after=_cluster_state(cluster), comment=comment)
        _queue_ground_truth_push(cluster.image_id)
    return cluster


def comment_on_cluster(*, cluster, reviewer, text: str):
    if not has_role(reviewer, Role.REVIEWER):
        raise ReviewRefused("only reviewers comment on clusters")
    text = (text or "").strip()
    if not text:
        raise ReviewRefused("a comment needs some text")
    with transaction.atomic():
        _audit(actor=reviewer, action=AuditEntry.Action.COMMENT, image_id=cluster.image_id, cluster=cluster,
               comment=text[:5000])


def request_another_expert(*, image: Image, reviewer, comment: str = "", cluster=None):
    """Assign the image to one more pathologist (one who has not annotated it, with the fewest
    open assignments), as Label Studio Enterprise does on low agreement. Consensus then waits for
    N+1 annotations.

    The image is held for them EXTRA_EXPERT_LOCK_MINUTES (stated in the audit row with its
    reason); after that it goes back to the queue of any pathologist who has not annotated it.
    ``cluster``: the cluster the reviewer asked from; the audit row is shown on it."""
    release_expired_assignments()  # a lapsed hold does not block the request
    with transaction.atomic():
        Image.objects.select_for_update().filter(pk=image.pk).first()
        _check_reviewer(image, reviewer)
        if Assignment.objects.filter(image=image, status=Assignment.Status.ACTIVE).exists():
            raise ReviewRefused("an expert is annotating this image right now; wait for them first")
        busy = Q(assignments__status=Assignment.Status.ACTIVE)
        candidate = (
            get_user_model().objects.filter(groups__name=Role.PATHOLOGIST.value, is_active=True)
            .exclude(annotations__image=image).exclude(assignments__image=image).exclude(pk=reviewer.pk)
            .exclude(password__startswith="!")  # simulated experts cannot log in
            .annotate(open=Count("assignments", filter=busy)).order_by("open", "id").first()
        )
        if candidate is None:
            raise ReviewRefused("every pathologist has already annotated this image")
        minutes = settings.EXTRA_EXPERT_LOCK_MINUTES
        assignment = Assignment.objects.create(
            image=image, annotator=candidate, extra=True, expires_at=timezone.now() + timedelta(minutes=minutes),
        )
        _audit(actor=reviewer, action=AuditEntry.Action.REQUEST_EXPERT, image_id=image.pk,
               cluster=cluster if cluster is not None and cluster.image_id == image.pk else None,
               after={"assigned_to": candidate.get_username(), "held_until": assignment.expires_at.isoformat(),
                      "hold_minutes": minutes,
                      "hold_reason": "EXTRA_EXPERT_LOCK_MINUTES: held for the asked expert, then open to "
                                     "any pathologist who has not annotated the image"},
               comment=comment)
    return assignment
