"""Layered settings, production refusals, `check --deploy`, and one-line start-up errors."""

import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import ROOT, child_env, manage

DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1
GUNICORN = Path(sys.executable).with_name("gunicorn")

LONG_SECRET = "x7#Kp2!vQz9@Lm4$Rt8^Wn3&Yb6*Hc1(Jd5)Fg0-Se+Ua=Ix~Oe"


def _env(**overrides):
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_ALLOW_ASYNC_UNSAFE")}
    env.update(overrides)
    return env


def test_production_refuses_to_start_without_secret_key():
    result = manage("check", env=_env(DJANGO_SETTINGS_MODULE="cytoloop.settings.production",
                                      ALLOWED_HOSTS="cyto.example.org"))
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_production_refuses_to_start_without_allowed_hosts():
    result = manage("check", env=_env(DJANGO_SETTINGS_MODULE="cytoloop.settings.production",
                                      SECRET_KEY=LONG_SECRET))
    assert result.returncode != 0
    assert "ALLOWED_HOSTS is not set" in result.stderr


def test_production_passes_check_deploy(tmp_path):
    result = manage(
        "check", "--deploy", "--fail-level", "WARNING",
        env=_env(DJANGO_SETTINGS_MODULE="cytoloop.settings.production", SECRET_KEY=LONG_SECRET,
                 ALLOWED_HOSTS="cyto.example.org", CYTOLOOP_VAR_DIR=str(tmp_path)),
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "no issues" in result.stdout


@pytest.mark.parametrize(
    ("command", "env", "expected"),
    [
        (("runserver", "127.0.0.1:0", "--noreload"),
         {"DATABASE_URL": "postgres://nobody@127.0.0.1:1/nowhere"},
         "cannot use the database postgresql://nobody@127.0.0.1:1/nowhere"),
        (("runserver", "127.0.0.1:0", "--noreload"), {"DATABASE_URL": "nonsense-scheme://x"},
         "configuration error"),
        # a worker without a broker is useless; a web server starts without one (below)
        (("worker",), {"REDIS_URL": DEAD_REDIS}, f"cannot reach the Celery broker {DEAD_REDIS}"),
    ],
)
def test_a_wrong_service_url_gives_one_clear_line_at_start_up(tmp_path, command, env, expected):
    env = _env(CYTOLOOP_VAR_DIR=str(tmp_path), **env)
    if "DATABASE_URL" not in env:
        env["DATABASE_URL"] = "postgres://postgres@127.0.0.1:5432/test"
    result = manage(*command, env=env, timeout=60)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


def test_embedded_defaults_use_sqlite_and_the_filesystem_broker(tmp_path):
    result = manage(
        "shell", "-c",
        "from django.conf import settings as s; print(s.DATABASES['default']['ENGINE'], "
        "s.CELERY_BROKER_URL, s.MEDIA_ROOT)",
        env=_env(DJANGO_SETTINGS_MODULE="cytoloop.settings.local", CYTOLOOP_VAR_DIR=str(tmp_path)),
    )
    assert result.returncode == 0, result.stderr
    engine, broker, media = result.stdout.split()[-3:]
    assert engine == "django.db.backends.sqlite3"
    assert broker == "filesystem://"
    assert media == str(tmp_path / "media")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _gunicorn(env: dict, port: int) -> subprocess.Popen:
    env = {**env, "PYTHONPATH": "platform:.", "DJANGO_SETTINGS_MODULE": "cytoloop.settings.test"}
    return subprocess.Popen(
        [str(GUNICORN), "cytoloop.wsgi", "-b", f"127.0.0.1:{port}", "-w", "1",
         "--control-socket", str(Path(env["CYTOLOOP_VAR_DIR"]) / "gunicorn.ctl")],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _await_listening(server: subprocess.Popen) -> str:
    """gunicorn's log up to its "Listening at" line (or its end, if it exits first)."""
    seen = []
    for line in server.stderr:
        seen.append(line)
        if "Listening at:" in line:
            break
    return "".join(seen)


def _get(port: int, path: str) -> tuple[int, bytes]:
    # the arbiter listens before its worker has booted: the request waits in the backlog
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as resp:
        return resp.status, resp.read()


@pytest.mark.django_db
def test_gunicorn_starts_and_serves_with_the_broker_down(tmp_path):
    port = _free_port()
    env = {**child_env(), "REDIS_URL": DEAD_REDIS, "CYTOLOOP_VAR_DIR": str(tmp_path),
           "LABEL_STUDIO_URL": ""}
    server = _gunicorn(env, port)
    try:
        head = _await_listening(server)
        assert "Listening at:" in head, head
        assert _get(port, "/healthz/live") == (200, b'{"status": "ok"}')
        status, body = _get(port, "/healthz/ready")
        ready = json.loads(body)
        assert status == 200, ready
        assert ready["status"] == "degraded" and ready["checks"]["database"]["status"] == "ok"
        assert ready["checks"]["broker"]["status"] == "error"
        assert ready["checks"]["broker"]["latency_ms"] < 2000  # one attempt, no retry interval
        assert ready["checks"]["worker"]["status"] == "unknown"
        status, page = _get(port, "/login/")
        assert status == 200 and b"password" in page.lower()
        assert server.poll() is None
    finally:
        server.terminate()
        _, rest = server.communicate(timeout=30)
    stderr = head + rest
    assert stderr.count("Booting worker") == 1, stderr  # no crash loop
    assert "Traceback" not in stderr


def test_gunicorn_stops_with_one_line_on_a_wrong_database_url(tmp_path):
    env = _env(CYTOLOOP_VAR_DIR=str(tmp_path), REDIS_URL=DEAD_REDIS,
               DATABASE_URL="postgres://nobody@127.0.0.1:1/nowhere")
    server = _gunicorn(env, _free_port())
    try:
        _, stderr = server.communicate(timeout=60)
    finally:
        server.kill()
    assert server.returncode == 3, stderr  # gunicorn's "worker failed to boot": it halts
    ours = [line for line in stderr.splitlines() if line.startswith("cytoloop:")]
    assert len(ours) == 1, stderr
    assert ours[0].startswith("cytoloop: cannot use the database postgresql://nobody@127.0.0.1:1/nowhere")
    assert ours[0].endswith("(check DATABASE_URL)")
    assert "Traceback" not in stderr
