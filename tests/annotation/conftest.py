"""Fixtures for dataset/image tests: isolated media storage and small real image files."""

import io

import numpy as np
import pytest
from PIL import Image as PILImage


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
