"""Layered settings, production refusals, `check --deploy`, and one-line start-up errors."""

import os

import pytest

from tests.helpers import manage

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
    ("env", "expected"),
    [
        ({"DATABASE_URL": "postgres://nobody@127.0.0.1:1/nowhere"},
         "cannot use the database postgresql://nobody@127.0.0.1:1/nowhere"),
        ({"DATABASE_URL": "nonsense-scheme://x"}, "configuration error"),
        ({"REDIS_URL": "redis://127.0.0.1:1/0"}, "cannot reach the Celery broker redis://127.0.0.1:1/0"),
    ],
)
def test_a_wrong_service_url_gives_one_clear_line_at_start_up(tmp_path, env, expected):
    env = _env(CYTOLOOP_VAR_DIR=str(tmp_path), **env)
    if "DATABASE_URL" not in env:
        env["DATABASE_URL"] = "postgres://postgres@127.0.0.1:5432/test"
    result = manage("runserver", "127.0.0.1:0", "--noreload", env=env, timeout=60)
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
