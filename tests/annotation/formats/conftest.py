"""Shared by the format tests: hypothesis strategies for records on the micro-pixel grid, the
round-trip settings, and the CRIC data (the cric-dev set, a small classifications CSV)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from annotation.bethesda import BETHESDA
from annotation.geometry import Box, ImageRecord

CRIC_DEV = Path("/work/shared/data/cric-dev/annotations.json")
SIZES = [(1636, 1088), (1376, 1020), (1280, 959)]

# --- strategies: records on the micro-pixel grid ---------------------------------------------------

MICRO = 1_000_000


@st.composite
def boxes_in(draw, width: int, height: int, scored: bool | None = None) -> Box:
    x = draw(st.integers(0, width * MICRO - 1))
    y = draw(st.integers(0, height * MICRO - 1))
    w = draw(st.integers(1, width * MICRO - x))
    h = draw(st.integers(1, height * MICRO - y))
    label = draw(st.sampled_from(BETHESDA))
    if scored is None:
        score = draw(st.none() | st.floats(0.0, 1.0))
    else:
        score = draw(st.floats(0.0, 1.0)) if scored else None
    return Box(x / MICRO, y / MICRO, w / MICRO, h / MICRO, label, score)


@st.composite
def records(draw, scored: bool | None = None, max_images: int = 4) -> list[ImageRecord]:
    count = draw(st.integers(0, max_images))
    result = []
    for index in range(count):
        width, height = draw(
            st.sampled_from(SIZES) | st.tuples(st.integers(1, 5000), st.integers(1, 5000))
        )
        stem = draw(st.sampled_from(["cells", "slide 1", "a+b%c", "Ünïcode", "x.y"]))
        name = f"dir{index}/{stem}_{index}.{draw(st.sampled_from(['png', 'jpg', 'tif']))}"
        boxes = draw(st.lists(boxes_in(width, height, scored), max_size=6))
        result.append(ImageRecord(name, width, height, tuple(boxes)))
    return result


ROUND_TRIP = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


CRIC_CSV = """cell_id,image_id,image_filename,image_doi,nucleus_x,nucleus_y,bethesda_system
1,10,a.png,doi:1,300,200,Negative for intraepithelial lesion
2,11,b.png,doi:2,700,500,ASC-US
3,10,a.png,doi:1,1370,1015,HSIL
"""
