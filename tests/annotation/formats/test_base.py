"""Format basics (annotation.formats.base): coordinates quantised once, writers validate boxes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from annotation.formats import FormatError, quantize, read_coco, to_coco
from annotation.geometry import Box, ImageRecord
from tests.annotation.formats.conftest import ROUND_TRIP, SIZES


@ROUND_TRIP
@given(
    st.sampled_from(SIZES),
    st.floats(0, 1, exclude_max=True),
    st.floats(0, 1, exclude_max=True),
    st.floats(0.001, 1),
    st.floats(0.001, 1),
)
def test_arbitrary_floats_are_quantised_once_then_stable(size, fx, fy, fw, fh):
    width, height = size
    x, y = fx * width, fy * height
    box = Box(x, y, min(fw * width, width - x), min(fh * height, height - y), "HSIL")
    if quantize(box.width) <= 0 or quantize(box.height) <= 0:
        return
    once = read_coco(to_coco([ImageRecord("a.png", width, height, (box,))]))
    (read_box,) = once[0].boxes
    assert all(
        abs(a - b) <= 5e-7
        for a, b in zip(
            (read_box.x, read_box.y, read_box.width, read_box.height),
            (box.x, box.y, box.width, box.height),
            strict=True,
        )
    )
    assert read_coco(to_coco(once)) == once


def test_writer_refuses_a_box_outside_its_image():
    with pytest.raises(FormatError, match=r"a\.png: box 0"):
        to_coco([ImageRecord("a.png", 10, 10, (Box(5, 5, 10, 1, "SCC"),))])
