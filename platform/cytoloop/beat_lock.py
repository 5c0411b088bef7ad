"""One periodic scheduler per deployment, whatever gets killed.

Celery's embedded beat (`manage.py worker --beat`, i.e. `celery worker -B`) runs in a forked child
process (celery.beat.EmbeddedService). A SIGKILLed worker cannot stop that child: it keeps running,
and the restarted worker forks a second one, so every periodic task would go out twice.
LockedScheduler (the app's beat_scheduler, cytoloop.celery) makes that impossible:

- it sends only while it holds a lock: on Redis the key BEAT_LOCK_KEY, set with SET NX PX and
  renewed on every tick (expires BEAT_LOCK_TTL_S after its holder stops renewing); on the
  filesystem broker an flock on "<schedule file>.lock", which the kernel releases when its holder
  dies. A second scheduler waits for the lock before it opens the schedule file, sending nothing.
- an embedded one exits when its parent worker dies: PR_SET_PDEATHSIG (Linux) sends it SIGTERM,
  and every tick checks the parent pid as well (other systems, or a parent dead before the prctl).
  It exits through SystemExit, so it saves the schedule and releases the lock on its way out.
"""

import ctypes
import fcntl
import logging
import os
import signal
import socket
import sys
import time
import uuid

import redis
from billiard.process import current_process
from celery.beat import PersistentScheduler
from django.conf import settings

logger = logging.getLogger(__name__)

BEAT_LOCK_KEY = "cytoloop:beat-lock"
DEFAULT_TTL_S = 15.0
PR_SET_PDEATHSIG = 1

# renew our own lock only: a lock that expired and was taken by another scheduler is theirs
_RENEW = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
          "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end")
_RELEASE = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
            "return redis.call('del', KEYS[1]) else return 0 end")


class RedisLock:
    """A lock held as long as its holder renews it (at least every ttl_s)."""

    def __init__(self, url: str, *, ttl_s: float, key: str = BEAT_LOCK_KEY):
        self.client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        self.key = key
        self.ttl_ms = int(ttl_s * 1000)
        #: names its holder (host:pid) for people and tests reading the key
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"

    def acquire(self) -> bool:
        """Take or renew the lock; False when another scheduler holds it or Redis is down."""
        try:
            if self.client.eval(_RENEW, 1, self.key, self.token, self.ttl_ms):
                return True
            return bool(self.client.set(self.key, self.token, nx=True, px=self.ttl_ms))
        except redis.RedisError:
            return False

    def release(self) -> None:
        try:
            self.client.eval(_RELEASE, 1, self.key, self.token)
        except redis.RedisError:
            pass  # it expires by itself


class FileLock:
    """An flock held for the process's life (the kernel drops it when the process dies)."""

    def __init__(self, path: str):
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> bool:
        if self.fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{socket.gethostname()}:{os.getpid()}\n".encode())
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None


def make_lock(schedule_filename: str, *, ttl_s: float):
    if settings.REDIS_URL:
        return RedisLock(settings.REDIS_URL, ttl_s=ttl_s)
    return FileLock(f"{schedule_filename}.lock")


def _exit_on_sigterm(signum, frame):
    raise SystemExit(0)  # celery.beat.Service.start saves the schedule on SystemExit


def die_with_parent() -> int | None:
    """In a forked (embedded) scheduler, arrange to exit when the parent dies; return its pid.

    None for a standalone `celery beat`, which has no parent to follow."""
    # celery forks its beat child with billiard, whose process object names the parent (None in
    # a main process); the stdlib's multiprocessing.parent_process() does not know it
    parent = getattr(current_process(), "_parent_pid", None)
    if parent is None:
        return None
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    return parent


class LockedScheduler(PersistentScheduler):
    """PersistentScheduler that sends only while it holds the deployment's beat lock."""

    def __init__(self, *args, **kwargs):
        self.lock_ttl_s = float(getattr(settings, "BEAT_LOCK_TTL_S", DEFAULT_TTL_S))
        #: renew well inside the TTL: a tick never sleeps longer than this
        self.lock_interval = self.lock_ttl_s / 3
        self.parent_pid = die_with_parent()
        self.lock = make_lock(kwargs["schedule_filename"], ttl_s=self.lock_ttl_s)
        self._wait_for_lock()
        super().__init__(*args, **kwargs)
        self.max_interval = min(self.max_interval, self.lock_interval)

    def _exit_if_orphaned(self) -> None:
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            logger.warning("beat: the worker that started this scheduler is gone; exiting")
            raise SystemExit(0)

    def _wait_for_lock(self) -> None:
        if self.lock.acquire():
            logger.info("beat: holding the scheduler lock")
            return
        logger.warning("beat: another scheduler holds the lock; waiting (sending nothing)")
        while not self.lock.acquire():
            self._exit_if_orphaned()
            time.sleep(self.lock_interval)
        logger.info("beat: holding the scheduler lock")

    def tick(self, *args, **kwargs):
        self._exit_if_orphaned()
        if not self.lock.acquire():
            logger.warning("beat: lost the scheduler lock; sending nothing until it is back")
            return self.lock_interval
        return min(super().tick(*args, **kwargs), self.lock_interval)

    def close(self):
        try:
            super().close()
        finally:
            self.lock.release()
