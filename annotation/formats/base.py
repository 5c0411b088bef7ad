"""What every annotation format shares: units, the error type, input checks, JSON in and out.

Pure (no Django import). The precision and error rules are in the package docstring
(``annotation/formats/__init__.py``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from typing import IO, Any, Literal, cast

from annotation.bethesda import normalize_label
from annotation.geometry import Box, ImageRecord, InvalidBox

#: Coordinates are quantised to this many decimals of a pixel (micro-pixels).
PRECISION_DECIMALS = 6

FormatName = Literal["coco", "yolo", "labelstudio", "cric_json", "cric_csv"]

PathLike = str | os.PathLike


class FormatError(ValueError):
    """Malformed annotation input (or records that no file could describe)."""


def quantize(value: float) -> float:
    """``value`` on the micro-pixel grid (``-0.0`` becomes ``0.0``)."""
    return round(float(value), PRECISION_DECIMALS) + 0.0


def _number(value: Any, where: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FormatError(f"{where}: {what} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise FormatError(f"{where}: {what} must be finite, got {value!r}")
    return number


def _parse_number(text: str, where: str, what: str) -> float:
    try:
        number = float(text)
    except (TypeError, ValueError):
        raise FormatError(f"{where}: {what} must be a number, got {text!r}") from None
    if not math.isfinite(number):
        raise FormatError(f"{where}: {what} must be finite, got {text!r}")
    return number


def _size(value: Any, where: str, what: str) -> int:
    number = _number(value, where, what)
    if number <= 0 or number != int(number):
        raise FormatError(f"{where}: {what} must be a positive whole number, got {value!r}")
    return int(number)


def _key(mapping: Any, key: str, where: str) -> Any:
    if not isinstance(mapping, dict):
        raise FormatError(f"{where}: expected an object, got {type(mapping).__name__}")
    if key not in mapping:
        raise FormatError(f"{where}: missing key {key!r}")
    return mapping[key]


def _label(value: Any, where: str) -> str:
    try:
        return normalize_label(value)
    except ValueError as exc:
        raise FormatError(f"{where}: {exc}") from None


def _box(
    x: float,
    y: float,
    width: float,
    height: float,
    label: str,
    score: Any,
    image_width: float,
    image_height: float,
    where: str,
) -> Box:
    """A quantised, validated box, or FormatError saying where and what."""
    if score is not None:
        score = _number(score, where, "score")
    box = Box(quantize(x), quantize(y), quantize(width), quantize(height), label, score)
    try:
        return box.validated(image_width, image_height)
    except InvalidBox as exc:
        raise FormatError(f"{where}: {exc}") from None


def _checked_records(records: Iterable[ImageRecord], what: str) -> list[ImageRecord]:
    """Records with validated boxes, for writing; FormatError on anything no file can hold."""
    checked: list[ImageRecord] = []
    seen: set[str] = set()
    for record in records:
        name = record.file_name
        if not isinstance(name, str) or not name:
            raise FormatError(f"{what}: every record needs a file name, got {name!r}")
        if name in seen:
            raise FormatError(f"{what}: file name {name!r} appears twice")
        seen.add(name)
        where = f"{what}: {name}"
        width = _size(record.width, where, "width")
        height = _size(record.height, where, "height")
        boxes = []
        for index, box in enumerate(record.boxes):
            try:
                boxes.append(box.validated(width, height))
            except InvalidBox as exc:
                raise FormatError(f"{where}: box {index}: {exc}") from None
        checked.append(ImageRecord(name, width, height, tuple(boxes)))
    return checked


def _load_json(source: PathLike | IO[str] | dict | list, what: str) -> tuple[Any, str]:
    """The parsed JSON and a name for messages."""
    if isinstance(source, dict | list):
        return source, f"<{type(source).__name__}>"
    if hasattr(source, "read"):
        name = str(getattr(source, "name", f"<{what} stream>"))
        text = source.read()
    else:
        name = str(source)
        with open(source, encoding="utf-8") as handle:
            text = handle.read()
    try:
        return json.loads(text), name
    except json.JSONDecodeError as exc:
        raise FormatError(f"{name}: not valid JSON ({exc})") from None


def _dump_json(data: Any, path_or_file: PathLike | IO[str]) -> None:
    if hasattr(path_or_file, "write"):
        json.dump(data, cast(IO[str], path_or_file), indent=1, ensure_ascii=False, allow_nan=False)
        return
    with open(path_or_file, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, ensure_ascii=False, allow_nan=False)
        handle.write("\n")


def _image_sizes(
    image_sizes: Mapping[str, tuple[int, int]], what: str
) -> dict[str, tuple[int, int]]:
    sizes = {}
    for name, size in image_sizes.items():
        where = f"{what}: image_sizes[{name!r}]"
        if not isinstance(size, tuple | list) or len(size) != 2:
            raise FormatError(f"{where}: expected (width, height), got {size!r}")
        sizes[name] = (_size(size[0], where, "width"), _size(size[1], where, "height"))
    return sizes
