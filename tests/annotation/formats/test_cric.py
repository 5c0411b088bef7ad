"""CRIC: the cric-dev data set, point-to-box scaling and clipping, JSON and CSV errors."""

from __future__ import annotations

import collections
import json
import math

import pytest

from annotation.formats import FormatError, read_cric_csv, read_cric_json
from annotation.geometry import Box, ImageRecord
from tests.annotation.formats.conftest import CRIC_CSV, CRIC_DEV


@pytest.fixture(scope="module")
def cric_records() -> list[ImageRecord]:
    if not CRIC_DEV.exists():
        pytest.skip("cric-dev data set not present")
    return read_cric_json(CRIC_DEV)


def test_cric_dev_has_32_images_and_860_cells(cric_records):
    assert len(cric_records) == 32
    assert sum(len(r.boxes) for r in cric_records) == 860


def test_cric_dev_class_counts(cric_records):
    counts = collections.Counter(b.label for r in cric_records for b in r.boxes)
    assert counts == {"NILM": 487, "ASC-US": 86, "LSIL": 140, "ASC-H": 26, "HSIL": 94, "SCC": 27}


def test_cric_boxes_are_scaled_to_the_official_frame_and_clipped(cric_records):
    raw = json.loads(CRIC_DEV.read_text())
    for image, rec in zip(raw["images"], cric_records, strict=True):
        assert rec.file_name == image["file"] and rec.file_name.startswith("images/")
        side = 100.0 * image["scale_from_cric"]
        for cell, box in zip(image["cells"], rec.boxes, strict=True):
            assert box == box.validated(rec.width, rec.height)
            assert box.width <= side + 1e-6 and box.height <= side + 1e-6
            if box.x > 0 and box.x2 < rec.width:  # not clipped: centred on the nucleus
                assert math.isclose(box.width, side, abs_tol=1e-6)
                assert math.isclose(box.center[0], cell["x"], abs_tol=1e-6)


def test_cric_json_without_scale_uses_width_over_reference_width():
    data = {
        "images": [
            {
                "file": "a.png",
                "width": 688,
                "height": 510,
                "cells": [{"cell_id": 1, "label": "ASC-H", "x": 300, "y": 200}],
            }
        ]
    }
    (rec,) = read_cric_json(data)
    assert rec.boxes == (Box(275.0, 175.0, 50.0, 50.0, "ASC-H"),)


def test_cric_json_box_near_the_edge_is_clipped():
    data = {
        "images": [
            {
                "file": "a.png",
                "width": 1376,
                "height": 1020,
                "scale_from_cric": 1.0,
                "cells": [{"cell_id": 1, "label": "SCC", "x": 10.5, "y": 1000}],
            }
        ]
    }
    (rec,) = read_cric_json(data)
    assert rec.boxes == (Box(0.0, 950.0, 60.5, 70.0, "SCC"),)


def test_cric_json_unknown_label_names_the_cell():
    data = {
        "images": [
            {
                "file": "a.png",
                "width": 100,
                "height": 100,
                "cells": [{"cell_id": 77, "label": "koilocyte", "x": 5, "y": 5}],
            }
        ]
    }
    with pytest.raises(FormatError, match="cell_id 77.*koilocyte"):
        read_cric_json(data)


def test_cric_json_point_outside_the_image_is_an_error():
    data = {
        "images": [
            {
                "file": "a.png",
                "width": 100,
                "height": 100,
                "cells": [{"cell_id": 1, "label": "SCC", "x": 150, "y": 5}],
            }
        ]
    }
    with pytest.raises(FormatError, match="outside the 100x100 image"):
        read_cric_json(data)


def test_cric_csv_groups_rows_by_image_and_maps_labels(tmp_path):
    path = tmp_path / "classifications.csv"
    path.write_text(CRIC_CSV)
    recs = read_cric_csv(path, {"a.png": (1376, 1020), "b.png": (1376, 1020)})
    assert [r.file_name for r in recs] == ["a.png", "b.png"]
    assert recs[0].boxes == (
        Box(250.0, 150.0, 100.0, 100.0, "NILM"),
        Box(1320.0, 965.0, 56.0, 55.0, "HSIL"),
    )
    assert recs[1].boxes == (Box(650.0, 450.0, 100.0, 100.0, "ASC-US"),)


def test_cric_csv_scales_points_for_resized_frames(tmp_path):
    path = tmp_path / "classifications.csv"
    path.write_text(CRIC_CSV)
    recs = read_cric_csv(path, {"a.png": (688, 510)}, skip_missing=True)
    assert [r.file_name for r in recs] == ["a.png"]
    assert recs[0].boxes[0] == Box(125.0, 75.0, 50.0, 50.0, "NILM")


def test_cric_csv_image_without_size_is_an_error(tmp_path):
    path = tmp_path / "classifications.csv"
    path.write_text(CRIC_CSV)
    with pytest.raises(
        FormatError, match=r"classifications\.csv:3: no image size given for 'b.png'"
    ):
        read_cric_csv(path, {"a.png": (1376, 1020)})


def test_cric_csv_bad_number_is_an_error(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("image_filename,bethesda_system,nucleus_x,nucleus_y\na.png,SCC,12x,5\n")
    with pytest.raises(FormatError, match=r"c\.csv:2: nucleus_x must be a number"):
        read_cric_csv(path, {"a.png": (1376, 1020)})


def test_cric_csv_missing_column_is_an_error(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("image_filename,nucleus_x,nucleus_y\na.png,1,2\n")
    with pytest.raises(FormatError, match="missing column.*bethesda_system"):
        read_cric_csv(path, {"a.png": (1376, 1020)})
