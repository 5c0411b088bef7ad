"""Dataset pages: list, gallery, image viewer, browser import, its job page, and media files.

Django test client against the real PostgreSQL; images go in through annotation.services.
"""

import io
import json
import re
import zipfile

import pytest
from django.core.files.storage import default_storage
from django.urls import reverse

from annotation import services
from annotation.geometry import Box
from annotation.models import Dataset, ExpertAnnotation, Image, ImportJob
from tests.annotation.conftest import png_bytes

pytestmark = pytest.mark.django_db

CRIC_CITATION = (
    "Rezende M.T. et al., Cric searchable image database as a public platform for conventional "
    "pap smear cytology data, Scientific Data 8:151 (2021), doi:10.1038/s41597-021-00933-8"
)
BETHESDA_IDS = {"NILM": 1, "ASC-US": 2, "LSIL": 3, "ASC-H": 4, "HSIL": 5, "SCC": 6}


def _coco(boxes_by_file: dict[str, list[tuple]], size=(64, 48)) -> dict:
    images, annotations = [], []
    for image_id, (name, boxes) in enumerate(boxes_by_file.items(), start=1):
        images.append({"id": image_id, "file_name": name, "width": size[0], "height": size[1]})
        for label, x, y, w, h, *score in boxes:
            ann = {"id": len(annotations) + 1, "image_id": image_id, "category_id": BETHESDA_IDS[label],
                   "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0}
            if score:
                ann["score"] = score[0]
            annotations.append(ann)
    categories = [{"id": i, "name": n} for n, i in BETHESDA_IDS.items()]
    return {"images": images, "annotations": annotations, "categories": categories}


def _import(tmp_path, dataset, files: dict[str, int], annotations=None, *, suffix=".json", **kwargs):
    folder = tmp_path / f"in-{dataset.name}"
    folder.mkdir()
    for name, seed in files.items():
        (folder / name).write_bytes(png_bytes(seed))
    ann_path = None
    if annotations is not None:
        ann_path = tmp_path / f"ann-{dataset.name}{suffix}"
        ann_path.write_text(json.dumps(annotations))
    report = services.import_images(dataset=dataset, path=folder, annotations=ann_path, **kwargs)
    assert not report.skipped and not report.box_problems, report.summary()
    return {i.original_name: i for i in Image.objects.filter(dataset=dataset)}


@pytest.fixture
def lab(tmp_path):
    """Dataset "lab": a.png (HSIL + NILM, train), b.png (LSIL, train), c.png (no box, val)."""
    dataset, _ = services.ensure_dataset(
        name="lab", title="Lab smears", source="CRIC Cervix collection", license="CC BY 4.0",
        citation=CRIC_CITATION,
    )
    images = _import(tmp_path, dataset, {"a.png": 1, "b.png": 2, "c.png": 3}, _coco({
        "a.png": [("HSIL", 10, 10, 20, 20), ("NILM", 30, 5, 10, 10)],
        "b.png": [("LSIL", 4, 4, 12, 12)],
        "c.png": [],
    }))
    Image.objects.filter(original_name__in=["a.png", "b.png"]).update(split="train")
    Image.objects.filter(original_name="c.png").update(split="val")
    return dataset, images


def _gallery(client, params="", **headers):
    return client.get(reverse("annotation:gallery", args=["lab"]) + params, headers=headers)


def _shown_names(response) -> list[str]:
    return re.findall(r'<span class="name">([^<]+)</span>', response.content.decode())


# --- datasets list ----------------------------------------------------------------------------


def test_datasets_list_shows_image_and_box_counts_and_the_citation(client_as, lab):
    # a reviewer: a pathologist sees no ground truth of images in their queue (test_visibility.py)
    response = client_as("reviewer").get(reverse("annotation:datasets"))
    assert response.status_code == 200
    html = response.content.decode()
    card = html[html.index('id="dataset-lab"'):]
    assert re.search(r'class="image-count">3<', card)
    assert re.search(r'class="box-count">3<', card)
    for label, n in {"HSIL": 1, "NILM": 1, "LSIL": 1, "SCC": 0}.items():
        assert re.search(rf'data-label="{label}"><span class="swatch"></span>{label} <strong>{n}</strong>', card)
    assert "CC BY 4.0" in card
    assert "Scientific Data 8:151 (2021)" in card
    assert "CRIC Cervix collection" in card


def test_every_role_may_view_the_datasets_list(client_as, lab):
    for role in ("pathologist", "reviewer", "admin"):
        assert client_as(role).get(reverse("annotation:datasets")).status_code == 200


def test_a_user_without_a_role_may_not_view_datasets(client_as, lab):
    assert client_as().get(reverse("annotation:datasets")).status_code == 403


# --- gallery ----------------------------------------------------------------------------------


def test_gallery_lists_every_image_with_its_thumbnail_and_provenance(client_as, lab):
    response = _gallery(client_as("reviewer"))
    assert response.status_code == 200
    assert sorted(_shown_names(response)) == ["a.png", "b.png", "c.png"]
    assert response.context["matching"] == 3
    html = response.content.decode()
    assert html.count('<img src="/media/thumbs/lab/') == 3
    assert "Scientific Data 8:151 (2021)" in html


def test_gallery_filters_by_split(client_as, lab):
    client = client_as("pathologist")
    train = _gallery(client, "?split=train")
    assert sorted(_shown_names(train)) == ["a.png", "b.png"]
    assert train.context["matching"] == 2
    val = _gallery(client, "?split=val")
    assert _shown_names(val) == ["c.png"]
    counts = {link["value"]: link["count"] for link in train.context["split_links"]}
    assert counts == {"": 3, "unassigned": 0, "train": 2, "val": 1, "test": 0}


def test_gallery_filters_by_ground_truth_label(client_as, lab):
    client = client_as("reviewer")
    hsil = _gallery(client, "?label=HSIL")
    assert _shown_names(hsil) == ["a.png"]
    assert hsil.context["matching"] == 1
    label_counts = {link["value"]: link["count"] for link in hsil.context["label_links"] if link["value"]}
    assert label_counts == {"NILM": 1, "ASC-US": 0, "LSIL": 1, "ASC-H": 0, "HSIL": 1, "SCC": 0}
    assert _gallery(client, "?split=val&label=HSIL").context["matching"] == 0
    assert _shown_names(_gallery(client, "?split=train&label=LSIL")) == ["b.png"]


def test_gallery_ignores_unknown_filter_values(client_as, lab):
    response = _gallery(client_as("pathologist"), "?split=nonsense&label=FOO")
    assert response.context["matching"] == 3


def test_gallery_htmx_request_gets_only_the_grid_partial(client_as, lab):
    response = _gallery(client_as("pathologist"), "?split=train", HX_Request="true")
    html = response.content.decode()
    assert response.status_code == 200
    assert html.lstrip().startswith('<section id="gallery"')
    assert "<html" not in html and "Cite as" not in html
    assert sorted(_shown_names(response)) == ["a.png", "b.png"]


def test_gallery_makes_a_missing_thumbnail_once(client_as, lab):
    _, images = lab
    Image.objects.filter(pk=images["c.png"].pk).update(thumbnail="")
    _gallery(client_as("pathologist"))
    thumb = Image.objects.get(pk=images["c.png"].pk).thumbnail.name
    assert thumb and default_storage.exists(thumb)


def test_gallery_of_unknown_dataset_is_404(client_as, lab):
    assert client_as("admin").get(reverse("annotation:gallery", args=["nope"])).status_code == 404


# --- image page -------------------------------------------------------------------------------


def test_image_page_draws_ground_truth_boxes_in_pixels(client_as, lab):
    _, images = lab
    response = client_as("reviewer").get(reverse("annotation:image", args=["lab", images["a.png"].pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'viewBox="0 0 64 48"' in html
    assert '<rect class="frame" x="10.0" y="10.0" width="20.0" height="20.0"/>' in html
    assert '<rect class="frame" x="30.0" y="5.0" width="10.0" height="10.0"/>' in html
    assert sorted(re.findall(r'class="box gt lab-[^"]*" data-label="([^"]+)"', html)) == ["HSIL", "NILM"]
    assert html.count('<tr class="row-gt">') == 2


def test_image_page_never_shows_expert_annotations(client_as, make_user, lab):
    _, images = lab
    image = images["a.png"]
    expert = make_user("blind-expert@example.org", roles=["pathologist"])
    services.save_expert_annotation(
        image=image, annotator=expert, origin=ExpertAnnotation.Origin.EDITOR,
        boxes=[Box(23.5, 17.5, 9.5, 7.5, "SCC"), Box(41.5, 29.5, 6.5, 5.5, "ASC-H")],
    )
    for role in ("pathologist", "reviewer", "admin"):
        html = client_as(role).get(reverse("annotation:image", args=["lab", image.pk])).content.decode()
        labels = re.findall(r'data-label="([^"]+)"', html)
        assert "SCC" not in labels and "ASC-H" not in labels
        for coord in ('x="23.5"', 'x="41.5"', ">23.5<", ">41.5<", ">17.5<", ">29.5<"):
            assert coord not in html
        assert "lab-SCC\">SCC</span>" not in html  # no table row either
        assert "blind-expert@example.org" not in html
        # the legend counts ground truth only
        assert re.search(r'<tr class="lab-SCC zero"', html)


def test_image_page_marks_point_derived_boxes_with_the_nucleus(client_as, tmp_path):
    dataset, _ = services.ensure_dataset(name="cric", license="CC BY 4.0", citation=CRIC_CITATION)
    cric = {"labels": ["NILM"], "images": [{"file": "p.png", "width": 64, "height": 48, "scale_from_cric": 1.0,
                                            "cells": [{"cell_id": 1, "label": "ASC-H", "x": 30.0, "y": 20.0}]}]}
    images = _import(tmp_path, dataset, {"p.png": 7}, cric, box_size=10)
    html = client_as("reviewer").get(
        reverse("annotation:image", args=["cric", images["p.png"].pk])).content.decode()
    assert '<circle class="nucleus" cx="30.0" cy="20.0"' in html
    assert "from point (30.0, 20.0)" in html
    assert "labelled nucleus" in html


def test_image_page_draws_imported_predictions_with_their_score(client_as, tmp_path):
    dataset, _ = services.ensure_dataset(name="preds")
    images = _import(tmp_path, dataset, {"q.png": 8},
                     _coco({"q.png": [("HSIL", 5, 6, 20, 10, 0.87)]}), as_predictions=True)
    html = client_as("admin").get(reverse("annotation:image", args=["preds", images["q.png"].pk])).content.decode()
    assert re.search(r'class="box pred lab-HSIL" data-label="HSIL"', html)
    assert ">HSIL 0.87</text>" in html
    assert '<tr class="row-pred">' in html and "score 0.87" in html
    assert 'id="show-pred" checked>' in html


def test_image_page_links_previous_and_next_within_the_filter(client_as, lab):
    _, images = lab
    client = client_as("pathologist")
    html = client.get(reverse("annotation:image", args=["lab", images["b.png"].pk])).content.decode()
    assert f'href="/datasets/lab/images/{images["a.png"].pk}/" rel="prev"' in html
    assert f'href="/datasets/lab/images/{images["c.png"].pk}/" rel="next"' in html
    filtered = client.get(reverse("annotation:image", args=["lab", images["b.png"].pk]) + "?split=train")
    html = filtered.content.decode()
    assert f'href="/datasets/lab/images/{images["a.png"].pk}/?split=train" rel="prev"' in html
    assert 'rel="next"' not in html


def test_image_of_another_dataset_is_404(client_as, lab, tmp_path):
    other, _ = services.ensure_dataset(name="other")
    _, images = lab
    url = reverse("annotation:image", args=["other", images["a.png"].pk])
    assert client_as("pathologist").get(url).status_code == 404


# --- import page and job page -----------------------------------------------------------------


@pytest.mark.parametrize("role", ["pathologist", "reviewer"])
def test_import_page_is_forbidden_to_non_admins(client_as, role):
    client = client_as(role)
    assert client.get(reverse("annotation:import")).status_code == 403
    assert client.post(reverse("annotation:import"), {"new_dataset": "x"}).status_code == 403


def test_import_page_is_open_to_admins(client_as, lab):
    response = client_as("admin").get(reverse("annotation:import"))
    assert response.status_code == 200
    html = response.content.decode()
    assert '<input type="file" name="files" id="id_files" multiple' in html
    assert '<option value="lab">' in html
    assert "js/import.js" in html


def test_import_post_without_files_is_400_and_creates_nothing(client_as):
    client = client_as("admin")
    response = client.post(reverse("annotation:import"), {"new_dataset": "fresh"})
    assert response.status_code == 400
    assert "No files were uploaded" in response.content.decode()
    xhr = client.post(reverse("annotation:import"), {"new_dataset": "fresh"},
                      headers={"X-Requested-With": "XMLHttpRequest"})
    assert xhr.status_code == 400
    assert "No files were uploaded" in xhr.json()["error"]
    assert not Dataset.objects.exists() and not ImportJob.objects.exists()


def test_import_post_with_a_bad_dataset_name_is_400(client_as):
    upload = io.BytesIO(png_bytes(1))
    upload.name = "one.png"
    response = client_as("admin").post(
        reverse("annotation:import"), {"new_dataset": "has spaces!", "files": [upload]}
    )
    assert response.status_code == 400
    assert "is not a valid dataset name" in response.content.decode()
    assert not Dataset.objects.exists() and not ImportJob.objects.exists()


def test_import_post_refuses_files_that_are_not_images_or_zips(client_as):
    upload = io.BytesIO(b"hello")
    upload.name = "notes.docx"
    response = client_as("admin").post(
        reverse("annotation:import"), {"new_dataset": "fresh", "files": [upload]},
        headers={"X-Requested-With": "XMLHttpRequest"},
    )
    assert response.status_code == 400
    assert "notes.docx" in response.json()["error"]


def _uploads(*items):
    files = []
    for name, data in items:
        f = io.BytesIO(data)
        f.name = name
        files.append(f)
    return files


def test_xhr_import_answers_the_job_url_and_the_job_page_reports_each_file(client_as, media_root):
    client = client_as("admin")
    files = _uploads(("good1.png", png_bytes(1)), ("good2.png", png_bytes(2)), ("bad.png", png_bytes(3)[:120]))
    response = client.post(
        reverse("annotation:import"),
        {"new_dataset": "browser-set", "title": "Browser set", "license": "CC BY 4.0", "files": files},
        headers={"X-Requested-With": "XMLHttpRequest"},
    )
    assert response.status_code == 202
    job = ImportJob.objects.get()
    assert response.json()["job_url"] == f"/datasets/import/{job.pk}/"
    assert job.dataset.name == "browser-set" and job.dataset.license == "CC BY 4.0"

    page = client.get(response.json()["job_url"]).content.decode()
    assert 'hx-trigger="every 1s"' in page  # queued: the progress partial polls itself

    services.run_import_job(job.pk)
    partial = client.get(response.json()["job_url"], headers={"HX-Request": "true"}).content.decode()
    assert partial.lstrip().startswith('<section id="job"')
    assert "hx-trigger" not in partial  # done: polling stops
    assert "2 imported</strong>, 1 skipped (1 corrupt)" in partial
    assert '<td class="file">bad.png</td>' in partial
    assert "truncated or corrupt" in partial or "corrupt" in partial
    assert 'href="/datasets/browser-set/"' in partial
    assert Image.objects.filter(dataset__name="browser-set").count() == 2


def test_form_import_without_javascript_redirects_to_the_job_page(client_as, lab):
    response = client_as("admin").post(
        reverse("annotation:import"), {"dataset": "lab", "files": _uploads(("new.png", png_bytes(11)))}
    )
    job = ImportJob.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/datasets/import/{job.pk}/"
    assert job.dataset.name == "lab"


def test_import_job_page_is_admin_only(client_as, lab):
    dataset, _ = lab
    job = ImportJob.objects.create(dataset=dataset, upload_dir="uploads/x")
    assert client_as("reviewer").get(reverse("annotation:import_job", args=[job.pk])).status_code == 403


def test_uploaded_zip_is_expanded_by_the_import_job(client_as):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("z/one.png", png_bytes(21))
    client = client_as("admin")
    client.post(reverse("annotation:import"),
                {"new_dataset": "zipped", "files": _uploads(("batch.zip", archive.getvalue()))})
    job = services.run_import_job(ImportJob.objects.get().pk)
    assert job.imported == 1


# --- media --------------------------------------------------------------------------------------


def test_media_serves_an_image_to_a_logged_in_user(client_as, lab):
    _, images = lab
    image = images["a.png"]
    response = client_as("pathologist").get(image.file.url)
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert "private" in response["Cache-Control"]
    with default_storage.open(image.file.name, "rb") as handle:
        assert b"".join(response.streaming_content) == handle.read()


def test_media_sends_anonymous_users_to_login(client, lab):
    _, images = lab
    response = client.get(images["a.png"].file.url)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=/media/")


@pytest.mark.parametrize("path", [
    "/media/../platform/cytoloop/settings/base.py",
    "/media/images/../../secret.txt",
    "/media/%2e%2e/%2e%2e/etc/passwd",
    "/media//etc/passwd",
    "/media/images/..%5c..%5cx.png",
    "/media/uploads/anything.png",
    "/media/no/such/file.png",
])
def test_media_refuses_traversal_and_missing_files(client_as, media_root, path):
    (media_root / "uploads").mkdir(parents=True, exist_ok=True)
    (media_root / "uploads" / "anything.png").write_bytes(png_bytes(1))
    (media_root.parent / "secret.txt").write_text("secret")
    assert client_as("admin").get(path).status_code == 404


def test_tiff_images_are_shown_from_their_jpeg_preview(client_as, tmp_path):
    from PIL import Image as PILImage

    folder = tmp_path / "tiff"
    folder.mkdir()
    PILImage.new("RGB", (80, 60), (200, 180, 190)).save(folder / "slide.tif", "TIFF")
    dataset, _ = services.ensure_dataset(name="tiffs")
    services.import_images(dataset=dataset, path=folder)
    image = Image.objects.get(dataset=dataset)
    html = client_as("pathologist").get(reverse("annotation:image", args=["tiffs", image.pk])).content.decode()
    assert f'<image href="{image.thumbnail.url}"' in html
    assert "Browsers cannot display TIFF" in html
