"""Annotation formats: exact round trips, foreign files, every malformed-input error, CRIC data."""

from __future__ import annotations

import collections
import io
import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from annotation.bethesda import BETHESDA
from annotation.formats import (
    FormatError,
    default_image_url,
    detect_format,
    file_name_from_ls_url,
    ls_value_to_box,
    pixels_to_ls_value,
    quantize,
    read_coco,
    read_cric_csv,
    read_cric_json,
    read_label_studio,
    read_yolo,
    to_coco,
    to_label_studio,
    write_coco,
    write_label_studio,
    write_yolo,
)
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


def sizes_of(recs: list[ImageRecord]) -> dict[str, tuple[int, int]]:
    return {r.file_name: (r.width, r.height) for r in recs}


# --- exact round trips ---------------------------------------------------------------------------------


@ROUND_TRIP
@given(records())
def test_coco_dict_round_trip_is_exact(recs):
    assert read_coco(to_coco(recs)) == recs


@ROUND_TRIP
@given(records())
def test_coco_file_round_trip_is_exact(recs):
    buffer = io.StringIO()
    write_coco(recs, buffer)
    assert read_coco(io.StringIO(buffer.getvalue())) == recs


@ROUND_TRIP
@given(records())
def test_yolo_round_trip_is_exact(tmp_path_factory, recs):
    out = tmp_path_factory.mktemp("yolo")
    write_yolo(recs, out)
    assert read_yolo(out, sizes_of(recs)) == recs


@ROUND_TRIP
@given(records())
def test_label_studio_annotations_round_trip_is_exact(recs):
    assert read_label_studio(to_label_studio(recs)) == recs


@ROUND_TRIP
@given(records())
def test_label_studio_predictions_round_trip_is_exact(recs):
    tasks = json.loads(json.dumps(to_label_studio(recs, which="predictions", model_version="v1")))
    assert read_label_studio(tasks, which="predictions") == recs


@ROUND_TRIP
@given(st.sampled_from(SIZES).flatmap(lambda size: st.tuples(st.just(size), boxes_in(*size))))
def test_pixels_to_percent_and_back_is_exact(case):
    (width, height), box = case
    value = pixels_to_ls_value(box, width, height)
    assert ls_value_to_box(value, width, height, score=box.score) == box


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


def test_percent_of_the_whole_image_is_100():
    value = pixels_to_ls_value(Box(0, 0, 1636, 1088, "LSIL"), 1636, 1088)
    assert (value["x"], value["y"], value["width"], value["height"]) == (0.0, 0.0, 100.0, 100.0)
    assert value["rectanglelabels"] == ["LSIL"]


# --- COCO ------------------------------------------------------------------------------------------


def coco_with(annotations, categories=None, images=None) -> dict:
    return {
        "images": images or [{"id": 1, "file_name": "a.png", "width": 100, "height": 80}],
        "annotations": annotations,
        "categories": categories or [{"id": i + 1, "name": n} for i, n in enumerate(BETHESDA)],
    }


def ann(bbox=(10, 10, 20, 20), category_id=5, **extra) -> dict:
    return {"id": 1, "image_id": 1, "category_id": category_id, "bbox": list(bbox), **extra}


def test_coco_export_has_bethesda_categories_and_required_fields():
    rec = ImageRecord("a.png", 100, 80, (Box(1, 2, 3, 4, "hsil", 0.5), Box(5, 6, 7, 8, "NILM")))
    data = to_coco([rec, ImageRecord("b.png", 10, 10)], info={"version": "7"})
    assert data["info"] == {"version": "7"}
    assert [(c["id"], c["name"]) for c in data["categories"]] == list(
        zip(range(1, 7), BETHESDA, strict=True)
    )
    assert data["images"][1] == {"id": 2, "file_name": "b.png", "width": 10, "height": 10}
    first, second = data["annotations"]
    assert first == {
        "id": 1,
        "image_id": 1,
        "category_id": 5,
        "bbox": [1.0, 2.0, 3.0, 4.0],
        "area": 12.0,
        "iscrowd": 0,
        "score": 0.5,
    }
    assert "score" not in second and second["category_id"] == 1


