"""One periodic scheduler per deployment (cytoloop.beat_lock), with real `manage.py worker --beat`
processes: a second scheduler waits, a SIGKILLed worker's scheduler exits and the waiting one
takes over."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from django.conf import settings

from cytoloop.beat_lock import BEAT_LOCK_KEY, FileLock, RedisLock
from tests.helpers import ROOT, child_env, wait_until


@pytest.fixture
def client():
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.delete(BEAT_LOCK_KEY)
    yield client
    client.delete(BEAT_LOCK_KEY)


def _parent_of(pid: int) -> int | None:
    """The parent pid of a live process; None when it is gone (or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    state, ppid = stat.rsplit(")", 1)[1].split()[:2]
    return None if state in ("Z", "X") else int(ppid)


def _children(pid: int) -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and _parent_of(int(p)) == pid]


def _holder(client) -> int | None:
    """The pid of the scheduler holding the lock (its token is host:pid:nonce)."""
    token = client.get(BEAT_LOCK_KEY)
    return int(token.decode().split(":")[1]) if token else None


def _start_worker(env: dict, log: Path, name: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "worker", "--beat", f"--hostname={name}@%h"],
        cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )


def _alive(proc: subprocess.Popen):
    if proc.poll() is not None:
        raise AssertionError(f"worker exited with {proc.returncode}")
    return True


def test_a_second_lock_waits_and_a_held_one_renews(client, tmp_path):
    first, second = RedisLock(settings.REDIS_URL, ttl_s=5), RedisLock(settings.REDIS_URL, ttl_s=5)
    assert first.acquire() and not second.acquire()
    assert first.acquire()  # renewal
    first.release()
    assert second.acquire() and not first.acquire()
    second.release()

    one, two = FileLock(str(tmp_path / "s.lock")), FileLock(str(tmp_path / "s.lock"))
    assert one.acquire() and not two.acquire()
    one.release()
    assert two.acquire()
    two.release()


@pytest.mark.django_db
def test_a_sigkilled_worker_leaves_one_scheduler(client, tmp_path):
    env = {**child_env(), "CYTOLOOP_VAR_DIR": str(tmp_path), "LABEL_STUDIO_URL": ""}
    first = _start_worker(env, tmp_path / "first.log", "first")
    second = None
    beats: list[int] = []
    try:
        # the first worker's beat child holds the lock
        beat1 = wait_until(lambda: _alive(first) and (pid := _holder(client))
                           and _parent_of(pid) == first.pid and pid,
                           timeout=90, message="the first worker's scheduler took no lock")
        beats.append(beat1)
        second = _start_worker(env, tmp_path / "second.log", "second")
        wait_until(lambda: _alive(second) and "another scheduler holds the lock"
                   in (tmp_path / "second.log").read_text(),
                   timeout=90, message="the second scheduler did not wait")
        [beat2] = _children(second.pid)
        beats.append(beat2)
        assert _holder(client) == beat1  # still the first's: the second sends nothing

        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        # the orphaned scheduler exits with its worker (it does not stay on as a second one)...
        wait_until(lambda: _parent_of(beat1) is None, timeout=10,
                   message="the killed worker's scheduler is still running")
        # ...and the waiting one takes over: one scheduler, the second worker's
        wait_until(lambda: _holder(client) == beat2, timeout=30,
                   message="the waiting scheduler did not take the lock")
        assert _children(second.pid) == [beat2]
        assert "holding the scheduler lock" in (tmp_path / "second.log").read_text()

        second.terminate()  # a clean stop releases the lock at once
        second.wait(timeout=30)
        wait_until(lambda: client.get(BEAT_LOCK_KEY) is None, timeout=10,
                   message="the stopped scheduler kept its lock")
        wait_until(lambda: _parent_of(beat2) is None, timeout=10,
                   message="the stopped worker's scheduler is still running")
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        for pid in beats:  # a scheduler that failed to exit must not outlive the test
            if _parent_of(pid) is not None:
                os.kill(pid, signal.SIGKILL)
