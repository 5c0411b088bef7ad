"""Shared fixtures. Integration tests use the real PostgreSQL and Redis (settings/test.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "var" / "test-artifacts"


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def make_user(db):
    """make_user("a@b.org", roles=["reviewer"], password="pw") -> User (roles via the one role API)."""
    from django.contrib.auth import get_user_model

    from cytoloop.roles import parse_role, set_roles

    def factory(email: str, *, roles=(), password: str = "correct-horse-42"):
        user = get_user_model().objects.create_user(username=email, email=email, password=password)
        set_roles(user, [parse_role(r) for r in roles])
        return user

    return factory


@pytest.fixture
def client_as(client, make_user):
    """client_as("reviewer") -> a test client logged in as a fresh user holding that role."""

    def factory(*roles: str):
        user = make_user(f"{'-'.join(roles) or 'norole'}@example.org", roles=roles)
        client.force_login(user)
        return client

    return factory


@pytest.fixture
def admin(client_as):
    """A test client logged in as a fresh admin."""
    return client_as("admin")


@pytest.fixture
def synthetic_dataset(db, tmp_path):
    """synthetic_dataset("name", 14, seed=4, size=256) -> a Dataset of that many synthetic smears
    imported with their cluster boxes (COCO) as ground truth."""
    from annotation.formats import write_coco
    from annotation.services import ensure_dataset, import_images
    from annotation.synthetic import SyntheticConfig, generate_dataset

    def factory(name: str, n: int, *, seed: int = 4, size: int = 256):
        out = tmp_path / f"synthetic-{name}"
        write_coco(generate_dataset(out, n, seed=seed, config=SyntheticConfig.small(size=size)),
                   out / "annotations.json")
        dataset, _ = ensure_dataset(name=name)
        import_images(dataset=dataset, path=out / "images", annotations=out / "annotations.json")
        return dataset

    return factory


@pytest.fixture
def celery_worker(transactional_db):
    """A real Celery worker (thread) consuming both queues over the real Redis broker."""
    from celery.contrib.testing.worker import start_worker

    from cytoloop.celery import app

    app.control.purge()
    with start_worker(
        app,
        queues=["default", "gpu"],
        pool="solo",
        perform_ping_check=False,
        loglevel="WARNING",
        shutdown_timeout=30,
    ) as worker:
        yield worker


# --- Label Studio: one real server per test session -----------------------------------------------


@pytest.fixture(scope="session")
def label_studio_server(tmp_path_factory):
    """A real Label Studio (its own virtualenv, .venv-ls) on a free loopback port, started once.

    Its local-files document root is a session media folder; tests that use it point
    MEDIA_ROOT there (fixture ``label_studio``). Tests may stop() and start() it."""
    from annotation.ls_server import LabelStudioServer
    from tests.helpers import free_port

    base = tmp_path_factory.mktemp("label-studio")
    server = LabelStudioServer(
        data_dir=base / "data", port=free_port(), document_root=base / "media",
        log_path=ARTIFACTS / f"label-studio{os.environ.get('PYTEST_XDIST_WORKER', '')}.log",
    )
    (base / "media").mkdir()
    server.start(timeout=240)
    yield server
    server.stop()


@pytest.fixture
def label_studio(label_studio_server, settings):
    """Settings pointing at the session's Label Studio (webhook URL left empty: tests that want
    webhooks set LABEL_STUDIO_WEBHOOK_URL to their live server)."""
    from annotation import labelstudio

    if label_studio_server.process is None or label_studio_server.process.poll() is not None:
        label_studio_server.start()
    settings.LABEL_STUDIO_URL = label_studio_server.url
    settings.LABEL_STUDIO_TOKEN = label_studio_server.credentials.token
    settings.LABEL_STUDIO_WEBHOOK_SECRET = "test-webhook-secret"
    settings.LABEL_STUDIO_WEBHOOK_URL = ""
    settings.MEDIA_ROOT = str(label_studio_server.document_root)
    labelstudio._client.cache_clear()
    return label_studio_server