def test_coco_export_loads_in_pycocotools():
    from pycocotools.coco import COCO

    rec = ImageRecord("a.png", 100, 80, (Box(1, 2, 3, 4, "SCC"),))
    coco = COCO()
    coco.dataset = to_coco([rec])
    coco.createIndex()
    assert coco.loadCats(coco.getCatIds())[5]["name"] == "SCC"
    assert coco.loadAnns(coco.getAnnIds(imgIds=[1]))[0]["bbox"] == [1.0, 2.0, 3.0, 4.0]


def test_foreign_coco_maps_categories_by_name():
    data = coco_with(
        [
            ann(category_id=30, id=7),
            ann(category_id=10, id=8),
            {"id": 9, "image_id": "img-b", "category_id": 20, "bbox": [0, 0, 5, 5], "iscrowd": 0},
        ],
        categories=[
            {"id": 10, "name": "Negative for intraepithelial lesion"},
            {"id": 20, "name": "ascus"},
            {"id": 30, "name": "hsil"},
            {"id": 40, "name": "leukocyte"},  # unused: ignored
        ],
        images=[
            {"id": 1, "file_name": "a.png", "width": 100, "height": 80},
            {"id": "img-b", "file_name": "b.png", "width": 50, "height": 50},
            {"id": 3, "file_name": "empty.png", "width": 10, "height": 10},
        ],
    )
    result = read_coco(data)
    assert [[b.label for b in r.boxes] for r in result] == [["HSIL", "NILM"], ["ASC-US"], []]
    assert result[2] == ImageRecord("empty.png", 10, 10, ())


def test_coco_unknown_category_names_it():
    data = coco_with([ann(category_id=4)], categories=[{"id": 4, "name": "leukocyte"}])
    with pytest.raises(FormatError, match="leukocyte"):
        read_coco(data)


def test_coco_missing_images_key_is_an_error():
    with pytest.raises(FormatError, match="missing key 'images'"):
        read_coco({"annotations": []})


def test_coco_annotation_missing_bbox_is_an_error():
    bad = ann()
    del bad["bbox"]
    with pytest.raises(FormatError, match="missing key 'bbox'"):
        read_coco(coco_with([bad]))


def test_coco_bbox_with_text_is_a_bad_number():
    with pytest.raises(FormatError, match=r"bbox\[2\] must be a number"):
        read_coco(coco_with([ann(bbox=(1, 2, "3", 4))]))


def test_coco_bbox_of_wrong_length_is_an_error():
    with pytest.raises(FormatError, match="bbox must be 4 numbers"):
        read_coco(coco_with([ann(bbox=(1, 2, 3))]))


def test_coco_nan_in_file_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "nan.json"
    path.write_text(json.dumps(coco_with([ann(bbox=(1, float("nan"), 3, 4))])))
    with pytest.raises(FormatError, match=r"nan\.json.*finite"):
        read_coco(path)


def test_coco_box_outside_the_image_is_an_error():
    with pytest.raises(FormatError, match="past the image width"):
        read_coco(coco_with([ann(bbox=(90, 10, 20, 20))]))


def test_coco_annotation_for_unknown_image_is_an_error():
    with pytest.raises(FormatError, match="image_id 2 is not in 'images'"):
        read_coco(coco_with([ann(image_id=2)]))


def test_coco_annotation_with_undeclared_category_is_an_error():
    with pytest.raises(FormatError, match="category_id 99"):
        read_coco(coco_with([ann(category_id=99)]))


def test_coco_crowd_annotation_is_an_error():
    with pytest.raises(FormatError, match="iscrowd"):
        read_coco(coco_with([ann(iscrowd=1)]))


def test_coco_score_out_of_range_is_an_error():
    with pytest.raises(FormatError, match="score"):
        read_coco(coco_with([ann(score=1.5)]))


def test_coco_duplicate_file_names_are_an_error():
    images = [
        {"id": 1, "file_name": "a.png", "width": 10, "height": 10},
        {"id": 2, "file_name": "a.png", "width": 10, "height": 10},
    ]
    with pytest.raises(FormatError, match="appears twice"):
        read_coco(coco_with([], images=images))


