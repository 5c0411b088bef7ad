"""COCO: exact round trips, foreign files, every malformed-input error."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import given

from annotation.bethesda import BETHESDA
from annotation.formats import FormatError, read_coco, to_coco, write_coco
from annotation.geometry import Box, ImageRecord
from tests.annotation.formats.conftest import ROUND_TRIP, records


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
