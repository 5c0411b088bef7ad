"""Which reader fits a file or folder, from its content."""

from __future__ import annotations

import csv
from pathlib import Path

from annotation.formats.base import FormatError, FormatName, PathLike, _load_json
from annotation.formats.cric import CRIC_CSV_COLUMNS


def detect_format(path: PathLike) -> FormatName:
    """Which reader fits ``path``, from its content (and extension).

    A folder of ``.txt`` label files (or with ``classes.txt``) is ``yolo``; a ``.csv`` with CRIC's
    columns is ``cric_csv``; JSON is ``coco`` (an object with ``images`` and ``annotations`` or
    ``categories``), ``cric_json`` (an object whose images carry ``cells``) or ``labelstudio``
    (a list of tasks with ``data``). Anything else is a FormatError saying what was found.
    """
    target = Path(path)
    if target.is_dir():
        if any(target.glob("*.txt")):
            return "yolo"
        raise FormatError(f"{target}: folder holds no .txt label files (YOLO)")
    if not target.is_file():
        raise FileNotFoundError(f"{target}: no such file or folder")
    suffix = target.suffix.lower()
    if suffix == ".csv":
        with open(target, encoding="utf-8-sig", newline="") as handle:
            header = next(csv.reader(handle), [])
        if all(column in header for column in CRIC_CSV_COLUMNS):
            return "cric_csv"
        raise FormatError(
            f"{target}: unknown CSV format (CRIC needs columns {', '.join(CRIC_CSV_COLUMNS)})"
        )
    if suffix == ".txt":
        raise FormatError(f"{target}: YOLO labels are read from their folder; pass the folder")
    if suffix != ".json":
        raise FormatError(f"{target}: unknown annotation format (expected .json, .csv or a folder)")
    data, src = _load_json(target, "annotations")
    if isinstance(data, dict) and isinstance(data.get("images"), list):
        images = data["images"]
        if any(isinstance(image, dict) and "cells" in image for image in images) or (
            not images and "labels" in data and "annotations" not in data
        ):
            return "cric_json"
        if "annotations" in data or "categories" in data:
            return "coco"
    if isinstance(data, list) and data and all(isinstance(t, dict) and "data" in t for t in data):
        return "labelstudio"
    raise FormatError(
        f"{src}: unknown JSON annotation format (not COCO, Label Studio or CRIC points)"
    )
