"""Import, validation at the service level, exports and their exact round trips."""

import io
import json
import zipfile
from pathlib import Path

import pytest
from django.core.files.storage import default_storage

from annotation.formats import to_coco
from annotation.geometry import Box, ImageRecord
from annotation.models import Dataset, GroundTruthBox, Image, PredictionBox
from annotation.selectors import dataset_records
from annotation.services import ensure_dataset, export_dataset, import_images
from annotation.validation import Limits
from tests.annotation.conftest import png_bytes
from tests.helpers import manage

pytestmark = pytest.mark.django_db
CRIC = Path(__file__).resolve().parents[3] / "shared" / "data" / "cric-dev"


def _files_in_storage(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def _dataset(name="ds"):
    return ensure_dataset(name=name)[0]


def test_each_bad_file_is_skipped_with_its_reason_and_good_files_go_in(tmp_path, media_root):
    folder = tmp_path / "in"
    folder.mkdir()
    good = png_bytes(1)
    (folder / "good.png").write_bytes(good)
    (folder / "copy-of-good.png").write_bytes(good)
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.jpg").write_bytes(b"this is not a jpeg at all")
    (folder / "truncated.png").write_bytes(png_bytes(2)[:200])
    from PIL import Image as PILImage

    bomb = io.BytesIO()
    PILImage.new("RGB", (400, 400)).save(bomb, "PNG")  # few bytes, many pixels
    (folder / "huge.png").write_bytes(bomb.getvalue())
    (folder / "notes.txt").write_text("ignored: not an image extension")
    cmyk = io.BytesIO()

    PILImage.new("CMYK", (8, 8)).save(cmyk, "JPEG")
    (folder / "cmyk.jpg").write_bytes(cmyk.getvalue())
    (folder / "big.png").write_bytes(png_bytes(4, size=(300, 300)))

    report = import_images(dataset=_dataset(), path=folder,
                           limits=Limits(max_pixels=100_000, max_bytes=200_000))
    reasons = {s.name: s.reason for s in report.skipped}
    assert report.imported == ["copy-of-good.png"] or report.imported == ["good.png"]
    assert reasons == {
        ("good.png" if report.imported == ["copy-of-good.png"] else "copy-of-good.png"): "duplicate",
        "empty.png": "empty",
        "text.jpg": "not_an_image",
        "truncated.png": "corrupt",
        "huge.png": "too_many_pixels",
        "cmyk.jpg": "unsupported_mode",
        "big.png": "too_large",
    }
    for s in report.skipped:
        assert s.name in s.message  # each line names its file and says why
    assert Image.objects.count() == 1
    image = Image.objects.get()
    assert (image.width, image.height) == (64, 48)
    # stored: the image and its thumbnail, nothing for the skipped files
    assert len(_files_in_storage(media_root)) == 2
    assert "1 image(s) imported" in report.summary() and "7 skipped" in report.summary()


def test_zip_members_with_unsafe_names_are_refused(tmp_path):
    archive = tmp_path / "batch.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("cells/a.png", png_bytes(10))
        zf.writestr("../escape.png", png_bytes(11))
        zf.writestr("/etc/abs.png", png_bytes(12))
    report = import_images(dataset=_dataset(), path=archive)
    assert report.imported == ["cells/a.png"]
    assert sorted(s.reason for s in report.skipped) == ["unsafe_name", "unsafe_name"]
    assert not (tmp_path.parent / "escape.png").exists()


def test_reimporting_the_same_folder_adds_nothing(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.png").write_bytes(png_bytes(20 + i))
    ds = _dataset()
    assert len(import_images(dataset=ds, path=folder).imported) == 3
    again = import_images(dataset=ds, path=folder)
    assert again.imported == [] and {s.reason for s in again.skipped} == {"duplicate"}
    assert Image.objects.count() == 3


def test_a_failure_while_storing_one_file_leaves_no_row_and_no_orphan_file(
    tmp_path, media_root, monkeypatch
):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(png_bytes(30))
    (folder / "b.png").write_bytes(png_bytes(31))
    (folder / "c.png").write_bytes(png_bytes(32))
    real_bulk_create = GroundTruthBox.objects.bulk_create

    def failing_bulk_create(objs, *args, **kwargs):
        objs = list(objs)
        if objs and objs[0].image.original_name == "b.png":
            raise RuntimeError("disk full")
        return real_bulk_create(objs, *args, **kwargs)

    monkeypatch.setattr(GroundTruthBox.objects, "bulk_create", failing_bulk_create)
    records = [ImageRecord(n, 64, 48, (Box(1, 1, 10, 10, "HSIL"),)) for n in ("a.png", "b.png", "c.png")]
    ann = tmp_path / "coco.json"
    ann.write_text(json.dumps(to_coco(records)))
    report = import_images(dataset=_dataset(), path=folder, annotations=ann)

    assert report.imported == ["a.png", "c.png"]
    assert [(s.name, s.reason) for s in report.skipped] == [("b.png", "error")]
    assert "disk full" in report.skipped[0].message
    assert not Image.objects.filter(original_name="b.png").exists()
    assert GroundTruthBox.objects.count() == 2
    stored = {p.name for p in _files_in_storage(media_root)}
    assert len(stored) == 4  # a and c: image + thumbnail each; nothing of b


def test_a_malformed_annotation_file_stops_before_anything_is_written(tmp_path, media_root):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(png_bytes(40))
    ann = tmp_path / "bad.json"
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}],
                               "annotations": [{"id": 1, "image_id": 1, "category_id": 99,
                                                "bbox": [1, 1, 5, 5]}],
                               "categories": [{"id": 99, "name": "Carcinoid"}]}))
    from annotation.formats import FormatError

    with pytest.raises(FormatError, match="Carcinoid"):
        import_images(dataset=_dataset(), path=folder, annotations=ann)
    assert not Image.objects.exists()
    assert _files_in_storage(media_root) == []


