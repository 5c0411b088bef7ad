"""Exporting a dataset's ground truth in a format that re-imports as it is."""

from __future__ import annotations

from pathlib import Path

from django.core.files.storage import default_storage

from annotation import formats
from annotation.models import Dataset, Image
from annotation.selectors import dataset_records


def export_dataset(*, dataset: Dataset, out_dir: str | Path, fmt: str, copy_images: bool = True) -> Path:
    """Write the dataset's ground truth in ``fmt`` (coco, yolo, labelstudio) under ``out_dir``,
    with the image files beside it so that the folder re-imports as it is."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = dataset_records(dataset)
    if fmt == "coco":
        target = out / "annotations.json"
        formats.write_coco(records, target, info={"dataset": dataset.name, "source": dataset.source,
                                                  "license": dataset.license})
    elif fmt == "yolo":
        target = out / "labels"
        formats.write_yolo(records, target)
    elif fmt == "labelstudio":
        target = out / "labelstudio.json"
        formats.write_label_studio(records, target)
    else:
        raise ValueError(f"unknown export format {fmt!r}; expected coco, yolo or labelstudio")
    if copy_images:
        for image in Image.objects.filter(dataset=dataset):
            dest = out / image.original_name
            dest.parent.mkdir(parents=True, exist_ok=True)
            with default_storage.open(image.file.name, "rb") as src:
                dest.write_bytes(src.read())
    return target
