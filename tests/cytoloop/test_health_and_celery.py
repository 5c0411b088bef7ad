"""/healthz (live, ready) and the Celery app on the real PostgreSQL and Redis."""

import threading

import pytest

from cytoloop.celery import app
from cytoloop.queues import Queue, route_task

pytestmark = pytest.mark.django_db

STARTED, RELEASE = threading.Event(), threading.Event()


@app.task(name="tests.cytoloop.wait_for_release")
def wait_for_release():
    """A long task: it holds the (solo) worker until the test releases it."""
    STARTED.set()
    return RELEASE.wait(timeout=60)


def test_tasks_are_routed_by_name():
    assert route_task("training.run", (), {}, {}) == {"queue": Queue.GPU.value}
    assert route_task("inference.predict", (), {}, {}) == {"queue": Queue.GPU.value}
    assert route_task("annotation.consensus", (), {}, {}) == {"queue": Queue.DEFAULT.value}


@pytest.mark.parametrize("url", ["/healthz", "/healthz/ready"])
def test_readiness_reports_each_service_and_a_missing_worker_without_failing(client, settings, url):
    settings.LABEL_STUDIO_URL = ""
    app.control.purge()
    response = client.get(url)
    body = response.json()
    assert set(body["checks"]) == {"database", "broker", "label_studio", "worker"}
    assert body["checks"]["database"]["status"] == "ok"
    assert "postgresql" in body["checks"]["database"]["detail"]
    assert body["checks"]["broker"]["status"] == "ok"
    assert body["checks"]["broker"]["detail"].startswith("redis://")
    assert body["checks"]["label_studio"]["status"] == "not_configured"
    assert body["checks"]["worker"]["status"] == "unknown"
    assert "busy or absent" in body["checks"]["worker"]["detail"]
    # no worker is not a down web instance
    assert response.status_code == 200 and body["status"] == "degraded"


def test_liveness_asks_no_service(client, monkeypatch):
    from cytoloop import health

    def fail(*args, **kwargs):
        raise AssertionError("liveness must not check a service")

    for name in ("check_database", "check_broker", "check_worker", "check_label_studio"):
        monkeypatch.setattr(health, name, fail)
    response = client.get("/healthz/live")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readiness_fails_only_when_the_database_does(client, monkeypatch):
    from cytoloop import health

    monkeypatch.setattr(health, "check_database", lambda: health.Check("error", "OperationalError: x"))
    response = client.get("/healthz/ready")
    assert response.status_code == 503 and response.json()["status"] == "error"


def test_readiness_stays_200_while_the_solo_worker_is_busy(celery_worker, client, settings):
    settings.LABEL_STUDIO_URL = ""
    STARTED.clear()
    RELEASE.clear()
    result = wait_for_release.delay()
    try:
        assert STARTED.wait(timeout=30), "the worker never started the task"
        response = client.get("/healthz/ready")
        body = response.json()
        assert response.status_code == 200, body
        assert body["checks"]["worker"]["status"] == "unknown"
        assert body["checks"]["database"]["status"] == "ok"
    finally:
        RELEASE.set()
    assert result.get(timeout=30) is True


def test_healthz_reports_an_unreachable_label_studio(client, settings):
    settings.LABEL_STUDIO_URL = "http://127.0.0.1:9"  # discard port: nothing listens
    check = client.get("/healthz").json()["checks"]["label_studio"]
    assert check["status"] == "error"
    assert "refused" in check["detail"].lower() or "error" in check["detail"].lower()


def test_worker_runs_tasks_from_both_queues_and_answers_healthz(celery_worker, client):
    from django_celery_results.models import TaskResult

    from cytoloop.tasks import ping, ping_gpu

    default = ping.delay()
    gpu = ping_gpu.delay()
    assert default.get(timeout=30) == "pong"
    assert gpu.get(timeout=30) == "pong"
    assert TaskResult.objects.get(task_id=gpu.id).status == "SUCCESS"  # result state in the DB
    gpu_queue = TaskResult.objects.get(task_id=gpu.id).task_name
    assert gpu_queue == "cytoloop.ping_gpu"
    body = client.get("/healthz").json()
    assert body["checks"]["worker"]["status"] == "ok", body
    assert body["status"] == "ok"