def test_boxes_outside_the_image_are_refused_with_a_line_and_the_image_kept(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(png_bytes(50))
    ann = tmp_path / "coco.json"
    # the annotation file claims a bigger image: one box falls outside the real 64x48 pixels
    ann.write_text(json.dumps(to_coco([ImageRecord("a.png", 640, 480, (
        Box(2, 2, 10, 10, "LSIL"), Box(100, 100, 20, 20, "SCC"))),
    ])))
    report = import_images(dataset=_dataset(), path=folder, annotations=ann)
    assert report.imported == ["a.png"] and report.boxes == 1
    assert any("past the image width" in line for line in report.box_problems)


def test_annotations_can_be_imported_as_predictions(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(png_bytes(60))
    ann = tmp_path / "preds.json"
    ann.write_text(json.dumps(to_coco([ImageRecord("a.png", 64, 48, (Box(2, 2, 10, 10, "HSIL", 0.83),))])))
    report = import_images(dataset=_dataset(), path=folder, annotations=ann,
                           as_predictions=True, model_version="yolo-ext-1")
    assert report.predictions == 1 and report.boxes == 0
    pred = PredictionBox.objects.get()
    assert (pred.label, pred.score, pred.model_version) == ("HSIL", 0.83, "yolo-ext-1")
    assert not GroundTruthBox.objects.exists()


@pytest.mark.parametrize("fmt", ["coco", "yolo", "labelstudio"])
def test_export_then_import_round_trips_exactly(tmp_path, fmt):
    folder = tmp_path / "src"
    (folder / "sub").mkdir(parents=True)
    names = ["a.png", "sub/b.png", "c.png"]
    for i, name in enumerate(names):
        (folder / name).write_bytes(png_bytes(70 + i, size=(97, 61)))
    import random

    rng = random.Random(7)
    labels = ["NILM", "ASC-US", "LSIL", "ASC-H", "HSIL", "SCC"]
    records = []
    for name in names:
        boxes = []
        for _ in range(rng.randint(0, 4)):
            w, h = rng.uniform(1, 30), rng.uniform(1, 20)
            boxes.append(Box(round(rng.uniform(0, 97 - w), 6), round(rng.uniform(0, 61 - h), 6),
                             round(w, 6), round(h, 6), rng.choice(labels)))
        records.append(ImageRecord(name, 97, 61, tuple(boxes)))
    ann = tmp_path / "truth.json"
    ann.write_text(json.dumps(to_coco(records)))
    original = _dataset("original")
    import_images(dataset=original, path=folder, annotations=ann)

    out = tmp_path / "export"
    target = export_dataset(dataset=original, out_dir=out, fmt=fmt)
    copy = _dataset("copy")
    report = import_images(dataset=copy, path=out, annotations=target)
    assert len(report.imported) == 3 and not report.skipped and not report.box_problems

    def as_sets(ds):
        return {r.file_name: (r.width, r.height, sorted(r.boxes, key=repr)) for r in dataset_records(ds)}

    assert as_sets(copy) == as_sets(original)
    assert sum(len(r.boxes) for r in records) == GroundTruthBox.objects.filter(image__dataset=copy).count()


@pytest.mark.skipif(not CRIC.exists(), reason="CRIC dev set not present")
def test_cric_points_become_reviewable_boxes_centred_on_each_nucleus():
    ds = _dataset("cric")
    report = import_images(dataset=ds, path=CRIC / "images", annotations=CRIC / "annotations.json")
    assert len(report.imported) == 32
    # file names in annotations.json are "images/<hash>.png"; matched by base name here
    assert report.boxes == 860 and not report.unmatched_annotations
    counts = dict(GroundTruthBox.objects.filter(image__dataset=ds).values_list("label").annotate(
        n=__import__("django.db.models", fromlist=["Count"]).Count("id")))
    assert counts == {"NILM": 487, "ASC-US": 86, "LSIL": 140, "ASC-H": 26, "HSIL": 94, "SCC": 27}
    box = GroundTruthBox.objects.filter(image__dataset=ds, image__width=1376).exclude(x=0).first()
    assert box.from_point and box.width == pytest.approx(100.0)
    assert box.point_x == pytest.approx(box.x + 50.0)


def test_import_command_prints_a_line_per_bad_file_and_a_summary(tmp_path, transactional_db):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "ok.png").write_bytes(png_bytes(80))
    (folder / "bad.png").write_bytes(png_bytes(81)[:300])  # truncated
    env_media = {"MEDIA_ROOT": str(tmp_path / "media")}
    from tests.helpers import child_env

    result = manage("import_images", str(folder), "--dataset", "cmd-ds", env={**child_env(), **env_media})
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    assert "skipped bad.png:" in out
    assert "1 image(s) imported into cmd-ds, 1 skipped (1 corrupt)" in out
    assert Dataset.objects.get(name="cmd-ds").images.count() == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/no/such/folder", "--dataset", "x"], "no such file or folder"),
        ([".", "--dataset", "not a slug"], "must be a slug"),
    ],
)
def test_import_command_refuses_bad_input_with_one_clear_line(args, message, transactional_db):
    result = manage("import_images", *args)
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr


def test_stored_files_are_named_by_checksum(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(png_bytes(90))
    import_images(dataset=_dataset(), path=folder)
    image = Image.objects.get()
    assert image.checksum in image.file.name and default_storage.exists(image.file.name)
    assert image.thumbnail and default_storage.exists(image.thumbnail.name)