def test_coco_image_without_size_is_an_error():
    with pytest.raises(FormatError, match="missing key 'width'"):
        read_coco(coco_with([], images=[{"id": 1, "file_name": "a.png", "height": 3}]))


def test_coco_invalid_json_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(FormatError, match=r"broken\.json: not valid JSON"):
        read_coco(path)


def test_writer_refuses_a_box_outside_its_image():
    with pytest.raises(FormatError, match=r"a\.png: box 0"):
        to_coco([ImageRecord("a.png", 10, 10, (Box(5, 5, 10, 1, "SCC"),))])


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


# --- Label Studio ----------------------------------------------------------------------------------


def test_label_studio_task_shape():
    rec = ImageRecord("dir/a b.png", 200, 100, (Box(20, 10, 40, 30, "HSIL"),))
    (task,) = to_label_studio([rec], completed_by=3)
    assert task["data"]["image"] == "/data/local-files/?d=dir/a%20b.png"
    (annotation,) = task["annotations"]
    assert annotation["completed_by"] == 3
    (result,) = annotation["result"]
    assert {
        k: result[k]
        for k in (
            "from_name",
            "to_name",
            "type",
            "original_width",
            "original_height",
            "image_rotation",
        )
    } == {
        "from_name": "cluster",
        "to_name": "image",
        "type": "rectanglelabels",
        "original_width": 200,
        "original_height": 100,
        "image_rotation": 0,
    }
    assert result["value"] == {
        "x": 10.0,
        "y": 10.0,
        "width": 20.0,
        "height": 30.0,
        "rotation": 0,
        "rectanglelabels": ["HSIL"],
    }
    assert task["predictions"] == []


def test_label_studio_file_round_trip(tmp_path):
    recs = [ImageRecord("a.png", 1376, 1020, (Box(1.5, 2.25, 30, 40.125, "SCC", 0.75),))]
    path = tmp_path / "export.json"
    write_label_studio(recs, path)
    assert read_label_studio(path) == recs


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("/data/local-files/?d=some/dir/file.png", "some/dir/file.png"),
        ("http://ls:8080/data/local-files/?d=dir/a%20b%2Bc.png", "dir/a b+c.png"),
        ("/data/upload/12/1a2b3c4d-cells.png", "cells.png"),
        ("https://bucket.s3.amazonaws.com/slides/x%201.jpg?X-Amz-Signature=abc", "x 1.jpg"),
        ("s3://bucket/slides/y.tif", "y.tif"),
    ],
)
def test_file_name_from_label_studio_urls(url, name):
    assert file_name_from_ls_url(url) == name


def test_default_image_url_maps_back_to_the_file_name():
    rec = ImageRecord("dir/ä #1?&.png", 1, 1)
    assert file_name_from_ls_url(default_image_url(rec)) == rec.file_name


def ls_task(*entries, which="annotations", data=None) -> dict:
    return {
        "id": 1,
        "data": data or {"image": "/data/upload/1/abcdef12-a.png"},
        which: list(entries),
    }


def ls_result(x=10.0, label="HSIL", **extra) -> dict:
    result = {
        "type": "rectanglelabels",
        "from_name": "cluster",
        "to_name": "image",
        "original_width": 200,
        "original_height": 100,
        "value": {
            "x": x,
            "y": 10.0,
            "width": 20.0,
            "height": 20.0,
            "rotation": 0,
            "rectanglelabels": [label],
        },
    }
    result.update(extra)
    return result


def test_label_studio_reads_foreign_export_ignoring_other_controls():
    task = ls_task(
        {
            "result": [ls_result(), {"type": "choices", "value": {"choices": ["ok"]}}],
            "completed_by": {"id": 4, "email": "p@lab"},
        }
    )
    (rec,) = read_label_studio([task])
    assert rec == ImageRecord("a.png", 200, 100, (Box(20.0, 10.0, 40.0, 20.0, "HSIL"),))


def test_label_studio_several_annotators_need_a_choice():
    task = ls_task(
        {"result": [ls_result()], "completed_by": 1},
        {"result": [ls_result(label="LSIL")], "completed_by": {"id": 2, "email": "b@lab"}},
    )
    with pytest.raises(FormatError, match="2 annotations; pass completed_by="):
        read_label_studio([task])
    (rec,) = read_label_studio([task], completed_by="b@lab")
    assert [b.label for b in rec.boxes] == ["LSIL"]


