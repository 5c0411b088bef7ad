"""COCO detection JSON: the six Bethesda classes as categories 1..6."""

from __future__ import annotations

from collections.abc import Iterable
from typing import IO, Any

from annotation.bethesda import BETHESDA
from annotation.formats.base import (
    FormatError,
    PathLike,
    _box,
    _checked_records,
    _dump_json,
    _key,
    _label,
    _load_json,
    _number,
    _size,
)
from annotation.geometry import Box, ImageRecord


def to_coco(records: Iterable[ImageRecord], info: dict | None = None) -> dict:
    """COCO detection JSON as a dict: categories are the six Bethesda classes, ids 1..6 in order.

    Image ids are 1..n and annotation ids 1..m in record order; ``score`` is written for boxes
    that have one (the shape of a COCO results file, kept per annotation).
    """
    checked = _checked_records(records, "COCO export")
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
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
