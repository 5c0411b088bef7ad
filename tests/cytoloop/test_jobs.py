"""The one enqueue (cytoloop.jobs): after commit, never blocking on a dead broker, nothing lost.

Real PostgreSQL and Redis; "the broker is down" is a child process whose REDIS_URL points at a
closed port, as when Redis is stopped."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from types import SimpleNamespace

import pytest
import redis
from django.conf import settings
from django.db import transaction

from annotation.models import Dataset, ImportJob
from cytoloop import jobs
from cytoloop.jobs import (
    beat,
    enqueue_on_commit,
    mark_finished,
    mark_running,
    send_pending_enqueues,
)
from cytoloop.models import JobStatus, PendingEnqueue
from tests.helpers import ROOT, child_env

pytestmark = pytest.mark.django_db(transaction=True)

DEAD_BROKER = "redis://127.0.0.1:1/0"


@pytest.fixture
def broker():
    """The real Redis broker of this test process, its queues emptied."""
    from cytoloop.celery import app

    app.control.purge()
    return redis.Redis.from_url(settings.CELERY_BROKER_URL)


def _queued(broker, queue: str = "default", *, task: str | None = None, besides=()) -> list[dict]:
    """The queue's messages (headers), only ``task``'s if given, leaving out the ids in ``besides``
    (other tests' leftovers in this process's Redis database are not this test's business)."""
    headers = [json.loads(m)["headers"] for m in broker.lrange(queue, 0, -1)]
    return [h for h in headers if (task is None or h["task"] == task) and h["id"] not in besides]


def _marked(broker, mark: str) -> list[dict]:
    """This test's messages: those carrying ``mark`` in their arguments (other tests and health
    checks send pings and kicks to the same Redis database meanwhile)."""
    return [h for h in _queued(broker) if mark in (h.get("argsrepr") or "")]


def _with_dead_broker(code: str) -> str:
    env = {**child_env(), "REDIS_URL": DEAD_BROKER}
    result = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_an_enqueue_is_sent_only_when_its_transaction_commits(broker):
    mark = uuid.uuid4().hex  # an argument only this test sends (the message is never run)
    with transaction.atomic():
        enqueue_on_commit("cytoloop.ping", mark)
        assert _marked(broker, mark) == []  # not before the commit
    assert len(_marked(broker, mark)) == 1


def test_an_enqueue_in_a_rolled_back_transaction_is_never_sent(broker):
    mark = uuid.uuid4().hex
    with pytest.raises(RuntimeError), transaction.atomic():
        enqueue_on_commit("cytoloop.ping", mark)
        raise RuntimeError("the request failed")
    assert _marked(broker, mark) == []
    assert not PendingEnqueue.objects.exists()


def test_the_vocabulary_is_one_for_every_job_kind():
    from inference.models import PredictionJob
    from training.models import TrainingRun

    for model in (ImportJob, TrainingRun, PredictionJob):
        assert model.Status is JobStatus
        assert {f.name for f in model._meta.fields} >= {"status", "progress", "error", "task_id", "worker",
                                                         "heartbeat_at", "created_at", "started_at", "finished_at"}


def test_a_dead_broker_never_holds_the_request_and_the_enqueue_is_sent_when_it_is_back(broker):
    dataset = Dataset.objects.create(name="jobs")
    job = ImportJob.objects.create(dataset=dataset, upload_dir="imports/x")
    out = _with_dead_broker(
        "import time; from annotation.models import ImportJob; from cytoloop.jobs import enqueue_on_commit;"
        f"job = ImportJob.objects.get(pk={job.pk}); t = time.monotonic();"
        "[enqueue_on_commit('annotation.run_import_job', job.pk, job=job) for _ in range(3)];"
        "enqueue_on_commit('annotation.flush_outbox');"
        "print('took', time.monotonic() - t)"
    )
    took = float(out.split()[-1])
    assert took < 2.0, out  # one refused connection, then no further attempt while it is down
    kept = {(p.task_name, tuple(p.args)): p for p in PendingEnqueue.objects.all()}
    assert set(kept) == {("annotation.run_import_job", (job.pk,)), ("annotation.flush_outbox", ())}
    assert kept[("annotation.run_import_job", (job.pk,))].attempts == 3  # one row, however often kept
    assert ImportJob.objects.get(pk=job.pk).status == JobStatus.QUEUED  # queued, not failed: nothing lost

    before = {h["id"] for h in _queued(broker)}
    report = send_pending_enqueues()  # the periodic sweep, with the broker back

    assert report == {"sent": 2, "left": 0}
    new = _queued(broker, besides=before)
    assert sorted(h["task"] for h in new) == ["annotation.flush_outbox", "annotation.run_import_job"]
    sent = next(h for h in new if h["task"] == "annotation.run_import_job")
    assert ImportJob.objects.get(pk=job.pk).task_id == sent["id"]
    broker.delete("default")


def test_the_sweep_keeps_what_a_still_dead_broker_refuses():
    PendingEnqueue.objects.create(task_name="cytoloop.ping", args=[], args_key="[]")
    out = _with_dead_broker("from cytoloop.jobs import send_pending_enqueues; print(send_pending_enqueues())")
    assert "'sent': 0" in out and "'left': 1" in out, out
    row = PendingEnqueue.objects.get()
    assert row.attempts == 2 and row.error


def test_a_started_job_records_its_worker_its_first_start_and_a_heartbeat(monkeypatch):
    job = ImportJob.objects.create(dataset=Dataset.objects.create(name="started"), upload_dir="imports/s")
    monkeypatch.setattr(jobs, "current_task", SimpleNamespace(request=SimpleNamespace(hostname="gpu-7")))
    monkeypatch.setattr(jobs, "_worker_node", "celery@gpu-7")  # as the worker's start (worker_init) leaves it

    mark_running(job)
    row = ImportJob.objects.get(pk=job.pk)
    assert (row.status, row.worker) == (JobStatus.RUNNING, "celery@gpu-7")
    assert row.started_at is not None and row.heartbeat_at >= row.started_at

    mark_running(row, worker="celery@gpu-8")  # a resume keeps the first start, names the new worker
    again = ImportJob.objects.get(pk=job.pk)
    assert (again.started_at, again.worker) == (row.started_at, "celery@gpu-8")
    assert again.heartbeat_at >= row.heartbeat_at


def test_a_job_run_outside_a_worker_names_this_host():
    job = ImportJob.objects.create(dataset=Dataset.objects.create(name="here"), upload_dir="imports/h")
    mark_running(job)
    assert ImportJob.objects.get(pk=job.pk).worker == socket.gethostname()


def test_a_running_job_beats_with_its_progress():
    job = mark_running(ImportJob.objects.create(dataset=Dataset.objects.create(name="beats"), upload_dir="imports/b"))
    started = ImportJob.objects.get(pk=job.pk).heartbeat_at
    beat(job, processed=2, total=8)
    row = ImportJob.objects.get(pk=job.pk)
    assert (row.processed, row.total, row.percent) == (2, 8, 25) and row.heartbeat_at >= started


def test_a_finished_job_records_its_status_error_finish_time_and_own_fields():
    job = ImportJob.objects.create(dataset=Dataset.objects.create(name="ended"), upload_dir="imports/e")
    mark_finished(job, JobStatus.FAILED, "x" * 6000, imported=3)
    row = ImportJob.objects.get(pk=job.pk)
    assert (row.status, len(row.error), row.imported) == (JobStatus.FAILED, 5000, 3)
    assert row.finished_at is not None and row.is_finished and not row.is_active
    assert job.status == JobStatus.FAILED  # the instance says what the row says

    with pytest.raises(ValueError, match="not a finished status"):
        mark_finished(job, JobStatus.RUNNING)
