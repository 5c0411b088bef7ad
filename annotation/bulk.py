"""Bulk inserts: COPY on PostgreSQL, bulk_create elsewhere (consensus and ground truth write
hundreds of thousands of rows)."""

from __future__ import annotations

import io
import json

from django.db import connection

_COPY_SPECIAL = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_value(value) -> str:
    """One value in PostgreSQL's COPY text format."""
    kind = type(value)
    if kind is float:
        return repr(value)
    if kind is int:
        return str(value)
    if value is None:
        return "\\N"
    if kind is list or kind is dict:
        value = json.dumps(value, separators=(",", ":"))
    text = str(value)
    return text.translate(_COPY_SPECIAL) if ("\\" in text or "\t" in text or "\n" in text or "\r" in text) else text


def insert_rows(model, columns: tuple[str, ...], rows: list[tuple], extra: dict) -> None:
    """Insert many rows: COPY on PostgreSQL (the ORM's INSERT compiler costs more than the
    database here), bulk_create elsewhere. ``extra`` are constant columns (created_at...)."""
    if not rows:
        return
    if connection.vendor == "postgresql":
        names = list(columns) + list(extra)
        constants = "\t".join(_copy_value(v) for v in extra.values())
        buffer = io.StringIO()
        for row in rows:
            buffer.write("\t".join(_copy_value(v) for v in row))
            if constants:
                buffer.write("\t" + constants)
            buffer.write("\n")
        buffer.seek(0)
        table = connection.ops.quote_name(model._meta.db_table)
        cols = ", ".join(connection.ops.quote_name(model._meta.get_field(c).column) for c in names)
        with connection.cursor() as cursor:
            cursor.cursor.copy_expert(f"COPY {table} ({cols}) FROM STDIN", buffer)
    else:
        model.objects.bulk_create([model(**dict(zip(columns, row, strict=True)), **extra) for row in rows],
                                  batch_size=2000)
