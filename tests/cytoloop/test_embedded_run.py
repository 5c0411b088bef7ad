"""The embedded-default path as `make run` starts it: SQLite + filesystem broker, web + worker."""

import json
import os
import subprocess
import sys
import urllib.request

import pytest

from tests.helpers import ROOT, free_port, manage, wait_for_http, wait_until

pytestmark = pytest.mark.embedded


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """A migrated, seeded embedded-default var/ folder (SQLite + filesystem broker), made once."""
    tmp_path = tmp_path_factory.mktemp("embedded")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(DJANGO_SETTINGS_MODULE="cytoloop.settings.local", CYTOLOOP_VAR_DIR=str(tmp_path))
    assert manage("migrate", "--noinput", "-v0", env=env).returncode == 0
    seeded = manage("seed_demo", env=env)
    assert seeded.returncode == 0 and "admin@cytoloop.local" in seeded.stdout
    return env, tmp_path


def test_make_run_stack_runs_a_task_and_reports_healthy(embedded):
    env, tmp_path = embedded
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


def test_simulated_experts_beside_the_worker_and_a_consensus_recompute_never_lock_the_database(embedded):
    """Three writers on the embedded SQLite at once: simulate_experts (a command), the worker
    computing consensus for each image it completes, and a recompute looping in a third process."""
    env, var = embedded
    stop = var / "stop-recompute"
    log = open(var / "worker-sim.log", "w")
    worker = subprocess.Popen([sys.executable, "manage.py", "worker"], cwd=ROOT, env=env,
                              stdout=log, stderr=subprocess.STDOUT)

    def consuming():  # before we start
        if " ready." in (var / "worker-sim.log").read_text():
            return True
        assert worker.poll() is None, "the worker exited before it was ready"
        return False

    wait_until(consuming, timeout=120, message="the worker did not start")
    loop = (
        "import pathlib\n"
        "from annotation.models import Dataset\n"
        "from annotation.services import recompute_dataset\n"
        "ds = Dataset.objects.get(name='demo-synthetic')\n"
        f"stop, n = pathlib.Path({str(stop)!r}), 0\n"
        "while not stop.exists() or n == 0:\n"
        "    recompute_dataset(dataset=ds, force=True)\n"
        "    n += 1\n"
        "print('recomputed', n)\n"
    )
    recompute = subprocess.Popen([sys.executable, "manage.py", "shell", "-c", loop], cwd=ROOT, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        simulated = manage("simulate_experts", "demo-synthetic", "--experts", "3", env=env, timeout=300)
    finally:
        stop.touch()
        recompute_out, _ = recompute.communicate(timeout=120)
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
        log.close()
    assert simulated.returncode == 0, simulated.stderr
    assert "expert1: 24 annotations" in simulated.stdout
    assert recompute.returncode == 0 and "recomputed" in recompute_out, recompute_out[-2000:]
    worker_log = (var / "worker-sim.log").read_text()
    for output in (simulated.stderr, recompute_out, worker_log):
        assert "database is locked" not in output
