"""YOLO txt labels: one ``<stem>.txt`` per image, normalised centres, ``classes.txt``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath

from annotation.bethesda import BETHESDA, normalize_label
from annotation.formats.base import (
    FormatError,
    PathLike,
    _box,
    _checked_records,
    _image_sizes,
    _parse_number,
)
from annotation.geometry import Box, ImageRecord


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
