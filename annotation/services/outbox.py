"""The outbox: work for Label Studio recorded in the caller's transaction, sent by a worker."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from annotation import labelstudio
from annotation.models import Dataset, ExpertAnnotation, Image, OutboxMessage
from cytoloop.jobs import enqueue_on_commit

log = logging.getLogger(__name__)


def enqueue_outbox(*, kind: str, object_id: int) -> None:
    """Record work for Label Studio (inside the caller's transaction) and ask a worker to flush
    it after commit. If the broker is down the row stays; the periodic flush sends it later.

    One pending message per object: a second change before the push is folded into it and makes
    it due at once (next_attempt_at cleared), which also tells a flush that is sending the older
    content right now not to mark it done (see flush_outbox)."""
    pending = OutboxMessage.objects.filter(kind=kind, object_id=object_id, status=OutboxMessage.Status.PENDING)
    if not pending.update(next_attempt_at=None):
        try:
            with transaction.atomic():
                OutboxMessage.objects.create(kind=kind, object_id=object_id)
        except IntegrityError:  # another transaction queued it meanwhile
            pending.update(next_attempt_at=None)
    enqueue_on_commit("annotation.flush_outbox")


OUTBOX_MAX_ATTEMPTS = 12


#: back-off after a failed push: base * 2**(attempts - 1) seconds, at most OUTBOX_RETRY_MAX_S
OUTBOX_RETRY_BASE_S = 10


OUTBOX_RETRY_MAX_S = 600


#: a claimed message is left to its flush this long (a flush that died is retried after it)
OUTBOX_LEASE_S = 300


def _outbox_backoff(attempts: int) -> float:
    return min(OUTBOX_RETRY_MAX_S, OUTBOX_RETRY_BASE_S * 2 ** max(0, min(attempts, 30) - 1))


def _claim_outbox(msg_id: int):
    """Take one due message for this flush (its own short transaction). Returns (msg, lease):
    next_attempt_at is set to the lease's end, which marks the claim."""
    now = timezone.now()
    with transaction.atomic():
        msg = (
            OutboxMessage.objects.select_for_update(skip_locked=True)
            .filter(Q(next_attempt_at=None) | Q(next_attempt_at__lte=now), pk=msg_id,
                    status=OutboxMessage.Status.PENDING)
            .first()
        )
        if msg is None:
            return None, None
        lease = now + timedelta(seconds=OUTBOX_LEASE_S)
        OutboxMessage.objects.filter(pk=msg.pk).update(next_attempt_at=lease)
    return msg, lease


def _finish_outbox(msg, lease, *, error: Exception | None = None, unavailable: bool = False) -> bool:
    """Record how one delivery went, in one statement of its own (never in a transaction that a
    failure may have aborted). Only the claim's holder finishes it: if the object changed while
    it was being sent (enqueue_outbox cleared the claim), the message stays pending and due.
    Returns whether the message is done."""
    now = timezone.now()
    claimed = OutboxMessage.objects.filter(pk=msg.pk, status=OutboxMessage.Status.PENDING, next_attempt_at=lease)
    if error is None:
        if claimed.update(status=OutboxMessage.Status.DONE, done_at=now, attempts=F("attempts") + 1,
                          last_error=""):
            return True
        OutboxMessage.objects.filter(pk=msg.pk).update(attempts=F("attempts") + 1)
        return False
    attempts = msg.attempts + 1
    text = f"{type(error).__name__}: {error}"[:2000] if not unavailable else str(error)[:2000]
    dead = not unavailable and attempts >= OUTBOX_MAX_ATTEMPTS
    if not claimed.update(
        attempts=F("attempts") + 1, last_error=text,
        status=OutboxMessage.Status.DEAD if dead else OutboxMessage.Status.PENDING,
        next_attempt_at=now + timedelta(seconds=_outbox_backoff(attempts)),
    ):
        OutboxMessage.objects.filter(pk=msg.pk).update(attempts=F("attempts") + 1, last_error=text)
    return False


def flush_outbox(*, limit: int = 200) -> dict:
    """Send due outbox messages to Label Studio, oldest first. Idempotent per message.

    Each message is claimed in a short transaction, delivered with no transaction and no row
    lock held (Label Studio answers our pushes only after calling our own webhook), and its
    outcome recorded in a statement of its own. A message that fails is retried with
    exponential back-off and the flush goes on with the next one; only "Label Studio is down"
    stops the flush (the rest wait for the next one). Call it outside any transaction."""
    stats = {"done": 0, "failed": 0, "waiting": 0}
    if not labelstudio.is_configured():
        stats["waiting"] = OutboxMessage.objects.filter(status=OutboxMessage.Status.PENDING).count()
        return stats
    ids = list(
        OutboxMessage.objects.filter(Q(next_attempt_at=None) | Q(next_attempt_at__lte=timezone.now()),
                                     status=OutboxMessage.Status.PENDING)
        .order_by("id").values_list("id", flat=True)[:limit]
    )
    for msg_id in ids:
        msg, lease = _claim_outbox(msg_id)
        if msg is None:  # another flush has it, or it is done
            continue
        try:
            _deliver(msg)
        except labelstudio.LabelStudioUnavailable as exc:
            _finish_outbox(msg, lease, error=exc, unavailable=True)
            stats["waiting"] += 1
            break
        except Exception as exc:
            log.warning("outbox message %s (%s %s) failed: %s: %s", msg.pk, msg.kind, msg.object_id,
                        type(exc).__name__, exc)
            _finish_outbox(msg, lease, error=exc)
            stats["failed"] += 1
        else:
            stats["done" if _finish_outbox(msg, lease) else "waiting"] += 1
    return stats


def _deliver(msg) -> None:
    if msg.kind == OutboxMessage.Kind.PUSH_ANNOTATION:
        annotation = ExpertAnnotation.objects.select_related("image", "image__dataset", "annotator").filter(
            pk=msg.object_id).first()
        if annotation is not None:  # deleted meanwhile: nothing to send
            labelstudio.push_annotation(annotation)
    elif msg.kind == OutboxMessage.Kind.PUSH_GROUND_TRUTH:
        image = Image.objects.select_related("dataset").filter(pk=msg.object_id).first()
        if image is not None:
            # the image's current ground truth, one box per lesion whatever its source (the
            # default manager leaves superseded rows out): Label Studio shows what CytoLoop trains on
            truth = [b.as_box() for b in image.ground_truth.order_by("id")]
            reviewer = (image.clusters.exclude(resolved_by=None).order_by("-resolved_at")
                        .values_list("resolved_by", flat=True).first())
            labelstudio.push_ground_truth(
                image, truth, reviewer=get_user_model().objects.filter(pk=reviewer).first() if reviewer else None)
    elif msg.kind == OutboxMessage.Kind.PUSH_TASKS:
        labelstudio.push_images(Dataset.objects.get(pk=msg.object_id))
    else:
        raise ValueError(f"no handler for outbox kind {msg.kind}")
