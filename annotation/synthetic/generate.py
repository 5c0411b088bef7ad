"""Synthetic images, datasets on disk and cluster crops: the public calls of ``annotation.synthetic``.

Pure (NumPy + OpenCV, no Django import); see the package docstring for how a picture is made.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from annotation.crops import crop_box
from annotation.geometry import ImageRecord
from annotation.synthetic.config import SyntheticConfig, SyntheticImage
from annotation.synthetic.render import (
    _boxes,
    _finish,
    _noise_fields,
    _render_canvas,
    _stain_matrix,
)
from annotation.synthetic.scene import _build_scene


def generate_image(
    seed: int, config: SyntheticConfig = SyntheticConfig(), *, full_frame: bool = False  # noqa: B008
) -> SyntheticImage:
    """Draw one synthetic Pap image and its cluster boxes; the same seed gives the same bytes.

    ``full_frame=True`` renders the same picture the slow way (each cell composited through a
    full-frame layer); it exists only as the benchmark's baseline.
    """
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    rng = np.random.default_rng(seed)
    scene = _build_scene(rng, config)
    fields = _noise_fields(rng, config.height, config.width)
    stains = _stain_matrix(rng, config.stain_variation)
    canvas, bounds = _render_canvas(scene, fields, stains, full_frame=full_frame)
    image = _finish(rng, config, canvas, fields, stains)
    return SyntheticImage(image=image, boxes=_boxes(scene, bounds, config.cell_scale), seed=seed)


def image_seed(seed: int, index: int) -> int:
    """The seed of image ``index`` in a dataset drawn with ``seed`` (stable, well mixed)."""
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 32 | int(state[1])


def generate_dataset(
    out_dir: str | Path,
    n_images: int,
    seed: int = 0,
    config: SyntheticConfig = SyntheticConfig(),  # noqa: B008
    progress: Callable[[int, int], object] | None = None,
) -> list[ImageRecord]:
    """Write ``out_dir/images/synth_00000.png`` ... and return one ImageRecord per image.

    Image ``i`` is ``generate_image(image_seed(seed, i), config)``. File names in the records
    are relative to ``out_dir`` ("images/synth_00000.png"). ``progress(done, total)`` is called
    after each image. The annotation file is the caller's to write (``write_coco``).
    """
    if int(n_images) < 1:
        raise ValueError(f"n_images must be at least 1, got {n_images}")
    image_dir = Path(out_dir) / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    digits = max(5, len(str(int(n_images) - 1)))
    records = []
    for index in range(int(n_images)):
        synthetic = generate_image(image_seed(seed, index), config)
        name = f"synth_{index:0{digits}d}.png"
        path = image_dir / name
        bgr = cv2.cvtColor(synthetic.image, cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(str(path), bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3]):
            raise OSError(f"could not write {path}")
        records.append(synthetic.to_record(f"images/{name}"))
        if progress is not None:
            progress(index + 1, int(n_images))
    return records



def cluster_crops(
    synthetic: SyntheticImage, size: int = 128, pad: float = 0.1
) -> list[tuple[np.ndarray, str]]:
    """Square RGB crops (size x size) centred on each box, with ``pad`` context, and labels.

    The same crop as training and inference (``annotation.crops.crop_box`` with ``pad`` as its
    margin): the square side is the box's longer side plus ``pad`` of it on each side; pixels
    outside the image are filled by repeating the border. Quick classifier training material.
    """
    if size < 1:
        raise ValueError("size must be positive")
    return [(crop_box(synthetic.image, box, size=size, margin=pad), box.label)
            for box in synthetic.boxes]
