"""An admin runs an active-learning round in a real browser: Active learning from the nav ->
predict a dataset (the job list follows the job's progress in the database without a reload,
htmx polling) -> start a ranking round with clinical_cost, k = 2 -> the round's page with the
ranked thumbnails, the top cluster drawn on each, and why each was chosen. Predictions are
stored as a prediction job stores them (no TensorFlow); the hand-off to Celery is recorded
instead of sent (no gpu worker here; no message for a test-only job id left on the broker)."""

import re

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageDraw
from playwright.sync_api import expect

from annotation.models import Image
from annotation.services import ensure_dataset, import_images
from inference.models import PredictionJob, RankingRound
from inference.pipeline import ClusterResult, ImageResult
from inference.services import store_prediction
from tests.helpers import record_enqueues
from training.models import DatasetVersion, ModelVersion

pytestmark = pytest.mark.e2e


@pytest.fixture
def enqueued(monkeypatch):
    return record_enqueues(monkeypatch, "inference.predict")


def _cluster(p, box, emb):
    p = np.asarray(p, dtype=np.float64)
    return ClusterResult(box=box, detector_score=0.8, detector_class="HSIL", probabilities=p / p.sum(),
                         embedding=np.asarray(emb, dtype=np.float32))


@pytest.fixture
def predicted(settings, tmp_path):
    """Three 320x240 smears predicted by a promoted detector + classifier: a NILM/HSIL split,
    an ASC-H/HSIL split and a sure HSIL (clinical_cost ranks them in that order)."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    dataset, _ = ensure_dataset(name="al-demo")
    folder = tmp_path / "upload"
    folder.mkdir()
    boxes = [(40.0, 30.0, 90.0, 70.0), (150.0, 100.0, 80.0, 60.0), (200.0, 40.0, 70.0, 80.0)]
    for i, (x, y, w, h) in enumerate(boxes):
        image = PILImage.new("RGB", (320, 240), (226, 214, 228))
        ImageDraw.Draw(image).ellipse((x + 10, y + 10, x + w - 10, y + h - 10), fill=(120, 70, 140))
        image.save(folder / f"smear{i}.png")
    import_images(dataset=dataset, path=folder)
    images = list(Image.objects.filter(dataset=dataset).order_by("original_name"))
    dv = DatasetVersion.objects.create(dataset=dataset, number=1, splits={})
    detector = ModelVersion.objects.create(
        kind="detector", name="detector-e2e", dataset_version=dv, artifact_dir="models/detector/detector-e2e",
        config={}, promoted=True, metrics={"threshold": {"threshold": 0.3, "source": "validation", "recall": 0.95}})
    classifier = ModelVersion.objects.create(
        kind="classifier", name="classifier-e2e", dataset_version=dv, artifact_dir="models/classifier/classifier-e2e",
        config={}, promoted=True, metrics={})
    probabilities = [[0.45, 0.02, 0.02, 0.02, 0.47, 0.02], [0.02, 0.02, 0.02, 0.45, 0.47, 0.02],
                     [0.02, 0.02, 0.02, 0.02, 0.9, 0.02]]
    for i, image in enumerate(images):
        store_prediction(image=image, result=ImageResult([_cluster(probabilities[i], boxes[i], (i, 1.0))]),
                         detector=detector, classifier=classifier)
    return dataset, images


def test_an_admin_predicts_ranks_and_sees_why_each_image_was_chosen(
        predicted, enqueued, make_user, login, live_server, artifacts_dir):
    dataset, images = predicted
    make_user("ada@lab.example", roles=["admin"], password="rank-pass-1")
    page = login("ada@lab.example", "rank-pass-1")

    page.locator("nav.mainnav").get_by_role("link", name="Active learning").click()
    expect(page.get_by_role("heading", name="Active learning", exact=True)).to_be_visible()
    expect(page.locator("#promoted-detector")).to_contain_text("detector-e2e")
    expect(page.locator("#detector-threshold")).to_have_text("0.30")
    expect(page.locator("#no-jobs")).to_be_visible()

    # predict the dataset: the job is queued, the list follows its progress with no reload
    page.select_option("#id_predict-dataset", str(dataset.pk))
    page.click("#start-prediction")
    page.wait_for_url(re.compile(r".*/inference/#jobs$"))
    job = PredictionJob.objects.get()
    assert enqueued == [job.pk]
    row = page.locator(f'#jobs-table tr[data-job="{job.pk}"]')
    expect(row).to_have_attribute("data-status", "queued")
    page.evaluate("window.sameDocument = true")
    PredictionJob.objects.filter(pk=job.pk).update(status="running", progress={"total": 3, "done": 2, "predicted": 2,
                                                                                "skipped": 0})
    expect(row).to_have_attribute("data-status", "running")
    expect(row.locator(".job-progress")).to_have_text("2/3 images · 66%")
    expect(row.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "66")
    PredictionJob.objects.filter(pk=job.pk).update(status="succeeded", progress={
        "total": 3, "done": 3, "predicted": 3, "skipped": 0, "pushed": 0, "push_failed": 0})
    expect(row).to_have_attribute("data-status", "succeeded")
    expect(page.locator("#jobs")).not_to_have_attribute("hx-trigger", re.compile(".*"))
    assert page.evaluate("window.sameDocument") is True
    page.screenshot(path=str(artifacts_dir / "active-learning.png"), full_page=True)

    # a ranking round: clinical_cost, k = 2
    page.select_option("#id_dataset", str(dataset.pk))
    page.select_option("#id_strategy", "clinical_cost")
    page.fill("#id_k", "2")
    page.click("#start-round")
    page.wait_for_url(re.compile(r".*/inference/rounds/\d+/$"))
    round_ = RankingRound.objects.get()
    assert (round_.strategy, round_.k, round_.allow_preannotations) == ("clinical_cost", 2, False)
    expect(page.locator(".msg-success")).to_contain_text(f"Round #{round_.pk} ranked 3 unreviewed images")
    expect(page.locator("#active-badge")).to_be_visible()

    cards = page.locator(".ranked-card")
    expect(cards).to_have_count(3)
    expected = [(images[0], "true"), (images[1], "true"), (images[2], "false")]
    for index, (image, selected) in enumerate(expected):
        card = cards.nth(index)
        expect(card).to_have_attribute("data-image", str(image.pk))
        expect(card).to_have_attribute("data-selected", selected)
        expect(card.locator(".rank")).to_have_text(f"#{index + 1}")
        expect(card.locator(".why")).to_contain_text("Why chosen")
        expect(card.locator(".reason-text")).to_contain_text("clinical_cost")
        thumb = card.locator(".al-thumb img")
        expect(thumb).to_be_visible()
        thumb.evaluate("img => img.decode()")  # resolves once the thumbnail is loaded and decoded
        assert thumb.evaluate("img => img.naturalWidth") > 0
        expect(card.locator("rect.top-cluster")).to_have_count(1)
        expect(card.locator(".prob-bars tr")).to_have_count(6)
    expect(cards.first.locator(".reason-text")).to_contain_text("called HSIL (p=0.47), next NILM (0.45)")
    expect(page.locator(".selected-badge")).to_have_count(2)
    expect(page.locator("#k-cut")).to_have_count(1)
    page.screenshot(path=str(artifacts_dir / "active-learning-round.png"), full_page=True)

    # a ranked image opens its page
    cards.first.locator(".ranked-name").click()
    page.wait_for_url(re.compile(rf".*/datasets/al-demo/images/{images[0].pk}/$"))
