"""Fixtures for dataset/image tests: isolated media storage and small real image files."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from annotation.formats import write_coco
from annotation.geometry import ImageRecord
from annotation.models import Image
from annotation.services import ensure_dataset, import_images


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return tmp_path / "media"


def png_bytes(seed: int, size=(64, 48), mode="RGB") -> bytes:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "L": 1}[mode]
    arr = rng.integers(0, 255, size=(size[1], size[0], channels), dtype=np.uint8)
    image = PILImage.fromarray(arr.squeeze() if channels == 1 else arr, mode)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def make_png():
    return png_bytes


def import_pngs(folder: Path, name: str, count: int, *, seed: int, size=(200, 100), prefix: str = "",
                experts_per_image: int = 2, truth=(), coco: Path | None = None) -> list[Image]:
    """Write ``count`` random PNGs ``{prefix}{i}.png`` (``png_bytes(seed + i, size)``) to the new
    ``folder`` and import them into the dataset ``name``, made with ``experts_per_image``; returns
    its images by original name. With ``truth`` (boxes), every image is imported with those boxes
    as ground truth, from the COCO file ``coco`` (default: beside the folder)."""
    folder.mkdir()
    names = [f"{prefix}{i}.png" for i in range(count)]
    for i, file_name in enumerate(names):
        (folder / file_name).write_bytes(png_bytes(seed + i, size=size))
    annotations = None
    if truth:
        annotations = coco or folder.with_suffix(".json")
        write_coco([ImageRecord(n, size[0], size[1], tuple(truth)) for n in names], annotations)
    dataset, _ = ensure_dataset(name=name, experts_per_image=experts_per_image)
    import_images(dataset=dataset, path=folder, annotations=annotations)
    return list(Image.objects.filter(dataset=dataset).order_by("original_name"))
