"""Service checks shared by /healthz/ready, the System page and start-up preflight.

Readiness needs the database only: a web instance serves pages with the broker down (the outbox
and cytoloop.jobs' PendingEnqueue keep what is submitted) and whatever the worker is doing. A
worker that does not answer a ping is "unknown" (a solo worker in a long task cannot answer),
never a reason to take a web instance out of a load balancer."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.db import connections


@dataclass
class Check:
    status: str  # "ok" | "error" | "unknown" | "not_configured"
    detail: str
    latency_ms: float | None = None


def redact(url: str) -> str:
    """A URL without its password, for messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password:
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def _timed(fn) -> Check:
    start = time.perf_counter()
    try:
        detail = fn()
        status = "ok"
    except Exception as exc:  # every failure becomes a readable status, never a 500
        detail, status = f"{type(exc).__name__}: {exc}".strip().splitlines()[0], "error"
    return Check(status, detail, round((time.perf_counter() - start) * 1000, 1))


def check_database() -> Check:
    def probe():
        conn = connections["default"]
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return f"{conn.vendor} {conn.settings_dict.get('NAME')}"

    return _timed(probe)


def check_broker(timeout: float = 2.0, *, retries: int = 0) -> Check:
    """One connection attempt by default (a readiness probe answers in ``timeout``, not after
    kombu's retry interval); start-up preflight allows a retry."""
    from cytoloop.celery import app

    def probe():
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=retries, timeout=timeout)
            if conn.transport_cls == "filesystem":
                return f"filesystem {settings.BROKER_DIR}"
            return redact(conn.as_uri())

    return _timed(probe)


def check_worker(timeout: float = 1.0) -> Check:
    from cytoloop.celery import app

    def probe():
        replies = app.control.ping(timeout=timeout, limit=1) or []
        return ", ".join(sorted(name for reply in replies for name in reply))

    check = _timed(probe)
    if check.status == "ok" and not check.detail:
        return Check("unknown", f"busy or absent: no worker answered a ping within {timeout:g} s",
                     check.latency_ms)
    return check


def check_label_studio(timeout: float = 2.0) -> Check:
    url = settings.LABEL_STUDIO_URL
    if not url:
        return Check("not_configured", "LABEL_STUDIO_URL is not set")

    def probe():
        import urllib.request

        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout) as resp:
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}")
        return url

    return _timed(probe)


def all_checks(*, worker_timeout: float = 1.0) -> dict[str, dict]:
    checks = {
        "database": check_database(),
        "broker": check_broker(),
        "label_studio": check_label_studio(),
    }
    # a worker can only answer through a broker that works
    checks["worker"] = (
        check_worker(worker_timeout)
        if checks["broker"].status == "ok"
        else Check("unknown", "broker unreachable")
    )
    return {name: asdict(check) for name, check in checks.items()}


#: the services a web instance cannot serve without (readiness fails only on these)
REQUIRED = ("database",)


def overall(checks: dict[str, dict]) -> str:
    """"error" when a required service fails (not ready), "degraded" when another one is not ok,
    else "ok"."""
    if any(checks[name]["status"] != "ok" for name in REQUIRED if name in checks):
        return "error"
    if all(c["status"] in ("ok", "not_configured") for c in checks.values()):
        return "ok"
    return "degraded"
