"""/healthz and the Celery app on the real PostgreSQL and Redis."""

import pytest

from cytoloop.queues import Queue, route_task

pytestmark = pytest.mark.django_db


def test_tasks_are_routed_by_name():
    assert route_task("training.run", (), {}, {}) == {"queue": Queue.GPU.value}
    assert route_task("inference.predict", (), {}, {}) == {"queue": Queue.GPU.value}
    assert route_task("annotation.consensus", (), {}, {}) == {"queue": Queue.DEFAULT.value}


def test_healthz_reports_each_service_and_a_missing_worker(client, settings):
    settings.LABEL_STUDIO_URL = ""
    from cytoloop.celery import app

    app.control.purge()
    response = client.get("/healthz")
    body = response.json()
    assert set(body["checks"]) == {"database", "broker", "label_studio", "worker"}
    assert body["checks"]["database"]["status"] == "ok"
    assert "postgresql" in body["checks"]["database"]["detail"]
    assert body["checks"]["broker"]["status"] == "ok"
    assert body["checks"]["broker"]["detail"].startswith("redis://")
    assert body["checks"]["label_studio"]["status"] == "not_configured"
    assert body["checks"]["worker"]["status"] == "error"
    assert response.status_code == 503 and body["status"] == "error"


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
