"""Embedded defaults for one machine (`make run`): safe only on loopback."""

from .base import *  # noqa: F401,F403
from .base import BASE_DIR, VAR_DIR, env

DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env.str("SECRET_KEY", default="local-only-not-secret-" + str(BASE_DIR))
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])

VAR_DIR.mkdir(parents=True, exist_ok=True)

# Label Studio started by `make run` (annotation/ls_server.py) leaves its connection here;
# the environment wins when it names a server.
import json as _json  # noqa: E402

_ls_connection = VAR_DIR / "label-studio" / "connection.json"
if _ls_connection.exists() and not env.str("LABEL_STUDIO_URL", default=""):
    _conn = _json.loads(_ls_connection.read_text())
    LABEL_STUDIO_URL = _conn["url"]
    LABEL_STUDIO_TOKEN = _conn["token"]
    LABEL_STUDIO_WEBHOOK_SECRET = _conn["webhook_secret"]
    LABEL_STUDIO_WEBHOOK_URL = env.str(
        "LABEL_STUDIO_WEBHOOK_URL",
        default=f"http://127.0.0.1:{env.int('CYTOLOOP_PORT', default=8000)}/api/labelstudio/webhook/",
    )
