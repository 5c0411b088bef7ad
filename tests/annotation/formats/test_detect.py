"""detect_format: each format recognised from its file, unknown content refused."""

from __future__ import annotations

import json

import pytest

from annotation.bethesda import BETHESDA
from annotation.formats import (
    FormatError,
    detect_format,
    write_coco,
    write_label_studio,
    write_yolo,
)
from annotation.geometry import Box, ImageRecord
from tests.annotation.formats.conftest import CRIC_CSV, CRIC_DEV


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
