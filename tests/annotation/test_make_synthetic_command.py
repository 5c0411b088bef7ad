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


def test_make_synthetic_grade_mix_draws_only_the_weighted_grades(tmp_path):
    out = tmp_path / "synth"
    result = manage("make_synthetic", str(out), "--images", "3", "--size", "640x480",
                    "--grade-mix", "0,0,1,0,0,3")
    assert result.returncode == 0, result.stderr
    labels = {box.label for record in read_coco(out / "annotations.json") for box in record.boxes}
    assert labels and labels <= {"LSIL", "SCC"}


def test_make_synthetic_refuses_a_bad_grade_mix_with_one_line(tmp_path):
    for mix, words in (("1,2,3", "needs 6 weights"), ("1,1,1,1,1,x", "numbers"),
                       ("1,1,1,1,1,-1", "not negative"), ("0,0,0,0,0,0", "not all zero")):
        result = manage("make_synthetic", str(tmp_path / "x"), "--images", "1", "--grade-mix", mix)
        assert result.returncode != 0
        assert words in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert not (tmp_path / "x").exists()
