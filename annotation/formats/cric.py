"""CRIC's nucleus-point annotations (JSON and CSV), as boxes of a chosen side around each point."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from typing import IO

from annotation.formats.base import (
    FormatError,
    PathLike,
    _box,
    _image_sizes,
    _key,
    _label,
    _load_json,
    _number,
    _parse_number,
    _size,
    quantize,
)
from annotation.geometry import Box, ImageRecord, clip_box


def _point_box(
    cx: float, cy: float, side: float, label: str, width: int, height: int, where: str
) -> Box:
    """A box of ``side`` centred on the nucleus point, clipped to the image."""
    if not (0 <= cx <= width and 0 <= cy <= height):
        raise FormatError(f"{where}: point ({cx:g}, {cy:g}) is outside the {width}x{height} image")
    clipped = clip_box(Box(cx - side / 2.0, cy - side / 2.0, side, side, label), width, height)
    if clipped is None:  # only for a point on the very corner with a tiny box
        raise FormatError(f"{where}: box around ({cx:g}, {cy:g}) has no area inside the image")
    # quantise the corners, so that clipping at the edge stays exactly at the edge
    x1, y1, x2, y2 = (quantize(v) for v in (clipped.x, clipped.y, clipped.x2, clipped.y2))
    return _box(x1, y1, x2 - x1, y2 - y1, label, None, width, height, where)


def _box_size(box_size: float, reference_width: float) -> None:
    _number(box_size, "box_size", "box_size")
    _number(reference_width, "reference_width", "reference_width")
    if box_size <= 0 or reference_width <= 0:
        raise ValueError("box_size and reference_width must be positive")


def read_cric_json(
    path: PathLike | IO[str] | dict, box_size: float = 100.0, reference_width: float = 1376
) -> list[ImageRecord]:
    """Records from a CRIC-style point file (``{"labels", "images": [{"file", "width", "height",
    "scale_from_cric", "cells": [{"cell_id", "label", "x", "y"}]}]}``), one per image.

    Each nucleus point (in that file's pixels) becomes a square box centred on it, clipped to
    the image, of side ``box_size * s``: ``s`` is the image's ``scale_from_cric`` (file pixels per
    official-frame pixel: 1.0 for the official 1376x1020 frames, 0.9223 for subset B), so a box
    is ``box_size`` px wide in the official frame and the same physical size in every file. When
    an image has no ``scale_from_cric``, the file is taken to be the whole official frame, resized:
    ``s = width / reference_width``. File names are kept as given (``images/<hash>.png``).
    """
    _box_size(box_size, reference_width)
    data, src = _load_json(path, "CRIC")
    raw_images = _key(data, "images", src)
    if not isinstance(raw_images, list):
        raise FormatError(f"{src}: 'images' must be a list")
    records, names = [], set()
    for index, image in enumerate(raw_images):
        where = f"{src}: image {index}"
        file_name = _key(image, "file", where)
        if not isinstance(file_name, str) or not file_name:
            raise FormatError(f"{where}: file must be a non-empty text, got {file_name!r}")
        where = f"{src}: image {file_name!r}"
        if file_name in names:
            raise FormatError(f"{where}: file appears twice")
        names.add(file_name)
        width = _size(_key(image, "width", where), where, "width")
        height = _size(_key(image, "height", where), where, "height")
        scale = image.get("scale_from_cric")
        scale = (
            width / reference_width if scale is None else _number(scale, where, "scale_from_cric")
        )
        if scale <= 0:
            raise FormatError(f"{where}: scale_from_cric must be positive, got {scale!r}")
        side = box_size * scale
        cells = image.get("cells", [])
        if not isinstance(cells, list):
            raise FormatError(f"{where}: 'cells' must be a list")
        boxes = []
        for number, cell in enumerate(cells):
            here = f"{where}: cell {number}"
            if isinstance(cell, dict) and "cell_id" in cell:
                here = f"{where}: cell_id {cell['cell_id']!r}"
            label = _label(_key(cell, "label", here), here)
            cx = _number(_key(cell, "x", here), here, "x")
            cy = _number(_key(cell, "y", here), here, "y")
            boxes.append(_point_box(cx, cy, side, label, width, height, here))
        records.append(ImageRecord(file_name, width, height, tuple(boxes)))
    return records


CRIC_CSV_COLUMNS = ("image_filename", "bethesda_system", "nucleus_x", "nucleus_y")


def read_cric_csv(
    path: PathLike,
    image_sizes: Mapping[str, tuple[int, int]],
    box_size: float = 100.0,
    reference_width: float = 1376,
    *,
    skip_missing: bool = False,
) -> list[ImageRecord]:
    """Records from CRIC's own ``classifications.csv``, one per image in order of first appearance.

    Columns used: image_filename, bethesda_system, nucleus_x, nucleus_y (others are ignored;
    rows repeat image names, one row per cell). Coordinates are in the official frame, which is
    ``reference_width`` pixels wide. ``image_sizes`` maps each ``image_filename`` to the
    ``(width, height)`` of the file the boxes are for; a file of another width is taken to be
    the official frame resized, so points and the box side scale by ``width / reference_width``
    (for the official 1376x1020 frames: unscaled, boxes ``box_size`` px). Boxes are centred on
    the nucleus and clipped to the image. An image missing from ``image_sizes`` is a FormatError,
    or its rows are skipped when ``skip_missing``.
    """
    _box_size(box_size, reference_width)
    src = str(path)
    sizes = _image_sizes(image_sizes, src)
    grouped: dict[str, list[Box]] = {}
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in CRIC_CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise FormatError(f"{src}: missing column(s) {', '.join(missing)}")
        for row in reader:
            where = f"{src}:{reader.line_num}"
            name = (row["image_filename"] or "").strip()
            if not name:
                raise FormatError(f"{where}: empty image_filename")
            if name not in sizes:
                if skip_missing:
                    continue
                raise FormatError(f"{where}: no image size given for {name!r}")
            width, height = sizes[name]
            label = _label(row["bethesda_system"], where)
            x = _parse_number(row["nucleus_x"], where, "nucleus_x")
            y = _parse_number(row["nucleus_y"], where, "nucleus_y")
            scale = width / reference_width
            box = _point_box(x * scale, y * scale, box_size * scale, label, width, height, where)
            grouped.setdefault(name, []).append(box)
    return [ImageRecord(name, *sizes[name], tuple(boxes)) for name, boxes in grouped.items()]
