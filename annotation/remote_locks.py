"""Serialise the creation of one remote thing (a Label Studio project, task set, user, annotation).

Creating something in Label Studio is an HTTP call, so it must never run inside a transaction
that holds row locks. Two workers that both see "no project yet" must still not create two.
``remote_lock(kind, object_id)`` makes them take turns, holding no row lock and no transaction:

- PostgreSQL: a session-level advisory lock (``pg_advisory_lock(namespace, object_id)``) on the
  connection, released in ``finally`` (and by PostgreSQL if the process dies);
- anything else (the embedded SQLite): an exclusive ``flock`` on a file under ``VAR_DIR/locks``,
  which serialises threads and processes of one machine alike.

Callers re-read the database inside the lock (another holder may have just finished the job)."""

from __future__ import annotations

import contextlib
import fcntl
import zlib
from pathlib import Path

from django.conf import settings
from django.db import connection

#: advisory-lock namespaces (the first key of pg_advisory_lock's two-int form)
KINDS = ("ls-project", "ls-tasks", "ls-user", "ls-annotation", "ls-ground-truth", "ls-predictions")


def _namespace(kind: str) -> int:
    if kind not in KINDS:
        raise ValueError(f"unknown lock kind {kind!r}")
    return zlib.crc32(f"cytoloop:{kind}".encode()) & 0x7FFFFFFF


@contextlib.contextmanager
def remote_lock(kind: str, object_id: int):
    """Hold the lock for (kind, object_id) for the duration of the block."""
    namespace = _namespace(kind)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s, %s)", [namespace, int(object_id)])
        try:
            yield
        finally:
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [namespace, int(object_id)])
            except Exception:  # an aborted outer transaction: closing the session releases it
                connection.close()
        return
    folder = Path(settings.VAR_DIR) / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{kind}-{int(object_id)}.lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
