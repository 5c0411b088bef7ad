"""Start-up preflight: a wrong DATABASE_URL gives one clear line, not a traceback, for every
serving command; an unreachable broker stops only the commands that are useless without one
(a worker). Web servers (runserver, gunicorn through cytoloop.wsgi) start and serve with the
broker down: /healthz/ready reports it, and the outbox and cytoloop.jobs' PendingEnqueue keep what
is submitted until it is back."""

from __future__ import annotations

import sys

#: commands that need the database and the broker to be reachable before they start
SERVING_COMMANDS = {"runserver", "worker", "migrate", "seed_demo", "serve"}
#: the ones of those that also need the broker
BROKER_COMMANDS = {"worker", "seed_demo"}

#: gunicorn's exit status for "worker failed to boot": its arbiter halts instead of respawning
GUNICORN_BOOT_ERROR = 3


class ServiceUnavailable(SystemExit):
    pass


def preflight(*, need_broker: bool = True) -> None:
    """Raise SystemExit with one line naming the service that is wrong."""
    from django.conf import settings

    from cytoloop.health import check_broker, check_database, redact

    db = check_database()
    if db.status != "ok":
        url = _database_url_for_message(settings.DATABASES["default"])
        raise ServiceUnavailable(
            f"cytoloop: cannot use the database {url}: {db.detail} (check DATABASE_URL)"
        )
    if need_broker:
        broker = check_broker(timeout=3.0, retries=1)
        if broker.status != "ok":
            where = redact(settings.CELERY_BROKER_URL)
            hint = "REDIS_URL" if settings.REDIS_URL else "the var/broker folder"
            raise ServiceUnavailable(
                f"cytoloop: cannot reach the Celery broker {where}: {broker.detail} (check {hint})"
            )


def _database_url_for_message(db: dict) -> str:
    engine = db.get("ENGINE", "").rsplit(".", 1)[-1]
    if engine == "sqlite3":
        return f"sqlite:{db.get('NAME')}"
    return f"{engine}://{db.get('USER') or ''}@{db.get('HOST') or 'localhost'}:{db.get('PORT') or ''}/{db.get('NAME')}"


def load_settings_or_exit() -> None:
    """Import settings; a malformed DATABASE_URL and friends become one line."""
    import django
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    try:
        settings.INSTALLED_APPS  # noqa: B018 (forces the import)
        django.setup()  # loads the database backend the URL names
    except ImproperlyConfigured as exc:
        first = str(exc).strip().splitlines()[0]
        raise SystemExit(f"cytoloop: configuration error: {first}") from None
    except Exception as exc:
        raise SystemExit(f"cytoloop: cannot load settings: {type(exc).__name__}: {exc}") from None


def boot_wsgi(*, run_preflight: bool = True) -> None:
    """The web application's settings and preflight (database only). On failure print the one
    line and exit with gunicorn's boot-error status, so that gunicorn stops instead of
    respawning workers that fail the same way."""
    try:
        load_settings_or_exit()
        if run_preflight:
            preflight(need_broker=False)
    except SystemExit as exc:
        print(exc.code, file=sys.stderr, flush=True)
        raise SystemExit(GUNICORN_BOOT_ERROR) from None


def run_management_command(argv: list[str]) -> None:
    load_settings_or_exit()
    from django.core.management import execute_from_command_line

    command = argv[1] if len(argv) > 1 else ""
    if command in SERVING_COMMANDS and "--help" not in argv and "-h" not in argv:
        try:
            preflight(need_broker=command in BROKER_COMMANDS)
        except SystemExit as exc:
            print(exc.code, file=sys.stderr)
            raise SystemExit(1) from None
    execute_from_command_line(argv)
