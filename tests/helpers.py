"""Helpers for tests that run the platform as a person would: processes, ports, HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, *, timeout: float, interval: float = 0.2,
               message: str = "condition not met"):
    """Call ``predicate`` until it returns something truthy, and return that value.

    Raises AssertionError with ``message``, the timeout and the last value returned when
    ``timeout`` seconds pass first. ``predicate`` may raise AssertionError itself to stop at once
    (a process that died, say): that error is not swallowed."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message} (within {timeout:g} s; last value: {value!r})")
        time.sleep(interval)


def wait_for_http(url: str, *, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    """Wait until ``url`` answers at all (any HTTP status); fail at once if ``proc`` exits first."""

    def answered() -> bool:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} before {url} answered")
        try:
            urllib.request.urlopen(url, timeout=2)
        except urllib.error.HTTPError:
            return True  # it answered
        except OSError:
            return False
        return True

    wait_until(answered, timeout=timeout, message=f"{url} did not answer")


def choose_label(page, editor, key: str, label: str) -> None:
    """Press a label's key on the annotate page (``page``) and wait until the editor (its frame
    locator ``editor``) has chosen ``label``: the key travels to the iframe by postMessage, so a
    drag made at once may otherwise start before the label is chosen and draw nothing."""
    from playwright.sync_api import expect

    page.keyboard.press(key)
    expect(editor.locator(f"body[data-label='{label}']")).to_have_count(1)


def drag(page, box: dict, start, end, *, steps: int = 5) -> tuple[float, float]:
    """Drag the mouse (Playwright ``page``) from ``start`` to ``end``, (x, y) fractions of ``box``
    (a bounding box in page coordinates), through their midpoint; returns the width and height
    dragged, in page pixels."""
    x0, y0 = box["x"] + start[0] * box["width"], box["y"] + start[1] * box["height"]
    x1, y1 = box["x"] + end[0] * box["width"], box["y"] + end[1] * box["height"]
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=steps)
    page.mouse.move(x1, y1, steps=steps)
    page.mouse.up()
    return abs(x1 - x0), abs(y1 - y0)


def child_env() -> dict:
    """The environment for a child process that must see this test's database (test_* on PostgreSQL)."""
    from django.db import connection

    env = os.environ.copy()
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)  # set for browser tests only; never in the platform
    db = connection.settings_dict
    if db["ENGINE"].endswith("postgresql"):
        env["DATABASE_URL"] = (
            f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
        )
    return env


def manage(*args: str, env: dict | None = None, input: str | None = None, timeout: float = 120):
    """Run manage.py in a fresh process (what a person types), returning CompletedProcess.

    Without ``env`` the child sees this test's database."""
    if env is None:
        env = child_env()
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=env,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def record_enqueues(monkeypatch, task_name: str) -> list:
    """Record the first argument (the row id) of every enqueue of ``task_name`` instead of
    sending it; other tasks go to the broker as usual (cytoloop.jobs.send_now)."""
    from cytoloop import jobs

    calls: list = []
    real = jobs.send_now

    def send(task, *args, job=None):
        if (task if isinstance(task, str) else task.name) == task_name:
            calls.append(args[0])
            return True
        return real(task, *args, job=job)

    monkeypatch.setattr(jobs, "send_now", send)
    return calls
