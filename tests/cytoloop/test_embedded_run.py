"""The embedded-default path as `make run` starts it: SQLite + filesystem broker, web + worker."""

import json
import os
import subprocess
import sys
import urllib.request

import pytest

from tests.helpers import ROOT, free_port, manage, wait_for_http

pytestmark = pytest.mark.embedded


def test_make_run_stack_runs_a_task_and_reports_healthy(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(DJANGO_SETTINGS_MODULE="cytoloop.settings.local", CYTOLOOP_VAR_DIR=str(tmp_path))
    assert manage("migrate", "--noinput", "-v0", env=env).returncode == 0
    seeded = manage("seed_demo", env=env)
    assert seeded.returncode == 0 and "admin@cytoloop.local" in seeded.stdout

    port = free_port()
    log = open(tmp_path / "procs.log", "w")
    worker = subprocess.Popen([sys.executable, "manage.py", "worker"], cwd=ROOT, env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    web = subprocess.Popen([sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}",
                            "--noreload"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/login/", proc=web)
        enqueue = manage(
            "shell", "-c",
            "from cytoloop.tasks import ping, ping_gpu; "
            "print(ping.delay().get(timeout=60), ping_gpu.delay().get(timeout=60))",
            env=env,
        )
        assert enqueue.returncode == 0, enqueue.stderr
        assert enqueue.stdout.split()[-2:] == ["pong", "pong"]
        assert any((tmp_path / "db.sqlite3").parent.iterdir())

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30) as resp:
            body = json.loads(resp.read())
        assert resp.status == 200, body
        assert body["checks"]["database"]["detail"].startswith("sqlite")
        assert body["checks"]["broker"]["detail"].startswith("filesystem")
        assert body["checks"]["worker"]["status"] == "ok"
    finally:
        for proc in (web, worker):
            proc.terminate()
        for proc in (web, worker):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()
