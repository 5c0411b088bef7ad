"""Test settings: the real PostgreSQL and Redis on this machine unless the environment says otherwise."""

import os

# pytest-xdist runs the suite in several processes (gw0, gw1, ...): each gets its own Redis
# database (the Celery worker fixtures purge their broker) and its own media folder
_XDIST = os.environ.get("PYTEST_XDIST_WORKER", "")
_N = int(_XDIST[2:]) if _XDIST.startswith("gw") and _XDIST[2:].isdigit() else 0

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
os.environ.setdefault("REDIS_URL", f"redis://127.0.0.1:6379/{15 - _N}")

from .base import *  # noqa: E402,F401,F403
from .base import BASE_DIR, env  # noqa: E402

DEBUG = False
SECRET_KEY = "test-only-not-secret"
ALLOWED_HOSTS = ["*"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests
MEDIA_ROOT = env.path(
    "TEST_MEDIA_ROOT", default=str(BASE_DIR / "var" / (f"test-media-{_XDIST}" if _XDIST else "test-media"))
)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# one test database per pytest process, so that runs side by side (a developer's and CI's,
# or several helpers') never drop each other's database
if DATABASES["default"]["ENGINE"].endswith("postgresql"):  # noqa: F405
    DATABASES["default"]["TEST"] = {"NAME": f"test_cytoloop_{os.getpid()}"}  # noqa: F405
