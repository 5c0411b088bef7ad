"""make_synthetic as a person runs it: images plus COCO ground truth, clear errors."""

import json

from annotation.formats import read_coco
from tests.helpers import manage


def test_make_synthetic_writes_images_and_coco_that_reads_back(tmp_path):
    out = tmp_path / "synth"
    result = manage("make_synthetic", str(out), "--images", "2", "--seed", "3", "--size", "320x240")
    assert result.returncode == 0, result.stderr
    records = read_coco(out / "annotations.json")
    assert [r.file_name for r in records] == ["images/synth_00000.png", "images/synth_00001.png"]
    assert all((out / r.file_name).exists() and (r.width, r.height) == (320, 240) for r in records)
    assert sum(len(r.boxes) for r in records) >= 2
    assert json.loads((out / "annotations.json").read_text())["categories"][0]["name"] == "NILM"


def test_make_synthetic_refuses_a_bad_size_with_one_line(tmp_path):
    result = manage("make_synthetic", str(tmp_path / "x"), "--images", "1", "--size", "12x12")
    assert result.returncode != 0
    assert "size" in result.stderr.lower() and "Traceback" not in result.stderr
