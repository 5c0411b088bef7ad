"""Label Studio: exact round trips, percent values, task URLs, foreign exports, malformed input."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from annotation.formats import (
    FormatError,
    default_image_url,
    file_name_from_ls_url,
    ls_value_to_box,
    pixels_to_ls_value,
    read_label_studio,
    to_label_studio,
    write_label_studio,
)
from annotation.geometry import Box, ImageRecord
from tests.annotation.formats.conftest import ROUND_TRIP, SIZES, boxes_in, records


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


def test_percent_of_the_whole_image_is_100():
    value = pixels_to_ls_value(Box(0, 0, 1636, 1088, "LSIL"), 1636, 1088)
    assert (value["x"], value["y"], value["width"], value["height"]) == (0.0, 0.0, 100.0, 100.0)
    assert value["rectanglelabels"] == ["LSIL"]


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
