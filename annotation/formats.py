"""Annotation file formats: COCO JSON, YOLO txt, Label Studio JSON, and CRIC's point annotations.

Pure module (no Django import). Everything is in original-image pixels (``Box``: x, y = top-left
corner, width, height) with Bethesda labels; each format's own units (YOLO's normalised centres,
Label Studio's percents, CRIC's nucleus points) are converted here and nowhere else.

Precision: every reader quantises coordinates to micro-pixels, ``round(v, 6)`` (1e-6 px), and
every writer writes floats with Python's shortest exact representation (``repr``), so for records
whose coordinates are already on that grid (anything a reader returned, integers, ...)
``read_X(write_X(records)) == records`` exactly. Scores are probabilities and are kept exactly,
not quantised. Readers return records in file order (YOLO: in ``image_sizes`` order) and keep
images that have no boxes.

Malformed input raises ``FormatError`` naming the file (or ``<dict>``/``<list>`` for in-memory
data) and what is wrong. Boxes are checked against their image with ``Box.validated``; writers
check the records they are given the same way.

Label Studio's pixel <-> percent conversion lives in ``pixels_to_ls_value`` and
``ls_value_to_box``: the one place the platform converts to and from Label Studio coordinates.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import IO, Any, Literal
from urllib.parse import parse_qs, quote, unquote, urlsplit

from annotation.bethesda import BETHESDA, normalize_label
from annotation.geometry import Box, ImageRecord, InvalidBox, clip_box

#: Coordinates are quantised to this many decimals of a pixel (micro-pixels).
PRECISION_DECIMALS = 6

FormatName = Literal["coco", "yolo", "labelstudio", "cric_json", "cric_csv"]

PathLike = str | os.PathLike


class FormatError(ValueError):
    """Malformed annotation input (or records that no file could describe)."""


def quantize(value: float) -> float:
    """``value`` on the micro-pixel grid (``-0.0`` becomes ``0.0``)."""
    return round(float(value), PRECISION_DECIMALS) + 0.0


# ---------------------------------------------------------------------------------------------
# Shared checks


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
    image_width: int,
    image_height: int,
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
        json.dump(data, path_or_file, indent=1, ensure_ascii=False, allow_nan=False)
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


# ---------------------------------------------------------------------------------------------
# COCO


def to_coco(records: Iterable[ImageRecord], info: dict | None = None) -> dict:
    """COCO detection JSON as a dict: categories are the six Bethesda classes, ids 1..6 in order.

    Image ids are 1..n and annotation ids 1..m in record order; ``score`` is written for boxes
    that have one (the shape of a COCO results file, kept per annotation).
    """
    checked = _checked_records(records, "COCO export")
    images, annotations = [], []
    for image_id, record in enumerate(checked, start=1):
        images.append(
            {
                "id": image_id,
                "file_name": record.file_name,
                "width": record.width,
                "height": record.height,
            }
        )
        for box in record.boxes:
            annotation = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": BETHESDA.index(box.label) + 1,
                "bbox": [float(box.x), float(box.y), float(box.width), float(box.height)],
                "area": float(box.area),
                "iscrowd": 0,
            }
            if box.score is not None:
                annotation["score"] = float(box.score)
            annotations.append(annotation)
    categories = [
        {"id": index, "name": name, "supercategory": "cell"}
        for index, name in enumerate(BETHESDA, start=1)
    ]
    return {
        "info": dict(info) if info is not None else {"description": "CytoLoop annotations"},
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }


def write_coco(
    records: Iterable[ImageRecord], path_or_file: PathLike | IO[str], *, info: dict | None = None
) -> None:
    """Write ``to_coco(records, info)`` as JSON to a path or an open text file."""
    _dump_json(to_coco(records, info), path_or_file)


def read_coco(path_or_dict: PathLike | IO[str] | dict) -> list[ImageRecord]:
    """Records from a COCO detection file (or its parsed dict), one per image, in file order.

    Categories map to Bethesda classes by name through ``normalize_label`` (any ids, common
    spellings); an annotation whose category is not a Bethesda class is a FormatError naming it
    (categories that no annotation uses are ignored). ``annotations`` may be absent (no boxes).
    Crowd annotations (``iscrowd`` 1) are refused: they do not mark single clusters.
    """
    data, src = _load_json(path_or_dict, "COCO")
    if not isinstance(data, dict):
        raise FormatError(f"{src}: a COCO file is an object, got {type(data).__name__}")
    raw_images = _key(data, "images", src)
    raw_annotations = data.get("annotations", [])
    if not isinstance(raw_images, list) or not isinstance(raw_annotations, list):
        raise FormatError(f"{src}: 'images' and 'annotations' must be lists")

    categories: dict[Any, str] = {}
    if raw_annotations:
        raw_categories = _key(data, "categories", src)
        if not isinstance(raw_categories, list):
            raise FormatError(f"{src}: 'categories' must be a list")
        for index, category in enumerate(raw_categories):
            where = f"{src}: category {index}"
            category_id = _key(category, "id", where)
            name = _key(category, "name", where)
            if category_id in categories:
                raise FormatError(f"{where}: category id {category_id!r} appears twice")
            categories[category_id] = name

    images: dict[Any, tuple[str, int, int]] = {}
    names: set[str] = set()
    for index, image in enumerate(raw_images):
        where = f"{src}: image {index}"
        image_id = _key(image, "id", where)
        file_name = _key(image, "file_name", where)
        if not isinstance(file_name, str) or not file_name:
            raise FormatError(f"{where}: file_name must be a non-empty text, got {file_name!r}")
        where = f"{src}: image {file_name!r}"
        width = _size(_key(image, "width", where), where, "width")
        height = _size(_key(image, "height", where), where, "height")
        if image_id in images:
            raise FormatError(f"{where}: image id {image_id!r} appears twice")
        if file_name in names:
            raise FormatError(f"{where}: file name appears twice")
        names.add(file_name)
        images[image_id] = (file_name, width, height)

    boxes: dict[Any, list[Box]] = {image_id: [] for image_id in images}
    for index, annotation in enumerate(raw_annotations):
        where = f"{src}: annotation {index}"
        if isinstance(annotation, dict) and "id" in annotation:
            where = f"{src}: annotation id {annotation['id']!r}"
        image_id = _key(annotation, "image_id", where)
        if image_id not in images:
            raise FormatError(f"{where}: image_id {image_id!r} is not in 'images'")
        file_name, width, height = images[image_id]
        where = f"{where} (image {file_name!r})"
        category_id = _key(annotation, "category_id", where)
        if category_id not in categories:
            raise FormatError(f"{where}: category_id {category_id!r} is not in 'categories'")
        label = _label(categories[category_id], f"{where}: category {category_id!r}")
        if annotation.get("iscrowd", 0):
            raise FormatError(f"{where}: crowd annotations (iscrowd 1) are not supported")
        bbox = _key(annotation, "bbox", where)
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise FormatError(
                f"{where}: bbox must be 4 numbers [x, y, width, height], got {bbox!r}"
            )
        x, y, w, h = (_number(v, where, f"bbox[{i}]") for i, v in enumerate(bbox))
        boxes[image_id].append(
            _box(x, y, w, h, label, annotation.get("score"), width, height, where)
        )

    return [
        ImageRecord(file_name, width, height, tuple(boxes[image_id]))
        for image_id, (file_name, width, height) in images.items()
    ]


# ---------------------------------------------------------------------------------------------
# YOLO


def _yolo_stem(file_name: str) -> str:
    return PurePosixPath(file_name.replace("\\", "/")).stem


def _stems(names: Iterable[str], what: str) -> dict[str, str]:
    stems: dict[str, str] = {}
    for name in names:
        stem = _yolo_stem(name)
        if not stem:
            raise FormatError(f"{what}: {name!r} has no file stem to name a label file")
        if stem == "classes":
            raise FormatError(f"{what}: {name!r} would collide with classes.txt")
        if stem in stems:
            raise FormatError(
                f"{what}: {stems[stem]!r} and {name!r} share the label file {stem}.txt"
            )
        stems[stem] = name
    return stems


def write_yolo(records: Iterable[ImageRecord], out_dir: PathLike) -> None:
    """One ``<stem>.txt`` per image (``class cx cy w h`` normalised, ``conf`` 6th when scored),
    an empty file for an image without boxes, and ``classes.txt`` with the six names.

    Class ids are 0..5 in Bethesda order. Two records whose names share a stem cannot both be
    written (FormatError).
    """
    checked = _checked_records(records, "YOLO export")
    stems = _stems((record.file_name for record in checked), "YOLO export")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    by_name = {record.file_name: record for record in checked}
    for stem, name in stems.items():
        record = by_name[name]
        lines = []
        for box in record.boxes:
            cx = (box.x + box.width / 2.0) / record.width
            cy = (box.y + box.height / 2.0) / record.height
            columns = [
                str(BETHESDA.index(box.label)),
                repr(float(cx)),
                repr(float(cy)),
                repr(float(box.width) / record.width),
                repr(float(box.height) / record.height),
            ]
            if box.score is not None:
                columns.append(repr(float(box.score)))
            lines.append(" ".join(columns))
        (out / f"{stem}.txt").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    (out / "classes.txt").write_text("".join(name + "\n" for name in BETHESDA), encoding="utf-8")


def read_yolo(label_dir: PathLike, image_sizes: Mapping[str, tuple[int, int]]) -> list[ImageRecord]:
    """Records from a folder of YOLO label files.

    ``image_sizes`` maps each image's file name (what the records' ``file_name`` will be, e.g.
    ``"cells/a.png"``) to ``(width, height)``; its label file is ``<stem>.txt`` in ``label_dir``
    (``a.txt``). Records come in ``image_sizes`` order; an image without a label file has no
    boxes. A label file with no image of that stem in ``image_sizes`` is a FormatError. Class ids
    are 0..5 in Bethesda order unless ``classes.txt`` in the folder names the classes, one per
    line (then mapped by name; a name that is no Bethesda class is an error when used).
    """
    folder = Path(label_dir)
    if not folder.is_dir():
        raise FormatError(f"{folder}: YOLO labels must be a folder of .txt files")
    sizes = _image_sizes(image_sizes, str(folder))
    stems = _stems(sizes, str(folder))

    classes: list[str | FormatError] = list(BETHESDA)
    classes_file = folder / "classes.txt"
    if classes_file.is_file():
        classes = []
        lines = classes_file.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                classes.append(normalize_label(line))
            except ValueError as exc:
                classes.append(FormatError(f"{classes_file}:{number}: {exc}"))

    label_files = {
        path.stem: path for path in sorted(folder.glob("*.txt")) if path.name != "classes.txt"
    }
    for stem, path in label_files.items():
        if stem not in stems:
            raise FormatError(f"{path}: no image size given for an image named {stem}.*")

    records = []
    for name, (width, height) in sizes.items():
        path = label_files.get(_yolo_stem(name))
        boxes = _read_yolo_file(path, classes, width, height) if path else ()
        records.append(ImageRecord(name, width, height, tuple(boxes)))
    return records


def _read_yolo_file(path: Path, classes: list, width: int, height: int) -> list[Box]:
    boxes = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        columns = line.split()
        if not columns:
            continue
        where = f"{path}:{number}"
        if len(columns) not in (5, 6):
            raise FormatError(
                f"{where}: expected 'class cx cy w h [conf]', got {len(columns)} columns"
            )
        try:
            class_id = int(columns[0])
        except ValueError:
            raise FormatError(
                f"{where}: class id must be a whole number, got {columns[0]!r}"
            ) from None
        if not 0 <= class_id < len(classes):
            raise FormatError(f"{where}: class id {class_id} is outside 0..{len(classes) - 1}")
        label = classes[class_id]
        if isinstance(label, FormatError):
            raise label
        cx, cy, wn, hn = (
            _parse_number(text, where, what)
            for text, what in zip(columns[1:5], ("cx", "cy", "w", "h"), strict=True)
        )
        score = _parse_number(columns[5], where, "conf") if len(columns) == 6 else None
        w, h = wn * width, hn * height
        boxes.append(
            _box(
                cx * width - w / 2.0,
                cy * height - h / 2.0,
                w,
                h,
                label,
                score,
                width,
                height,
                where,
            )
        )
    return boxes


# ---------------------------------------------------------------------------------------------
# Label Studio

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
        task = {
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
                prediction["score"] = sum(scores) / len(scores)
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


# ---------------------------------------------------------------------------------------------
# CRIC point annotations


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


# ---------------------------------------------------------------------------------------------
# Detection


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


__all__ = [
    "CRIC_CSV_COLUMNS",
    "LS_FROM_NAME",
    "LS_LOCAL_FILES_PREFIX",
    "LS_TO_NAME",
    "PRECISION_DECIMALS",
    "FormatError",
    "default_image_url",
    "detect_format",
    "file_name_from_ls_url",
    "ls_value_to_box",
    "pixels_to_ls_value",
    "quantize",
    "read_coco",
    "read_cric_csv",
    "read_cric_json",
    "read_label_studio",
    "read_yolo",
    "to_coco",
    "to_label_studio",
    "write_coco",
    "write_label_studio",
    "write_yolo",
]
