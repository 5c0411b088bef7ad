"""Label Studio tasks JSON, and the one pixel <-> percent conversion of the platform."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import PurePosixPath
from typing import IO, Any, Literal
from urllib.parse import parse_qs, quote, unquote, urlsplit

from annotation.bethesda import normalize_label
from annotation.formats.base import (
    FormatError,
    PathLike,
    _box,
    _checked_records,
    _dump_json,
    _image_sizes,
    _key,
    _label,
    _load_json,
    _number,
    _size,
)
from annotation.geometry import Box, ImageRecord

LS_FROM_NAME = "cluster"
LS_TO_NAME = "image"
LS_LOCAL_FILES_PREFIX = "/data/local-files/?d="
_LS_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-(.+)$")


def pixels_to_ls_value(box: Box, width: float, height: float) -> dict:
    """A Label Studio rectangle ``value`` (percent of the image) for a pixel box."""
    if not (width > 0 and height > 0):
        raise FormatError(f"image size must be positive, got {width} x {height}")
    return {
        "x": float(box.x) * 100.0 / width,
        "y": float(box.y) * 100.0 / height,
        "width": float(box.width) * 100.0 / width,
        "height": float(box.height) * 100.0 / height,
        "rotation": 0,
        "rectanglelabels": [normalize_label(box.label)],
    }


def ls_value_to_box(value: Mapping, width: float, height: float, score: float | None = None) -> Box:
    """The pixel box of a Label Studio rectangle ``value`` (percent), quantised and validated.

    Raises FormatError for missing or non-numeric fields, a rotated rectangle, not exactly one
    label, a label that is no Bethesda class, or a box outside the image.
    """
    where = "Label Studio value"
    if not (width > 0 and height > 0):
        raise FormatError(f"{where}: image size must be positive, got {width} x {height}")
    x, y, w, h = (
        _number(_key(value, key, where), where, key) for key in ("x", "y", "width", "height")
    )
    rotation = _number(value.get("rotation", 0) or 0, where, "rotation")
    if rotation % 360 != 0:
        raise FormatError(f"{where}: rotated rectangles are not supported (rotation {rotation:g})")
    labels = _key(value, "rectanglelabels", where)
    if not isinstance(labels, list) or len(labels) != 1:
        raise FormatError(f"{where}: expected exactly one label in rectanglelabels, got {labels!r}")
    label = _label(labels[0], where)
    return _box(
        x * width / 100.0,
        y * height / 100.0,
        w * width / 100.0,
        h * height / 100.0,
        label,
        score,
        width,
        height,
        where,
    )


def default_image_url(record: ImageRecord) -> str:
    """Label Studio local-files URL of a record's image: ``/data/local-files/?d=<file_name>``."""
    return LS_LOCAL_FILES_PREFIX + quote(record.file_name, safe="/")


def file_name_from_ls_url(url: str) -> str:
    """The file name a Label Studio image URL stands for.

    ``...?d=some/dir/file.png`` (local files) gives the decoded path after ``d=``; otherwise the
    decoded basename of the URL path, without the 8-hex-digit prefix Label Studio gives uploads
    (``/data/upload/3/1a2b3c4d-cells.png`` gives ``cells.png``).
    """
    parts = urlsplit(url)
    query = parse_qs(parts.query, keep_blank_values=True)
    if query.get("d") and query["d"][0]:
        return query["d"][0]
    path = unquote(parts.path)
    base = PurePosixPath(path).name
    if "/data/upload/" in path:
        match = _LS_UPLOAD_PREFIX.match(base)
        if match:
            base = match.group(1)
    return base


def to_label_studio(
    records: Iterable[ImageRecord],
    image_url: Callable[[ImageRecord], str] = default_image_url,
    *,
    which: Literal["annotations", "predictions"] = "annotations",
    completed_by: Any = None,
    model_version: str | None = None,
) -> list[dict]:
    """Label Studio tasks (its JSON export/import shape), one per record, ids 1..n.

    Boxes go in one entry of ``which``: an annotation (``completed_by`` when given; written even
    when the record has no boxes, since the record says the image has none) or a prediction
    (``model_version``; none for a record without boxes). Results are ``rectanglelabels`` from
    ``cluster`` to ``image`` in percent, with ``score`` for scored boxes. ``data`` carries the
    image size too, so that tasks without results can be read back. ``image_url`` must give a
    URL that ``file_name_from_ls_url`` maps back to the record's file name (the default does).
    """
    if which not in ("annotations", "predictions"):
        raise ValueError(f"which must be 'annotations' or 'predictions', got {which!r}")
    tasks = []
    for task_id, record in enumerate(_checked_records(records, "Label Studio export"), start=1):
        results = []
        for index, box in enumerate(record.boxes):
            result = {
                "id": f"{task_id}-{index}",
                "from_name": LS_FROM_NAME,
                "to_name": LS_TO_NAME,
                "type": "rectanglelabels",
                "original_width": record.width,
                "original_height": record.height,
                "image_rotation": 0,
                "value": pixels_to_ls_value(box, record.width, record.height),
            }
            if box.score is not None:
                result["score"] = float(box.score)
            results.append(result)
        task: dict[str, Any] = {
            "id": task_id,
            "data": {"image": image_url(record), "width": record.width, "height": record.height},
            "annotations": [],
            "predictions": [],
        }
        if which == "annotations":
            annotation: dict[str, Any] = {"result": results}
            if completed_by is not None:  # Label Studio refuses a null user on import
                annotation["completed_by"] = completed_by
            task["annotations"].append(annotation)
        elif results:
            prediction: dict[str, Any] = {"result": results, "model_version": model_version or ""}
            scores = [box.score for box in record.boxes]
            if all(score is not None for score in scores):
                prediction["score"] = sum(s for s in scores if s is not None) / len(scores)
            task["predictions"].append(prediction)
        tasks.append(task)
    return tasks


