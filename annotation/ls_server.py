"""Label Studio as a managed process: its own virtualenv, loopback, SQLite data dir.

Label Studio pins its own Django REST framework, drf-spectacular and redis versions, so it
lives in its own virtualenv (.venv-ls, made by `make labelstudio`). This module starts and stops
it; `make run` and the test fixture use it. No Django import.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VENV = ROOT / ".venv-ls"
PINNED_VERSION = "1.23.2"


class LabelStudioError(RuntimeError):
    pass


@dataclass
class Credentials:
    """The admin account and preset API token, generated once per data dir."""

    username: str = "admin@cytoloop.local"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    token: str = field(default_factory=lambda: secrets.token_hex(20))  # legacy token: 40 chars
    webhook_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    @classmethod
    def load_or_create(cls, path: Path) -> Credentials:
        if path.exists():
            return cls(**json.loads(path.read_text()))
        creds = cls()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(creds), indent=2) + "\n")
        path.chmod(0o600)
        return creds


@dataclass
class LabelStudioServer:
    data_dir: Path
    port: int = 8080
    host: str = "127.0.0.1"
    document_root: Path | None = None  # local-files serving root (the platform's MEDIA_ROOT)
    venv: Path = DEFAULT_VENV
    credentials: Credentials | None = None
    log_path: Path | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        if self.credentials is None:
            self.credentials = Credentials.load_or_create(self.data_dir / "cytoloop-credentials.json")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def executable(self) -> Path:
        return Path(self.venv) / "bin" / "label-studio"

    def env(self) -> dict[str, str]:
        creds = self.credentials
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL"))}
        env.update(
            LABEL_STUDIO_USERNAME=creds.username,
            LABEL_STUDIO_PASSWORD=creds.password,
            LABEL_STUDIO_USER_TOKEN=creds.token,
            LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
            LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="true",
            COLLECT_ANALYTICS="false",
            LATEST_VERSION_CHECK="false",
            SENTRY_DSN="",
            FRONTEND_SENTRY_DSN="",
            DJANGO_DB="sqlite",
            # webhooks go to the platform on loopback; production keeps protection on instead
            SSRF_PROTECTION_ENABLED="false",
            LABEL_STUDIO_HOST=self.url,
        )
        if self.document_root is not None:
            env.update(
                LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true",
                LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(self.document_root),
            )
        return env

    def healthy(self, timeout: float = 2.0) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=timeout) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def start(self, *, timeout: float = 180.0) -> None:
        """Start the server and wait until /health answers (first start migrates: ~30 s)."""
        if not self.executable.exists():
            raise LabelStudioError(
                f"Label Studio is not installed at {self.venv}: run `make labelstudio`"
            )
        if self.process is not None and self.process.poll() is None:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log_path = Path(self.log_path or self.data_dir / "label-studio.log")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab")
        self.process = subprocess.Popen(
            [str(self.executable), "start", "--no-browser", "--internal-host", self.host,
             "--port", str(self.port), "--data-dir", str(self.data_dir)],
            env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LabelStudioError(
                    f"Label Studio exited with {self.process.returncode}; see {self.data_dir}/label-studio.log"
                )
            if self.healthy():
                return
            time.sleep(0.5)
        self.stop()
        raise LabelStudioError(f"Label Studio did not answer on {self.url}/health within {timeout:.0f} s")

    def stop(self, *, timeout: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            self.process = None
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None
        # wait for the port to close so a restart can bind it
        deadline = time.monotonic() + timeout
        while self.healthy(timeout=0.5) and time.monotonic() < deadline:
            time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    """`python -m annotation.ls_server serve ...`: run Label Studio in the foreground for `make run`,
    writing the connection file the platform's local settings read (URL, token, webhook secret)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m annotation.ls_server", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start Label Studio and keep it running until stopped")
    serve.add_argument("--data-dir", required=True, type=Path, help="Label Studio's SQLite data folder")
    serve.add_argument("--port", type=int, default=8080, help="loopback port (default 8080)")
    serve.add_argument("--document-root", required=True, type=Path,
                       help="folder Label Studio may serve image files from (the platform's MEDIA_ROOT)")
    serve.add_argument("--connection-file", required=True, type=Path,
                       help="where to write {url, token, webhook_secret} for the platform")
    serve.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="Label Studio's virtualenv")
    args = parser.parse_args(argv)

    args.document_root.mkdir(parents=True, exist_ok=True)
    server = LabelStudioServer(data_dir=args.data_dir, port=args.port, document_root=args.document_root,
                               venv=args.venv)
    stopping = False

    def stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    started = time.monotonic()
    try:
        server.start()
    except LabelStudioError as exc:
        print(f"label-studio: {exc}", flush=True)
        return 1
    creds = server.credentials
    args.connection_file.parent.mkdir(parents=True, exist_ok=True)
    args.connection_file.write_text(json.dumps(
        {"url": server.url, "token": creds.token, "webhook_secret": creds.webhook_secret,
         "admin": creds.username, "password": creds.password}, indent=2) + "\n")
    args.connection_file.chmod(0o600)
    print(f"label-studio: up at {server.url} in {time.monotonic() - started:.0f} s", flush=True)
    try:
        while not stopping and server.process is not None and server.process.poll() is None:
            time.sleep(0.5)
    finally:
        server.stop()
        args.connection_file.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