def test_label_studio_cancelled_annotations_are_skipped():
    task = ls_task({"result": [ls_result()], "was_cancelled": True}, {"result": []})
    (rec,) = read_label_studio([task], image_sizes={"a.png": (200, 100)})
    assert rec.boxes == ()


def test_label_studio_prediction_score_applies_to_unscored_results():
    task = ls_task(
        {"result": [ls_result(), ls_result(x=50.0, score=0.9)], "score": 0.4}, which="predictions"
    )
    (rec,) = read_label_studio([task], which="predictions")
    assert [b.score for b in rec.boxes] == [0.4, 0.9]


def test_label_studio_unknown_size_is_an_error():
    with pytest.raises(FormatError, match="image size unknown for 'a.png'"):
        read_label_studio([ls_task({"result": []})])


def test_label_studio_rotated_rectangle_is_an_error():
    result = ls_result()
    result["value"]["rotation"] = 30
    with pytest.raises(FormatError, match="rotated"):
        read_label_studio([ls_task({"result": [result]})])


def test_label_studio_unknown_label_is_an_error():
    with pytest.raises(FormatError, match="leukocyte"):
        read_label_studio([ls_task({"result": [ls_result(label="leukocyte")]})])


def test_label_studio_box_outside_the_image_is_an_error():
    with pytest.raises(FormatError, match="past the image width"):
        read_label_studio([ls_task({"result": [ls_result(x=90.0)]})])


def test_label_studio_missing_data_is_an_error():
    with pytest.raises(FormatError, match="task 7: missing key 'data'"):
        read_label_studio([{"id": 7, "annotations": []}])


def test_label_studio_missing_value_field_is_an_error():
    result = ls_result()
    del result["value"]["width"]
    with pytest.raises(FormatError, match="missing key 'width'"):
        read_label_studio([ls_task({"result": [result]})])


# --- CRIC ------------------------------------------------------------------------------------------


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


CRIC_CSV = """cell_id,image_id,image_filename,image_doi,nucleus_x,nucleus_y,bethesda_system
1,10,a.png,doi:1,300,200,Negative for intraepithelial lesion
2,11,b.png,doi:2,700,500,ASC-US
3,10,a.png,doi:1,1370,1015,HSIL
"""


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


# --- detect_format ------------------------------------------------------------------------------------


def test_detect_format_recognises_each_format(tmp_path):
    recs = [ImageRecord("a.png", 100, 100, (Box(1, 1, 5, 5, "SCC"),))]
    write_coco(recs, tmp_path / "coco.json")
    write_label_studio(recs, tmp_path / "ls.json")
    write_yolo(recs, tmp_path / "yolo")
    (tmp_path / "cric.json").write_text(
        json.dumps(
            {
                "labels": list(BETHESDA),
                "images": [{"file": "a.png", "width": 9, "height": 9, "cells": []}],
            }
        )
    )
    (tmp_path / "cric.csv").write_text(CRIC_CSV)
    assert detect_format(tmp_path / "coco.json") == "coco"
    assert detect_format(tmp_path / "ls.json") == "labelstudio"
    assert detect_format(tmp_path / "yolo") == "yolo"
    assert detect_format(tmp_path / "cric.json") == "cric_json"
    assert detect_format(tmp_path / "cric.csv") == "cric_csv"


def test_detect_format_on_real_cric_dev():
    if not CRIC_DEV.exists():
        pytest.skip("cric-dev data set not present")
    assert detect_format(CRIC_DEV) == "cric_json"


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("x.json", '{"hello": 1}'),
        ("x.json", "[]"),
        ("x.csv", "a,b\n1,2\n"),
        ("x.xml", "<annotation/>"),
        ("x.txt", "0 0.5 0.5 0.1 0.1\n"),
    ],
)
def test_detect_format_unknown_content_is_an_error(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(FormatError, match=name.replace(".", r"\.")):
        detect_format(path)


def test_detect_format_empty_folder_is_an_error(tmp_path):
    with pytest.raises(FormatError, match="no .txt label files"):
        detect_format(tmp_path)
