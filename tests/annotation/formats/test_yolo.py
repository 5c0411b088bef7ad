"""YOLO: exact round trip, classes.txt, every malformed-input error."""

from __future__ import annotations

import pytest
from hypothesis import given

from annotation.bethesda import BETHESDA
from annotation.formats import FormatError, read_yolo, write_yolo
from annotation.geometry import Box, ImageRecord
from tests.annotation.formats.conftest import ROUND_TRIP, records


def sizes_of(recs: list[ImageRecord]) -> dict[str, tuple[int, int]]:
    return {r.file_name: (r.width, r.height) for r in recs}


@ROUND_TRIP
@given(records())
def test_yolo_round_trip_is_exact(tmp_path_factory, recs):
    out = tmp_path_factory.mktemp("yolo")
    write_yolo(recs, out)
    assert read_yolo(out, sizes_of(recs)) == recs


# --- YOLO ------------------------------------------------------------------------------------------


def test_yolo_writes_classes_one_file_per_image_and_conf_column(tmp_path):
    recs = [
        ImageRecord("imgs/a.png", 200, 100, (Box(50, 25, 100, 50, "ASC-H", 0.25),)),
        ImageRecord("b.jpg", 10, 10),
    ]
    write_yolo(recs, tmp_path)
    assert (tmp_path / "classes.txt").read_text().splitlines() == list(BETHESDA)
    assert (tmp_path / "a.txt").read_text() == "3 0.5 0.5 0.5 0.5 0.25\n"
    assert (tmp_path / "b.txt").read_text() == ""


def test_yolo_image_without_label_file_has_no_boxes(tmp_path):
    assert read_yolo(tmp_path, {"x.png": (10, 20)}) == [ImageRecord("x.png", 10, 20, ())]


def test_yolo_classes_file_maps_ids_by_name(tmp_path):
    (tmp_path / "classes.txt").write_text("hsil\nascus\n")
    (tmp_path / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2 0.2\n")
    (rec,) = read_yolo(tmp_path, {"a.png": (100, 100)})
    assert [b.label for b in rec.boxes] == ["HSIL", "ASC-US"]
    assert rec.boxes[0] == Box(40.0, 40.0, 20.0, 20.0, "HSIL")


def test_yolo_unknown_class_in_classes_file_is_an_error_when_used(tmp_path):
    (tmp_path / "classes.txt").write_text("HSIL\nleukocyte\n")
    (tmp_path / "a.txt").write_text("1 0.5 0.5 0.2 0.2\n")
    with pytest.raises(FormatError, match=r"classes\.txt:2.*leukocyte"):
        read_yolo(tmp_path, {"a.png": (100, 100)})


def test_yolo_wrong_column_count_is_an_error(tmp_path):
    (tmp_path / "a.txt").write_text("1 0.5 0.5 0.2\n")
    with pytest.raises(FormatError, match=r"a\.txt:1: expected"):
        read_yolo(tmp_path, {"a.png": (100, 100)})


def test_yolo_class_id_out_of_range_is_an_error(tmp_path):
    (tmp_path / "a.txt").write_text("6 0.5 0.5 0.2 0.2\n")
    with pytest.raises(FormatError, match="class id 6 is outside 0..5"):
        read_yolo(tmp_path, {"a.png": (100, 100)})


def test_yolo_non_integer_class_is_an_error(tmp_path):
    (tmp_path / "a.txt").write_text("HSIL 0.5 0.5 0.2 0.2\n")
    with pytest.raises(FormatError, match="class id must be a whole number"):
        read_yolo(tmp_path, {"a.png": (100, 100)})


def test_yolo_nan_coordinate_is_an_error(tmp_path):
    (tmp_path / "a.txt").write_text("1 nan 0.5 0.2 0.2\n")
    with pytest.raises(FormatError, match="cx must be finite"):
        read_yolo(tmp_path, {"a.png": (100, 100)})


def test_yolo_box_outside_the_image_is_an_error(tmp_path):
    (tmp_path / "a.txt").write_text("1 0.95 0.5 0.2 0.2\n")
    with pytest.raises(FormatError, match=r"a\.txt:1: box right edge"):
        read_yolo(tmp_path, {"a.png": (100, 100)})


def test_yolo_label_file_without_image_size_is_an_error(tmp_path):
    (tmp_path / "orphan.txt").write_text("1 0.5 0.5 0.2 0.2\n")
    with pytest.raises(FormatError, match=r"orphan\.txt: no image size"):
        read_yolo(tmp_path, {"a.png": (100, 100)})


def test_yolo_two_images_sharing_a_stem_cannot_be_written(tmp_path):
    recs = [ImageRecord("x/a.png", 10, 10), ImageRecord("y/a.png", 10, 10)]
    with pytest.raises(FormatError, match=r"a\.txt"):
        write_yolo(recs, tmp_path)