def write_label_studio(
    records: Iterable[ImageRecord], path_or_file: PathLike | IO[str], **options
) -> None:
    """Write ``to_label_studio(records, **options)`` as a JSON file."""
    _dump_json(to_label_studio(records, **options), path_or_file)


def _annotator_matches(entry: dict, completed_by: Any) -> bool:
    who = entry.get("completed_by")
    if isinstance(who, dict):
        return completed_by in (who.get("id"), who.get("email"))
    return who == completed_by


def read_label_studio(
    path_or_list: PathLike | IO[str] | list,
    which: Literal["annotations", "predictions"] = "annotations",
    *,
    image_key: str = "image",
    image_sizes: Mapping[str, tuple[int, int]] | None = None,
    completed_by: Any = None,
    model_version: str | None = None,
) -> list[ImageRecord]:
    """Records from a Label Studio JSON export (a list of tasks), one per task, in file order.

    ``which`` picks the tasks' annotations or predictions; cancelled annotations are skipped.
    A task may hold at most one remaining entry: choose one annotator with ``completed_by`` (an
    id, or an email when the export gives users as objects), or one model with ``model_version``.
    Only ``rectanglelabels`` results are read (other controls are ignored); scores come from each
    result's ``score``, else from the prediction's. File names come from ``data[image_key]`` via
    ``file_name_from_ls_url``. The image size comes from the results' ``original_width``/
    ``original_height``, else ``data.width``/``data.height``, else ``image_sizes`` (keyed by that
    file name); a task whose size is unknown is a FormatError.
    """
    if which not in ("annotations", "predictions"):
        raise ValueError(f"which must be 'annotations' or 'predictions', got {which!r}")
    data, src = _load_json(path_or_list, "Label Studio")
    if not isinstance(data, list):
        raise FormatError(
            f"{src}: a Label Studio export is a list of tasks, got {type(data).__name__}"
        )
    sizes = _image_sizes(image_sizes or {}, src)
    records, names = [], set()
    for index, task in enumerate(data):
        task_name = task.get("id", index) if isinstance(task, dict) else index
        where = f"{src}: task {task_name!r}"
        task_data = _key(task, "data", where)
        url = _key(task_data, image_key, f"{where}: data")
        if not isinstance(url, str) or not url:
            raise FormatError(f"{where}: data.{image_key} must be an image URL, got {url!r}")
        file_name = file_name_from_ls_url(url)
        if file_name in names:
            raise FormatError(f"{where}: image {file_name!r} appears in two tasks")
        names.add(file_name)

        entries = task.get(which) or []
        if not isinstance(entries, list):
            raise FormatError(f"{where}: {which} must be a list")
        entries = [e for e in entries if isinstance(e, dict) and not e.get("was_cancelled")]
        if completed_by is not None:
            entries = [e for e in entries if _annotator_matches(e, completed_by)]
        if model_version is not None:
            entries = [e for e in entries if e.get("model_version") == model_version]
        if len(entries) > 1:
            hint = "completed_by" if which == "annotations" else "model_version"
            raise FormatError(f"{where}: {len(entries)} {which}; pass {hint}= to choose one")
        results = _key(entries[0], "result", where) if entries else []
        if not isinstance(results, list):
            raise FormatError(f"{where}: result must be a list")
        default_score = entries[0].get("score") if entries and which == "predictions" else None

        size = _ls_task_size(task_data, file_name, sizes, results, where)
        boxes = []
        for number, result in enumerate(results):
            if not isinstance(result, dict) or result.get("type") != "rectanglelabels":
                continue
            here = f"{where}: result {result.get('id', number)!r}"
            if _number(result.get("image_rotation", 0) or 0, here, "image_rotation") % 360:
                raise FormatError(f"{here}: rotated images are not supported")
            score = result.get("score", default_score)
            try:
                boxes.append(ls_value_to_box(_key(result, "value", here), size[0], size[1], score))
            except FormatError as exc:
                raise FormatError(
                    f"{here}: {str(exc).removeprefix('Label Studio value: ')}"
                ) from None
        records.append(ImageRecord(file_name, size[0], size[1], tuple(boxes)))
    return records


def _ls_task_size(
    task_data: dict, file_name: str, sizes: dict, results: list, where: str
) -> tuple[int, int]:
    found: set[tuple[int, int]] = set()
    for result in results:
        if (
            isinstance(result, dict)
            and result.get("type") == "rectanglelabels"
            and "original_width" in result
        ):
            found.add(
                (
                    _size(result["original_width"], where, "original_width"),
                    _size(_key(result, "original_height", where), where, "original_height"),
                )
            )
    if "width" in task_data and "height" in task_data:
        found.add(
            (
                _size(task_data["width"], where, "data.width"),
                _size(task_data["height"], where, "data.height"),
            )
        )
    elif not found and file_name in sizes:
        found.add(sizes[file_name])
    if len(found) > 1:
        listed = ", ".join(f"{w}x{h}" for w, h in sorted(found))
        raise FormatError(f"{where}: results disagree on the image size ({listed})")
    if not found:
        raise FormatError(
            f"{where}: image size unknown for {file_name!r} (no results with original_width, "
            "no data.width/height; pass image_sizes)"
        )
    return found.pop()
