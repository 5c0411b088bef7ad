"""Image helpers with no Django import: display conversion and thumbnails."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image as PILImage

THUMB_SIDE = 320


def to_display_rgb(image: PILImage.Image) -> PILImage.Image:
    """An 8-bit RGB view of any accepted mode (16-bit grey is stretched to its own range)."""
    if image.mode.startswith("I;16") or image.mode == "I":
        arr = np.asarray(image, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        return PILImage.fromarray(scaled.astype(np.uint8), "L").convert("RGB")
    if image.mode != "RGB":
        return image.convert("RGB")
    return image


def decode_rgb(data: bytes) -> np.ndarray:
    """An image file's bytes as a contiguous uint8 (H, W, 3) RGB array (display conversion)."""
    with PILImage.open(io.BytesIO(data)) as image:
        return np.ascontiguousarray(np.asarray(to_display_rgb(image)))


def read_pixels(image) -> np.ndarray:
    """An ``annotation.models.Image``'s stored file as uint8 (H, W, 3) RGB, through the file
    field's own storage (any backend; no Django import here). Training and inference read
    pixels with this."""
    with image.file.storage.open(image.file.name, "rb") as handle:
        return decode_rgb(handle.read())


def make_thumbnail(data: bytes, max_side: int = THUMB_SIDE) -> bytes:
    """A JPEG no larger than ``max_side`` on its long side."""
    with PILImage.open(io.BytesIO(data)) as image:
        image.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced scale
        rgb = to_display_rgb(image)
        rgb.thumbnail((max_side, max_side), PILImage.Resampling.LANCZOS)
        out = io.BytesIO()
        rgb.save(out, "JPEG", quality=85, optimize=True)
        return out.getvalue()
