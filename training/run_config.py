"""Run configurations from their JSON (pure; no Django, no TensorFlow import): the one reader
both ``classifier.config`` and ``detector.config`` use for their ``from_json``."""

from __future__ import annotations

import dataclasses
from typing import Any


def dataclass_from_json(kind, values: dict[str, Any], nested: dict[str, type] | None = None):
    """``kind(**values)`` for a (frozen) dataclass: fields missing from ``values`` take their
    defaults, unknown ones are ignored (a config saved by an older version still loads), lists
    become tuples, and a field named in ``nested`` whose value is a dict is built as that
    dataclass (one level: the run config's components)."""
    kwargs = {}
    for f in dataclasses.fields(kind):
        if f.name not in values:
            continue
        value = values[f.name]
        sub = (nested or {}).get(f.name)
        if sub is not None and isinstance(value, dict):
            value = dataclass_from_json(sub, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return kind(**kwargs)
