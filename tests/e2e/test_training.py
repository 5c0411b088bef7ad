"""An admin trains and promotes in a real browser: Training -> the start form (tiny preset) ->
the run's page, whose progress follows the database without a reload (htmx polling) -> the
registry, where promoting a version shows its badge. The hand-off to Celery is recorded instead
of sent (no gpu worker here; no message for a test-only run id left on the shared broker)."""

import re
from pathlib import Path

import pytest
from PIL import Image as PILImage
from playwright.sync_api import expect

from annotation.models import Dataset
from tests.helpers import record_enqueues
from training.classifier.config import ClassifierRunConfig
from training.metrics import classification_report
from training.models import DatasetVersion, ModelVersion, TrainingRun

pytestmark = pytest.mark.e2e


@pytest.fixture
def enqueued(monkeypatch):
    return record_enqueues(monkeypatch, "training.run")


@pytest.fixture
def dataset_version(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    dataset = Dataset.objects.create(name="e2e-train", title="Training demo")
    return DatasetVersion.objects.create(
        dataset=dataset, number=1, splits={"train": [], "val": [], "test": []},
        counts={"train": {"images": 10, "clusters": {"HSIL": 12}}, "val": {"images": 2, "clusters": {"HSIL": 3}},
                "test": {"images": 2, "clusters": {"HSIL": 2}}},
    )


def test_an_admin_starts_a_run_watches_it_live_and_promotes_a_version(
        dataset_version, enqueued, make_user, login, live_server, settings, artifacts_dir):
    make_user("ada@lab.example", roles=["admin"], password="train-pass-1")
    page = login("ada@lab.example", "train-pass-1")

    page.locator("nav.mainnav").get_by_role("link", name="Training").click()
    expect(page.get_by_role("heading", name="Training", exact=True)).to_be_visible()
    expect(page.locator("#no-runs")).to_be_visible()

    # a bad value is refused beside its field, the rest of what was typed stays
    page.select_option("#id_dataset", str(dataset_version.dataset.pk))
    page.select_option("#id_preset", "resnest_tiny")
    page.fill("#id_epochs", "0")
    page.fill("#id_input_size", "64")
    page.click("#start-run")
    expect(page.locator("#field-epochs .field-error")).to_contain_text("greater than or equal to 1")
    expect(page.locator("#id_input_size")).to_have_value("64")
    assert not TrainingRun.objects.exists()

    page.fill("#id_epochs", "2")
    page.uncheck("#id_oversample")
    page.click("#start-run")
    page.wait_for_url(re.compile(r".*/training/runs/\d+/$"))
    run = TrainingRun.objects.get()
    assert run.status == "queued" and run.config["preset"] == "resnest_tiny"
    assert run.config["optim"]["epochs"] == 2 and run.config["augment"]["oversample"] is False
    assert enqueued == [run.pk]
    expect(page.locator(".msg-success")).to_contain_text(f"Run #{run.pk} queued on the gpu queue")
    expect(page.locator("#run-status")).to_have_text("Queued")

    # the list shows it, and follows it while it is active
    page.locator(".crumbs").get_by_role("link", name="Training").click()
    row = page.locator(f'#runs-table tr[data-run="{run.pk}"]')
    expect(row).to_have_attribute("data-status", "queued")
    expect(row).to_contain_text("e2e-train v1")
    expect(row).to_contain_text("resnest_tiny")
    TrainingRun.objects.filter(pk=run.pk).update(status="running",
                                                 progress={"step": 1, "steps": 4, "epoch": 1, "epochs": 2})
    expect(row).to_have_attribute("data-status", "running")
    page.screenshot(path=str(artifacts_dir / "training-runs.png"), full_page=True)

    # the run's page polls its progress: the numbers change with no reload of the page
    row.get_by_role("link", name=f"#{run.pk}").click()
    page.wait_for_url(re.compile(rf".*/training/runs/{run.pk}/$"))
    page.evaluate("window.sameDocument = true")
    expect(page.locator("#run-step")).to_have_text("1")
    TrainingRun.objects.filter(pk=run.pk).update(progress={
        "step": 3, "steps": 4, "epoch": 2, "epochs": 2, "loss": 0.734, "eta_s": 12, "best_val_macro_f1": 0.42})
    expect(page.locator("#run-epoch")).to_have_text("2")
    expect(page.locator("#run-step")).to_have_text("3")
    expect(page.locator("#run-loss")).to_have_text("0.7340")
    expect(page.locator("#run-percent")).to_have_text("87%")
    expect(page.locator("#run-eta")).to_have_text("12 s")
    assert page.evaluate("window.sameDocument") is True

    # finishing stops the polling; the curve is there
    TrainingRun.objects.filter(pk=run.pk).update(status="succeeded", best_metric=0.42, history=[
        {"epoch": 1, "loss": 1.1, "val_macro_f1": 0.3, "elapsed_s": 5.0},
        {"epoch": 2, "loss": 0.73, "val_macro_f1": 0.42, "elapsed_s": 10.0}])
    expect(page.locator("#run-status")).to_have_text("Succeeded")
    expect(page.locator("#learning-curve circle.dot.f1")).to_have_count(2)
    expect(page.locator("#live")).not_to_have_attribute("hx-trigger", re.compile(".*"))
    assert page.evaluate("window.sameDocument") is True
    page.screenshot(path=str(artifacts_dir / "training-run.png"), full_page=True)

    # a version in the registry: promote it and see its badge
    folder = Path(settings.MEDIA_ROOT) / "models" / "classifier" / "classifier-e2e"
    folder.mkdir(parents=True)
    PILImage.new("RGB", (60, 40), "white").save(folder / "confusion.png")
    version = ModelVersion.objects.create(
        kind="classifier", name="classifier-e2e", run=run, dataset_version=dataset_version,
        artifact_dir="models/classifier/classifier-e2e", config=ClassifierRunConfig(preset="resnest_tiny").to_json(),
        metrics={"test": classification_report([0, 1, 2, 3, 4, 5, 4], [0, 1, 2, 3, 4, 5, 5])})
    page.goto(live_server.url + "/training/models/")
    expect(page.locator(f"#promoted-{version.pk}")).to_have_count(0)
    page.click(f"#promote-{version.pk}")
    expect(page.locator(".msg-success")).to_contain_text("classifier-e2e promoted")
    expect(page.locator(f"#promoted-{version.pk}")).to_be_visible()
    version.refresh_from_db()
    assert version.promoted

    page.get_by_role("link", name="classifier-e2e").click()
    expect(page.locator("#promoted-badge")).to_be_visible()
    expect(page.locator("#report-table tbody tr")).to_have_count(6)
    expect(page.locator("#report-table tbody tr").first).to_have_attribute("data-class", "NILM")
    image = page.locator("#confusion-image")
    expect(image).to_be_visible()
    assert image.evaluate("img => img.complete && img.naturalWidth") == 60
    page.screenshot(path=str(artifacts_dir / "training-model.png"), full_page=True)


def test_promoting_a_worse_detector_asks_first_beside_the_promoted_one(
        dataset_version, make_user, login, live_server, artifacts_dir):
    # Seen: a detector with test mAP 0.003 promoted with one click over a working one.
    def detector(name, map_, recall, precision, promoted=False):
        return ModelVersion.objects.create(
            kind="detector", name=name, dataset_version=dataset_version, artifact_dir=f"models/detector/{name}",
            config={}, promoted=promoted,
            metrics={"test": {"map": map_, "n": 12, "atypical": {"recall": recall, "precision": precision}}})

    working = detector("detector-good", 0.41, 0.9, 0.6, promoted=True)
    poor = detector("detector-poor", 0.003, 1.0, 0.5)
    make_user("ada@lab.example", roles=["admin"], password="train-pass-1")
    page = login("ada@lab.example", "train-pass-1")
    page.goto(live_server.url + "/training/models/")
    page.click(f"#promote-{poor.pk}")  # no one-click promotion: the comparison opens
    comparison = page.locator("#promote-comparison")
    expect(comparison.locator('tr[data-figure="map"] td.candidate')).to_have_text("0.003")
    expect(comparison.locator('tr[data-figure="map"] td.current')).to_have_text("0.410")
    expect(page.locator("#promote-concerns")).to_contain_text("below the floor 0.250")
    page.click("#promote")  # unticked: the browser does not send it
    expect(page.locator("#promote-confirm")).to_be_visible()
    assert ModelVersion.objects.get(pk=working.pk).promoted and not ModelVersion.objects.get(pk=poor.pk).promoted
    page.check("#promote-confirm")
    page.click("#promote")
    expect(page.locator(".msg-success")).to_contain_text("detector-poor promoted")
    expect(page.locator("#promotions .promotion-decision").first).to_contain_text("confirmed despite")
    assert ModelVersion.objects.get(pk=poor.pk).promoted
    page.screenshot(path=str(artifacts_dir / "training-promotion-confirmed.png"), full_page=True)
