"""Blind on the Datasets pages, in a real browser: a pathologist who holds an image sees neither
its imported ground truth nor the model's scored boxes there; a reviewer sees both."""

import json

import pytest
from playwright.sync_api import expect

from annotation import services
from annotation.models import Assignment, Image, PredictionBox
from tests.annotation.conftest import png_bytes

pytestmark = pytest.mark.e2e


def test_pathologist_browsing_the_datasets_pages_sees_no_truth_or_model_boxes_of_the_image_they_hold(
    make_user, login, live_server, settings, tmp_path
):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    dataset, _ = services.ensure_dataset(name="blind-e2e")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "smear.png").write_bytes(png_bytes(5, size=(200, 150)))
    coco = {"images": [{"id": 1, "file_name": "smear.png", "width": 200, "height": 150}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [40, 30, 50, 40], "area": 2000,
                             "iscrowd": 0}],
            "categories": [{"id": 5, "name": "HSIL"}]}
    (tmp_path / "gt.json").write_text(json.dumps(coco))
    services.import_images(dataset=dataset, path=tmp_path / "in", annotations=tmp_path / "gt.json")
    image = Image.objects.get(dataset=dataset)
    PredictionBox.objects.create(image=image, x=100, y=60, width=40, height=30, label="SCC", score=0.93)
    pathologist = make_user("path@example.org", roles=["pathologist"], password="browser-pass-1")
    make_user("rev@example.org", roles=["reviewer"], password="browser-pass-2")
    Assignment.objects.create(image=image, annotator=pathologist, expires_at="2030-01-01T00:00Z")

    page = login("path@example.org", "browser-pass-1")
    page.locator("nav.mainnav").get_by_role("link", name="Datasets").click()
    expect(page.locator("#dataset-blind-e2e .box-count")).to_have_text("0")
    page.get_by_role("link", name="blind-e2e").first.click()
    expect(page.locator(".thumbs .thumb")).to_have_count(1)
    expect(page.locator(".thumbs .tag")).to_have_count(0)  # no ground-truth label on the card
    page.locator(".thumbs .thumb").first.click()
    overlay = page.locator("svg#overlay")
    expect(overlay).to_be_visible()
    expect(page.locator("#blind-note")).to_contain_text("You are annotating this image")
    expect(overlay.locator("g.box")).to_have_count(0)
    expect(page.locator("body")).not_to_contain_text("0.93")

    page.context.clear_cookies()  # a new session, for the reviewer
    page = login("rev@example.org", "browser-pass-2")
    page.goto(f"{live_server.url}/datasets/blind-e2e/images/{image.pk}/")
    overlay = page.locator("svg#overlay")
    expect(overlay.locator("g.box.gt")).to_have_count(1)
    expect(overlay.locator("g.box.pred")).to_have_count(1)
    expect(page.locator("#box-table")).to_contain_text("score 0.93")
