"""Embedded defaults for one machine (`make run`): safe only on loopback."""

from .base import *  # noqa: F401,F403
from .base import BASE_DIR, VAR_DIR, env

DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env.str("SECRET_KEY", default="local-only-not-secret-" + str(BASE_DIR))
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])

VAR_DIR.mkdir(parents=True, exist_ok=True)
