#!/usr/bin/env python
"""Django's command-line utility for CytoLoop.

platform/ is a source root, not a package: a package importable as `platform` would shadow
Python's standard-library module of that name (uuid, Django and TensorFlow import it).
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
for path in (ROOT / "platform", ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cytoloop.settings.local")
    from cytoloop.startup import run_management_command

    run_management_command(sys.argv)


if __name__ == "__main__":
    main()
