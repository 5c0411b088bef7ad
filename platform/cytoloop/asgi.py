"""ASGI entry point."""

import os
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]
for _p in (_ROOT / "platform", _ROOT):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cytoloop.settings.production")

from django.core.asgi import get_asgi_application  # noqa: E402

application = get_asgi_application()
