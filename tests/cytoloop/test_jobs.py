"""The one enqueue (cytoloop.jobs): after commit, never blocking on a dead broker, nothing lost.

Real PostgreSQL and Redis; "the broker is down" is a child process whose REDIS_URL points at a
closed port, as when Redis is stopped."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import redis
from django.conf import settings
from django.db import transaction

from annotation.models import Dataset, ImportJob
from cytoloop.jobs import enqueue_on_commit, send_pending_enqueues
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


def _queued(broker, queue: str = "default") -> list[dict]:
    return [json.loads(m)["headers"] for m in broker.lrange(queue, 0, -1)]


def _with_dead_broker(code: str) -> str:
    env = {**child_env(), "REDIS_URL": DEAD_BROKER}
    result = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_an_enqueue_is_sent_only_when_its_transaction_commits(broker):
    with transaction.atomic():
        enqueue_on_commit("cytoloop.ping")
        assert _queued(broker) == []  # not before the commit
    assert [h["task"] for h in _queued(broker)] == ["cytoloop.ping"]


def test_an_enqueue_in_a_rolled_back_transaction_is_never_sent(broker):
    with pytest.raises(RuntimeError), transaction.atomic():
        enqueue_on_commit("cytoloop.ping")
        raise RuntimeError("the request failed")
    assert _queued(broker) == []
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

    report = send_pending_enqueues()  # the periodic sweep, with the broker back

    assert report == {"sent": 2, "left": 0}
    assert sorted(h["task"] for h in _queued(broker)) == ["annotation.flush_outbox", "annotation.run_import_job"]
    sent = next(h for h in _queued(broker) if h["task"] == "annotation.run_import_job")
    assert ImportJob.objects.get(pk=job.pk).task_id == sent["id"]
    broker.delete("default")


def test_the_sweep_keeps_what_a_still_dead_broker_refuses():
    PendingEnqueue.objects.create(task_name="cytoloop.ping", args=[], args_key="[]")
    out = _with_dead_broker("from cytoloop.jobs import send_pending_enqueues; print(send_pending_enqueues())")
    assert "'sent': 0" in out and "'left': 1" in out, out
    row = PendingEnqueue.objects.get()
    assert row.attempts == 2 and row.error
