"""The one way to queue background work: ``enqueue_on_commit(task, *ids)``.

The task is sent after the surrounding transaction commits (never a task for a row that was
rolled back) and never blocks a request on the broker: when the broker does not take it (Redis
down: a 1 s connect timeout, then no further attempt for ``BROKER_RETRY_AFTER_S`` in this
process), the enqueue is kept as a :class:`~cytoloop.models.PendingEnqueue` row and sent by the
periodic ``cytoloop.send_pending_enqueues`` task once the broker is back. A job row passed as
``job=`` gets the broker's task id in ``task_id`` when the task is sent (now or later).

A task marks its row with :func:`mark_running` when it starts (status, start time, worker name,
heartbeat), :func:`beat` as it progresses (heartbeat and progress) and :func:`mark_finished` when
it ends (status, error, finish time), so every job kind records its timings, liveness and worker
the same way.
"""

from __future__ import annotations

import json
import logging
import socket
import time

from celery import current_task
from celery.signals import worker_init
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from cytoloop.models import FINISHED_STATUSES, Job, JobStatus, PendingEnqueue

log = logging.getLogger(__name__)

#: After the broker refused a send, this process stores enqueues as pending for this long
#: without trying the broker again (so a request never waits on a dead broker twice).
BROKER_RETRY_AFTER_S = 10.0
_broker_down_until = 0.0


def _args_key(args) -> str:
    return json.dumps(list(args), sort_keys=True, separators=(",", ":"))[:200]


def _job_label(job: Job | None) -> str:
    return "" if job is None else f"{job._meta.app_label}.{job._meta.object_name}"


def _record_task_id(job_model: str, job_id: int | None, task_id: str) -> None:
    if not job_model or job_id is None:
        return
    from django.apps import apps

    apps.get_model(job_model).objects.filter(pk=job_id).update(task_id=task_id)


def _keep(task_name: str, args, job_model: str, job_id: int | None, error: str) -> None:
    key = _args_key(args)
    updated = PendingEnqueue.objects.filter(task_name=task_name, args_key=key).update(
        attempts=F("attempts") + 1, error=error[:2000])
    if not updated:
        try:
            with transaction.atomic():
                PendingEnqueue.objects.create(task_name=task_name, args=list(args), args_key=key,
                                              job_model=job_model, job_id=job_id, error=error[:2000])
        except IntegrityError:  # another process kept the same enqueue meanwhile
            pass


def _send(task, args):
    if isinstance(task, str):
        from cytoloop.celery import app

        return app.send_task(task, args=list(args), retry=False)
    return task.apply_async(args, retry=False)


def send_now(task, *args, job: Job | None = None) -> bool:
    """Send the task (a Celery task or its registered name) to the broker at once; if the broker
    does not take it, keep it pending. True if sent."""
    global _broker_down_until
    name = task if isinstance(task, str) else task.name
    job_model, job_id = _job_label(job), (job.pk if job is not None else None)
    if time.monotonic() < _broker_down_until:
        _keep(name, args, job_model, job_id, "broker unreachable (not retried yet)")
        return False
    try:
        result = _send(task, args)
    except Exception as exc:  # broker unreachable: keep it, the sweeper sends it when it is back
        _broker_down_until = time.monotonic() + BROKER_RETRY_AFTER_S
        log.warning("%s%s not queued (%s); kept, sent when the broker is back", name, args, exc)
        _keep(name, args, job_model, job_id, f"{type(exc).__name__}: {exc}")
        return False
    _broker_down_until = 0.0
    _record_task_id(job_model, job_id, result.id)
    return True


def enqueue_on_commit(task, *args, job: Job | None = None) -> None:
    """Queue ``task(*args)`` once the current transaction commits (at once outside one).

    ``task`` is a Celery task or its registered name (a name needs no import of the tasks
    module, which would be circular from a service the task calls). ``args`` are ids (JSON-serialisable); ``job`` is the row the task works on, whose
    ``task_id`` is set when the broker takes the task."""
    transaction.on_commit(lambda: send_now(task, *args, job=job))


def send_pending_enqueues(*, limit: int = 500) -> dict:
    """Send what the broker did not take before (oldest first); stop at the first refusal."""
    global _broker_down_until
    sent = 0
    for row in PendingEnqueue.objects.all()[:limit]:
        try:
            result = _send(row.task_name, row.args)
        except Exception as exc:
            PendingEnqueue.objects.filter(pk=row.pk).update(attempts=F("attempts") + 1,
                                                             error=f"{type(exc).__name__}: {exc}"[:2000])
            return {"sent": sent, "left": PendingEnqueue.objects.count(), "error": str(exc)}
        _broker_down_until = 0.0
        _record_task_id(row.job_model, row.job_id, result.id)
        PendingEnqueue.objects.filter(pk=row.pk).delete()
        sent += 1
    return {"sent": sent, "left": PendingEnqueue.objects.count()}


# ---------------------------------------------------------------------------------------------
# A job's row while it runs


#: The node name (``celery@host``) of the Celery worker started in this process, if any. A task's
#: own ``request.hostname`` is that name under the prefork pool but the bare host name under the
#: solo and threads pools, hence this.
_worker_node = ""


@worker_init.connect
def _remember_worker_node(sender=None, **_kwargs) -> None:
    global _worker_node
    _worker_node = getattr(sender, "hostname", "") or ""


def worker_name() -> str:
    """The Celery worker's node name (``celery@host``) inside a task a worker runs, else this
    host's name (a management command, a test)."""
    if not current_task:
        return socket.gethostname()
    return _worker_node or getattr(current_task.request, "hostname", None) or socket.gethostname()


def _write(job: Job, values: dict) -> Job:
    for name, value in values.items():
        setattr(job, name, value)
    type(job)._default_manager.filter(pk=job.pk).update(**values)
    return job


def mark_running(job: Job, *, worker: str | None = None, **fields) -> Job:
    """The job is running: status, its first start time (kept on a resume), its worker and a
    heartbeat; ``fields`` are the kind's own columns written with them."""
    now = timezone.now()
    return _write(job, {"status": JobStatus.RUNNING, "started_at": job.started_at or now, "heartbeat_at": now,
                        "worker": (worker or worker_name())[:200], **fields})


def beat(job: Job, **fields) -> Job:
    """The running job is alive: its heartbeat now, written with the kind's own fields (its
    progress, counts...)."""
    return _write(job, {"heartbeat_at": timezone.now(), **fields})


def mark_finished(job: Job, status: str, error: str = "", **fields) -> Job:
    """The job ended as ``status`` (succeeded, failed, cancelled, interrupted) with ``error``
    ("" unless it failed); ``fields`` are the kind's own columns written with them."""
    if status not in FINISHED_STATUSES:
        raise ValueError(f"{status!r} is not a finished status")
    return _write(job, {"status": status, "error": error[:5000], "finished_at": timezone.now(), **fields})
