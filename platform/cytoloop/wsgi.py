"""WSGI entry point (gunicorn cytoloop.wsgi). Refuses to boot with one line if the database is
wrong; starts and serves with the broker down (cytoloop.startup)."""

import os
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]
for _p in (_ROOT / "platform", _ROOT):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cytoloop.settings.production")

from cytoloop.startup import boot_wsgi  # noqa: E402

boot_wsgi(run_preflight=os.environ.get("CYTOLOOP_SKIP_PREFLIGHT") != "1")

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
