"""The Training pages (admin only): start a run from the form, watch its progress, cancel and
resume it, the model registry with its test report, promote and rollback. Django's test client
against the real PostgreSQL; the Celery hand-off (cytoloop.jobs.send_now, for training.run) is recorded
instead of sent, so no message for a test-only run id is left on the shared broker."""

from __future__ import annotations

import ast
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone
from PIL import Image as PILImage

from annotation.bethesda import BETHESDA
from annotation.models import Dataset
from tests.helpers import record_enqueues
from training import services
from training.classifier.config import ClassifierRunConfig, DataConfig, OptimConfig
from training.forms import PRESET_CHOICES
from training.metrics import classification_report
from training.models import DatasetVersion, ModelVersion, Promotion, TrainingRun

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]

VALID = {
    "dataset": None,  # filled in with the dataset's pk
    "preset": "resnest_tiny",
    "epochs": "3",
    "batch_size": "8",
    "input_size": "64",
    "learning_rate": "0.003",
    "targets": "ordinal",
    "n": "3",
    "oversample": "on",
    "random_erasing": "on",  # scale left off
    "time_limit_min": "10",
    "seed": "7",
}


@pytest.fixture
def enqueued(monkeypatch):
    """Run ids handed to Celery (cytoloop.jobs.send_now, for training.run), in order."""
    return record_enqueues(monkeypatch, "training.run")


@pytest.fixture
def version():
    dataset = Dataset.objects.create(name="cells")
    return DatasetVersion.objects.create(
        dataset=dataset, number=1, seed=0, splits={"train": [1, 2], "val": [3], "test": [4]},
        counts={"train": {"images": 2, "clusters": {"NILM": 3, "HSIL": 2}},
                "val": {"images": 1, "clusters": {"NILM": 1}}, "test": {"images": 1, "clusters": {"HSIL": 1}}},
    )


def make_run(version, status="queued", **fields) -> TrainingRun:
    config = ClassifierRunConfig(preset="resnest_tiny", data=DataConfig(input_size=64),
                                 optim=OptimConfig(epochs=4, batch_size=8))
    return TrainingRun.objects.create(kind="classifier", dataset_version=version, config=config.to_json(),
                                      status=status, **fields)


def make_model_version(version, name: str, *, promoted: bool = False, with_png: bool = False, settings=None):
    report = classification_report([0, 0, 1, 2, 4, 4, 5, 3], [0, 1, 1, 2, 4, 5, 5, 3])
    artifact_dir = f"models/classifier/{name}"
    if with_png:
        folder = Path(settings.MEDIA_ROOT) / artifact_dir
        folder.mkdir(parents=True)
        PILImage.new("RGB", (40, 30), "white").save(folder / "confusion.png")
    return ModelVersion.objects.create(
        kind="classifier", name=name, dataset_version=version, artifact_dir=artifact_dir,
        config=ClassifierRunConfig(preset="resnest_tiny").to_json(), promoted=promoted,
        metrics={"test": report, "best_val_macro_f1": 0.61,
                 "history": [{"epoch": 1, "loss": 1.4, "val_macro_f1": 0.4, "elapsed_s": 3.0},
                             {"epoch": 2, "loss": 0.9, "val_macro_f1": 0.61, "elapsed_s": 6.0}]},
    )


def htmx_get(client, url):
    return client.get(url, headers={"HX-Request": "true"})


# --- who may -----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["pathologist", "reviewer"])
def test_pathologists_and_reviewers_get_403_on_every_training_page_and_action(role, client_as, version):
    client = client_as(role)
    run = make_run(version, status="interrupted")
    model = make_model_version(version, "classifier-a")
    gets = [reverse("training:runs"), reverse("training:run", args=[run.pk]), reverse("training:models"),
            reverse("training:model", args=[model.pk])]
    posts = [reverse("training:runs"), reverse("training:cancel", args=[run.pk]),
             reverse("training:resume", args=[run.pk]), reverse("training:promote", args=[model.pk]),
             reverse("training:rollback")]
    for url in gets:
        assert client.get(url).status_code == 403, url
    for url in posts:
        assert client.post(url, {"kind": "classifier"}).status_code == 403, url
    run.refresh_from_db()
    model.refresh_from_db()
    assert (run.status, model.promoted, TrainingRun.objects.count()) == ("interrupted", False, 1)


def test_only_admins_see_training_in_the_navigation(client_as, client):
    page = client_as("admin").get("/").content.decode()
    assert f'href="{reverse("training:runs")}">Training</a>' in page
    client.logout()
    page = client_as("reviewer").get("/").content.decode()
    assert ">Training</a>" not in page


# --- the start form ----------------------------------------------------------------------------


def test_the_form_offers_every_resnest_preset():
    """The form's list is kept apart from training.networks.resnest (that package loads Keras)."""
    source = (ROOT / "training" / "networks" / "resnest" / "resnest_config.py").read_text()
    presets = next(node.value for node in ast.walk(ast.parse(source))
                   if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "PRESETS")
    assert {key.value for key in presets.keys} == {name for name, _ in PRESET_CHOICES}


def test_bad_options_are_shown_beside_their_fields_and_start_nothing(admin, version, enqueued):
    bad = {**VALID, "dataset": version.dataset.pk, "preset": "resnest9", "epochs": "0", "batch_size": "",
           "input_size": "16", "learning_rate": "-1", "targets": "hinge"}
    response = admin.post(reverse("training:runs"), bad)
    assert response.status_code == 400
    form = response.context["form"]
    assert set(form.errors) == {"preset", "epochs", "batch_size", "input_size", "learning_rate", "targets"}
    page = response.content.decode()
    assert 'id="form-errors"' in page
    assert page.count('class="field-error"') == 6
    assert "Select a valid choice. resnest9 is not one of the available choices." in page
    assert "Ensure this value is greater than or equal to 1." in page
    assert "Ensure this value is greater than or equal to 32." in page
    assert 'id="field-epochs"' in page and 'class="field has-error"' in page
    assert 'value="16"' in page  # what was typed stays in the form
    assert not TrainingRun.objects.exists() and enqueued == []


def test_a_dataset_without_images_is_refused_with_the_services_reason(admin, enqueued):
    empty = Dataset.objects.create(name="empty-set")
    response = admin.post(reverse("training:runs"), {**VALID, "dataset": empty.pk})
    assert response.status_code == 400
    assert "dataset empty-set has no images" in response.content.decode()
    assert not TrainingRun.objects.exists() and enqueued == []


def test_starting_a_run_queues_it_with_the_forms_config_and_opens_its_page(
        admin, version, enqueued, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post(reverse("training:runs"), {**VALID, "dataset": version.dataset.pk})
    run = TrainingRun.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("training:run", args=[run.pk])
    assert (run.status, run.kind, run.dataset_version, run.created_by.email) == (
        "queued", "classifier", version, "admin@example.org")
    config = ClassifierRunConfig.from_json(run.config)
    assert config.preset == "resnest_tiny" and config.data.input_size == 64
    assert (config.optim.epochs, config.optim.batch_size, config.optim.learning_rate) == (3, 8, 0.003)
    assert (config.optim.time_limit_s, config.optim.seed) == (600, 7)
    assert (config.targets.kind, config.targets.n) == ("ordinal", 3.0)
    assert (config.augment.oversample, config.augment.scale, config.augment.random_erasing) == (True, False, True)
    assert enqueued == [run.pk]  # handed to the gpu queue once the run's row was committed
    page = admin.get(response["Location"]).content.decode()
    assert f"Run #{run.pk} queued on the gpu queue" in page


# --- the run list ------------------------------------------------------------------------------


def test_the_run_list_polls_while_a_run_is_active_and_stops_when_none_is(admin, version):
    running = make_run(version, status="running", progress={"step": 5, "steps": 10, "epoch": 2, "epochs": 4},
                       started_at=timezone.now())
    make_run(version, status="succeeded", best_metric=0.734, finished_at=timezone.now())
    page = admin.get(reverse("training:runs")).content.decode()
    assert page.count('<tr data-run="') == 2
    assert f'data-run="{running.pk}" data-status="running"' in page
    assert 'class="status status-running"' in page and 'class="status status-succeeded"' in page
    assert 'aria-valuenow="37"' in page  # (1 epoch x 10 steps + 5) / (4 x 10) = 37.5%
    assert "0.734" in page and "cells v1" in page
    assert 'hx-trigger="every 2s"' in page

    partial = htmx_get(admin, reverse("training:runs")).content.decode()
    assert partial.lstrip().startswith('<div id="runs"') and "<html" not in partial and "run-form" not in partial

    TrainingRun.objects.filter(pk=running.pk).update(status="failed", error="boom")
    partial = htmx_get(admin, reverse("training:runs")).content.decode()
    assert 'data-status="failed"' in partial and "hx-trigger" not in partial


# --- one run -----------------------------------------------------------------------------------


def test_the_progress_partial_shows_the_stored_progress(admin, version):
    run = make_run(version, status="running", started_at=timezone.now(),
                   heartbeat_at=timezone.now() - timedelta(seconds=30),
                   progress={"step": 15, "steps": 20, "epoch": 3, "epochs": 4, "loss": 0.41237,
                             "val_macro_f1": 0.5, "best_val_macro_f1": 0.625, "eta_s": 200.0})
    response = htmx_get(admin, reverse("training:run", args=[run.pk]))
    partial = response.content.decode()
    assert response.status_code == 200 and "<html" not in partial and partial.lstrip().startswith('<section id="live"')
    assert 'id="run-epoch">3<' in partial and 'id="run-step">15<' in partial and 'id="run-steps">20<' in partial
    assert 'id="run-loss">0.4124<' in partial and 'id="run-val-f1">0.500<' in partial
    assert 'id="run-best">0.625<' in partial and 'id="run-eta">3 min 20 s<' in partial
    assert 'id="run-percent">68%<' in partial  # (2 x 20 + 15) / (4 x 20) = 68.75%
    assert 'id="run-heartbeat">30 s<' in partial
    assert 'hx-trigger="every 2s"' in partial and 'id="cancel-run"' in partial

    TrainingRun.objects.filter(pk=run.pk).update(progress={**run.progress, "step": 20, "epoch": 4, "eta_s": 0})
    partial = htmx_get(admin, reverse("training:run", args=[run.pk])).content.decode()
    assert 'id="run-epoch">4<' in partial and 'id="run-percent">100%<' in partial


def test_a_finished_runs_page_stops_polling_and_draws_its_learning_curve(admin, version):
    history = [{"epoch": e, "loss": 1.5 / e, "val_macro_f1": 0.2 * e, "elapsed_s": 10.0 * e} for e in (1, 2, 3)]
    run = make_run(version, status="succeeded", history=history, best_metric=0.6, best_epoch=3,
                   progress={"step": 9, "steps": 9, "epoch": 3, "epochs": 4, "stopped": "early_stopping"},
                   finished_at=timezone.now())
    page = admin.get(reverse("training:run", args=[run.pk])).content.decode()
    assert "hx-trigger" not in page and 'id="cancel-run"' not in page
    assert 'id="learning-curve"' in page and 'data-epochs="3"' in page
    assert page.count('class="dot f1"') == 3 and page.count('class="dot loss"') == 3
    assert "best epoch 3" in page and "stopped early" in page
    assert "resnest_tiny" in page and ">8</dd>" in page  # the configuration: batch size 8


def test_a_running_runs_curve_comes_from_its_checkpoint_state(admin, version, tmp_path):
    folder = tmp_path / "runs" / "1"
    folder.mkdir(parents=True)
    (folder / "state.json").write_text(json.dumps({"epoch": 1, "history": [
        {"epoch": 1, "loss": 1.2, "val_macro_f1": 0.3, "elapsed_s": 4.0},
        {"epoch": 2, "loss": 0.8, "val_macro_f1": 0.45, "elapsed_s": 8.0}]}))
    run = make_run(version, status="running", checkpoint_dir=str(folder),
                   progress={"step": 2, "steps": 10, "epoch": 3, "epochs": 4})
    partial = htmx_get(admin, reverse("training:run", args=[run.pk])).content.decode()
    assert 'data-epochs="2"' in partial and partial.count('class="dot f1"') == 2


def test_a_failed_run_shows_its_error(admin, version):
    run = make_run(version, status="failed", error="TrainingRefused: the training split has no clusters")
    page = admin.get(reverse("training:run", args=[run.pk])).content.decode()
    assert 'id="run-error"' in page and "the training split has no clusters" in page
    assert 'id="cancel-run"' not in page and 'id="resume-run"' not in page


def test_cancel_stops_a_queued_run(admin, version):
    run = make_run(version, status="queued")
    response = admin.post(reverse("training:cancel", args=[run.pk]))
    assert response.status_code == 302
    run.refresh_from_db()
    assert (run.status, run.cancel_requested) == ("cancelled", True) and run.finished_at is not None
    page = admin.get(response["Location"]).content.decode()
    assert f"Run #{run.pk} cancelled." in page


def test_cancel_asks_a_running_run_to_stop_at_its_next_step(admin, version):
    run = make_run(version, status="running", heartbeat_at=timezone.now())
    response = admin.post(reverse("training:cancel", args=[run.pk]), follow=True)
    run.refresh_from_db()
    assert (run.status, run.cancel_requested) == ("running", True)
    page = response.content.decode()
    assert "cancel requested" in page and 'id="cancel-run"' not in page


def test_cancelling_a_finished_run_is_a_message_not_an_error_page(admin, version):
    run = make_run(version, status="succeeded")
    response = admin.post(reverse("training:cancel", args=[run.pk]), follow=True)
    assert response.status_code == 200
    assert f"run {run.pk} is succeeded; nothing to cancel" in response.content.decode()
    run.refresh_from_db()
    assert run.status == "succeeded" and not run.cancel_requested


def test_resume_queues_an_interrupted_run_again(admin, version, enqueued, django_capture_on_commit_callbacks):
    run = make_run(version, status="interrupted", error="the worker stopped sending heartbeats")
    page = admin.get(reverse("training:run", args=[run.pk])).content.decode()
    assert 'id="resume-run"' in page and 'id="interrupted"' in page
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post(reverse("training:resume", args=[run.pk]), follow=True)
    run.refresh_from_db()
    assert (run.status, run.error) == ("queued", "") and enqueued == [run.pk]
    assert "continues from its last checkpoint" in response.content.decode()
    response = admin.post(reverse("training:resume", args=[run.pk]), follow=True)
    assert "only interrupted runs resume" in response.content.decode() and enqueued == [run.pk]


def test_get_only_pages_refuse_other_methods(admin, version):
    run = make_run(version)
    assert admin.post(reverse("training:run", args=[run.pk])).status_code == 405
    assert admin.get(reverse("training:cancel", args=[run.pk])).status_code == 405
    assert admin.get(reverse("training:rollback")).status_code == 405


# --- the registry ------------------------------------------------------------------------------


def test_the_registry_lists_versions_with_their_test_scores(admin, version):
    old = make_model_version(version, "classifier-1", promoted=True)
    new = make_model_version(version, "classifier-2")
    page = admin.get(reverse("training:models")).content.decode()
    report = old.metrics["test"]
    assert f"{report['average']['f1']:.3f}" in page and f"{100 * report['overall_accuracy']:.1f}%" in page
    assert f'id="promoted-{old.pk}"' in page and f'id="promote-{new.pk}"' in page
    assert f'id="promote-{old.pk}"' not in page and f'id="promoted-{new.pk}"' not in page
    assert "No detector version yet" in page


def test_a_versions_page_shows_the_papers_table_and_its_confusion_matrix(admin, version, settings):
    model = make_model_version(version, "classifier-7", with_png=True, settings=settings)
    page = admin.get(reverse("training:model", args=[model.pk])).content.decode()
    report = model.metrics["test"]
    assert re.findall(r'<tr class="lab-[^"]+" data-class="([^"]+)"', page) == list(BETHESDA)  # the paper's order
    assert 'data-class="Average"' in page
    hsil = report["classes"]["HSIL"]
    assert f"{100 * hsil['precision']:.1f}%" in page and f"{100 * report['average']['recall']:.1f}%" in page
    image_url = reverse("media", args=["models/classifier/classifier-7/confusion.png"])
    assert f'src="{image_url}"' in page
    image = admin.get(image_url)
    assert image.status_code == 200 and image["Content-Type"] == "image/png"
    assert 'id="learning-curve"' in page and 'id="promote"' in page


def test_a_version_without_its_confusion_image_says_so(admin, version):
    model = make_model_version(version, "classifier-8")
    page = admin.get(reverse("training:model", args=[model.pk])).content.decode()
    assert 'id="no-confusion"' in page and "<img" not in page


def test_promote_makes_a_version_the_promoted_one(admin, version):
    old = make_model_version(version, "classifier-1", promoted=True)
    new = make_model_version(version, "classifier-2")
    response = admin.post(reverse("training:promote", args=[new.pk]), {"note": "better HSIL recall"}, follow=True)
    old.refresh_from_db()
    new.refresh_from_db()
    assert (old.promoted, new.promoted) == (False, True)
    entry = Promotion.objects.get()
    assert (entry.model_version, entry.note, entry.promoted_by.email) == (new, "better HSIL recall", "admin@example.org")
    page = response.content.decode()
    assert "classifier-2 promoted" in page and 'id="promoted-badge"' in page


def test_promote_returns_to_the_registry_when_asked(admin, version):
    model = make_model_version(version, "classifier-3")
    response = admin.post(reverse("training:promote", args=[model.pk]), {"next": reverse("training:models")})
    assert response["Location"] == reverse("training:models")
    response = admin.post(reverse("training:promote", args=[model.pk]), {"next": "https://evil.example/"})
    assert response["Location"] == reverse("training:model", args=[model.pk])


def test_rollback_promotes_the_previous_version_again(admin, version):
    first = make_model_version(version, "classifier-1")
    second = make_model_version(version, "classifier-2")
    admin.post(reverse("training:promote", args=[first.pk]))
    admin.post(reverse("training:promote", args=[second.pk]))
    page = admin.get(reverse("training:models")).content.decode()
    assert 'id="rollback-classifier"' in page and "Roll back to classifier-1" in page
    response = admin.post(reverse("training:rollback"), {"kind": "classifier"}, follow=True)
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.promoted, second.promoted) == (True, False)
    assert "Rolled back: classifier-1 is the promoted classifier again" in response.content.decode()


def test_rollback_with_nothing_to_go_back_to_is_a_message(admin, version):
    make_model_version(version, "classifier-1", promoted=True)
    response = admin.post(reverse("training:rollback"), {"kind": "classifier"}, follow=True)
    assert response.status_code == 200
    assert "no earlier classifier version to roll back to" in response.content.decode()
    assert ModelVersion.objects.get().promoted
    response = admin.post(reverse("training:rollback"), {"kind": "segmenter"}, follow=True)
    assert "Choose which kind of model to roll back" in response.content.decode()


def make_detector_version(version, name="detector-9"):
    """A detector version whose metrics are what the detector trainer stores, computed by the real
    evaluation code on a few hand-made images."""
    import numpy as np

    from training.detection.evaluate import GroundTruth, choose_threshold
    from training.detection.nms import Detections
    from training.detector.config import DetectorRunConfig
    from training.detector.evaluation import detection_report, threshold_dict

    box = np.array([[10.0, 10.0, 50.0, 50.0]])
    truths = [GroundTruth(box, np.array([3])), GroundTruth(box, np.array([1])), GroundTruth(np.zeros((0, 4)),
                                                                                           np.zeros(0, int))]
    found = [Detections(box, np.array([0.9]), np.array([3])), Detections(box, np.array([0.6]), np.array([1])),
             Detections(box + 5, np.array([0.7]), np.array([2]))]
    choice = choose_threshold(found, truths)
    history = [{"epoch": 1, "loss": 30.0, "val_map": 0.2}, {"epoch": 2, "loss": 12.0, "val_map": 0.55}]
    return ModelVersion.objects.create(
        kind="detector", name=name, dataset_version=version, artifact_dir=f"models/detector/{name}",
        config=DetectorRunConfig(preset="yolov4_test").to_json(),
        metrics={"test": detection_report(found, truths, choice.threshold, 5), "history": history,
                 "best_val_map": 0.55, "threshold": threshold_dict(choice),
                 "anchors": {"source": "preset", "reason": "3 training boxes are too few for k-means"}},
    )


def test_a_detector_versions_page_shows_map_ap_per_class_and_what_the_threshold_costs(admin, version):
    detector = make_detector_version(version)
    page = admin.get(reverse("training:model", args=[detector.pk])).content.decode()
    threshold = detector.metrics["threshold"]
    assert "test mAP@0.5" in page and 'id="ap-table"' in page
    assert f'{threshold["threshold"]:.3f}' in page  # the chosen threshold, then what it costs
    assert f'id="threshold-precision">{100 * threshold["precision"]:.1f}%' in page
    assert f'id="threshold-recall">{100 * threshold["recall"]:.1f}%' in page
    assert f'id="test-map">{100 * detector.metrics["test"]["map"]:.1f}%' in page
    assert 'data-class="HSIL"' in page and "too few for k-means" in page
    assert "best val mAP@0.5" in page and "validation mAP@0.5" in page  # the curve is the detector's
    registry = admin.get(reverse("training:models")).content.decode()
    assert "Test mAP@0.5" in registry and f'{detector.metrics["test"]["map"]:.3f}' in registry


def test_a_detector_runs_page_names_its_metric(admin, version):
    from training.detector.config import DetectorRunConfig

    run = TrainingRun.objects.create(kind="detector", dataset_version=version, status="running",
                                     config=DetectorRunConfig(preset="yolov4_test").to_json(),
                                     progress={"step": 2, "steps": 4, "epoch": 2, "epochs": 3, "loss": 9.5,
                                               "val_map": 0.42, "best_val_map": 0.42},
                                     history=[{"epoch": 1, "loss": 20.0, "val_map": 0.42}])
    page = admin.get(reverse("training:run", args=[run.pk])).content.decode()
    assert "val mAP@0.5 (last epoch)" in page and "0.420" in page
    assert "Mosaic" in page and "IoU k-means" in page  # the detector's configuration, not a classifier's


def test_the_detector_form_offers_every_yolov4_preset():
    from training.forms import DETECTOR_PRESET_CHOICES

    source = (ROOT / "training" / "networks" / "yolov4" / "presets.py").read_text()
    presets = next(node.value for node in ast.walk(ast.parse(source))
                   if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "PRESETS")
    names = {key.value for key in presets.keys if isinstance(key, ast.Constant)}
    assert names == {name for name, _ in DETECTOR_PRESET_CHOICES}


def test_starting_a_detector_run_from_the_page(admin, version, enqueued, django_capture_on_commit_callbacks):
    from training.detector.config import DetectorRunConfig

    page = admin.get(reverse("training:runs")).content.decode()
    assert 'id="detector-form"' in page and 'name="det-preset"' in page
    assert len(re.findall(r'id="field-([\w-]+)"', page)) == len(set(re.findall(r'id="field-([\w-]+)"', page)))
    bad = admin.post(reverse("training:runs"), {"kind": "detector", "det-dataset": version.dataset.pk,
                                                 "det-preset": "yolov4_test", "det-input_size": "100",
                                                 "det-epochs": "2", "det-batch_size": "4",
                                                 "det-learning_rate": "0.002", "det-anchors": "kmeans",
                                                 "det-seed": "0"})
    assert bad.status_code == 400 and "multiple of 32" in bad.content.decode() and not TrainingRun.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post(reverse("training:runs"), {
            "kind": "detector", "det-dataset": version.dataset.pk, "det-preset": "yolov4_test",
            "det-input_size": "128", "det-epochs": "2", "det-batch_size": "4", "det-learning_rate": "0.002",
            "det-anchors": "preset", "det-mosaic": "on", "det-seed": "3"})
    run = TrainingRun.objects.get()
    assert response.status_code == 302 and run.kind == "detector" and enqueued == [run.pk]
    config = DetectorRunConfig.from_json(run.config)
    assert (config.preset, config.input_size, config.anchors) == ("yolov4_test", 128, "preset")
    assert (config.augment.oversample, config.augment.mosaic, config.optim.seed) == (False, True, 3)


# --- promotion asks first ------------------------------------------------------------------------


def make_scored_version(version, name: str, *, kind: str = "classifier", promoted: bool = False, **figures):
    """A version whose test figures are exactly ``figures`` (macro_f1/accuracy, or map/recall/precision)."""
    if kind == "classifier":
        test = {"average": {"f1": figures["macro_f1"]}, "overall_accuracy": figures["accuracy"], "n": 40}
    else:
        test = {"map": figures["map"], "n": 12,
                "atypical": {"recall": figures["recall"], "precision": figures["precision"]}}
    return ModelVersion.objects.create(kind=kind, name=name, dataset_version=version, artifact_dir=f"models/{name}",
                                       config={}, metrics={"test": test}, promoted=promoted)


def test_a_versions_page_shows_it_beside_the_promoted_one_on_the_same_test_figures(admin, version):
    make_scored_version(version, "detector-1", kind="detector", promoted=True, map=0.412, recall=0.9, precision=0.6)
    candidate = make_scored_version(version, "detector-2", kind="detector", map=0.003, recall=1.0, precision=0.5)
    page = admin.get(reverse("training:model", args=[candidate.pk])).content.decode()
    rows = re.findall(r'<tr data-figure="(\w+)" class="(\w*)">\s*<th scope="row">[^<]+</th>\s*'
                      r'<td class="num candidate">([^<]+)</td>\s*<td class="num current">([^<]+)</td>', page)
    assert rows == [("map", "worse", "0.003", "0.412"), ("image_recall", "better", "1.000", "0.900"),
                    ("image_precision", "worse", "0.500", "0.600")]
    assert "test mAP@0.5 0.003 is below the floor 0.250 (PROMOTION_MIN_MAP)" in page
    assert 'id="promote-confirm"' in page


def test_promoting_a_version_below_the_floor_without_confirmation_is_refused(admin, version):
    candidate = make_scored_version(version, "classifier-5", macro_f1=0.12, accuracy=0.3)
    response = admin.post(reverse("training:promote", args=[candidate.pk]), {"next": reverse("training:models")})
    assert response["Location"] == reverse("training:model", args=[candidate.pk]) + "#promotion"
    page = admin.get(response["Location"]).content.decode()
    assert "promoting classifier-5 needs a confirmation: test macro-F1 0.120 is below the floor 0.500" in page
    candidate.refresh_from_db()
    assert not candidate.promoted and not Promotion.objects.exists()


def test_promoting_a_worse_version_on_confirmation_records_both_figures_and_the_decision(admin, version):
    current = make_scored_version(version, "classifier-1", promoted=True, macro_f1=0.8, accuracy=0.85)
    worse = make_scored_version(version, "classifier-2", macro_f1=0.7, accuracy=0.9)
    assert admin.post(reverse("training:promote", args=[worse.pk]), {"against": current.pk}).status_code == 302
    assert not ModelVersion.objects.get(pk=worse.pk).promoted  # refused: not confirmed
    admin.post(reverse("training:promote", args=[worse.pk]), {"against": current.pk, "confirm": "yes"})
    entry = Promotion.objects.get()
    assert ModelVersion.objects.get(pk=worse.pk).promoted and not ModelVersion.objects.get(pk=current.pk).promoted
    assert (entry.action, entry.previous, entry.confirmed) == ("promote", current, True)
    assert entry.concerns == ["test macro-F1 0.700 is lower than classifier-1's 0.800"]
    assert entry.figures["candidate"] == {"name": "classifier-2", "macro_f1": 0.7, "accuracy": 0.9}
    assert entry.figures["previous"] == {"name": "classifier-1", "macro_f1": 0.8, "accuracy": 0.85}
    page = admin.get(reverse("training:model", args=[worse.pk])).content.decode()
    assert "confirmed despite:</strong> test macro-F1 0.700 is lower than classifier-1&#x27;s 0.800" in page


def test_a_better_version_is_promoted_in_one_click_and_says_so_in_the_audit(admin, version):
    current = make_scored_version(version, "classifier-1", promoted=True, macro_f1=0.6, accuracy=0.7)
    better = make_scored_version(version, "classifier-2", macro_f1=0.7, accuracy=0.75)
    page = admin.get(reverse("training:models")).content.decode()
    assert f'<button type="submit" class="small-button" id="promote-{better.pk}"' in page
    admin.post(reverse("training:promote", args=[better.pk]), {"against": current.pk})
    entry = Promotion.objects.get()
    assert entry.model_version == better and not entry.confirmed and entry.concerns == []


def test_the_registry_sends_a_version_that_needs_confirmation_to_its_comparison(admin, version):
    make_scored_version(version, "classifier-1", promoted=True, macro_f1=0.8, accuracy=0.85)
    worse = make_scored_version(version, "classifier-2", macro_f1=0.7, accuracy=0.9)
    page = admin.get(reverse("training:models")).content.decode()
    url = reverse("training:model", args=[worse.pk])
    assert f'id="promote-{worse.pk}" href="{url}#promotion"' in page


def test_a_confirmation_given_against_another_promoted_version_is_refused(admin, version):
    first = make_scored_version(version, "classifier-1", macro_f1=0.8, accuracy=0.85)
    second = make_scored_version(version, "classifier-2", promoted=True, macro_f1=0.9, accuracy=0.9)
    response = admin.post(reverse("training:promote", args=[first.pk]),
                          {"against": "none", "confirm": "yes"}, follow=True)
    assert "the promoted classifier is now classifier-2, not none: compare the figures again" in \
        response.content.decode()
    assert ModelVersion.objects.get(pk=second.pk).promoted and not Promotion.objects.exists()


def test_rolling_back_to_a_worse_version_needs_confirmation(admin, version):
    old = make_scored_version(version, "classifier-1", macro_f1=0.6, accuracy=0.7)
    new = make_scored_version(version, "classifier-2", macro_f1=0.8, accuracy=0.85)
    services.promote(version=old)
    services.promote(version=new)
    page = admin.get(reverse("training:models")).content.decode()
    assert f'id="rollback-classifier" href="{reverse("training:model", args=[old.pk])}#rollback-check"' in page
    response = admin.post(reverse("training:rollback"), {"kind": "classifier"})
    assert response["Location"] == reverse("training:model", args=[old.pk]) + "#rollback-check"
    assert ModelVersion.objects.get(pk=new.pk).promoted
    admin.post(reverse("training:rollback"), {"kind": "classifier", "confirm": "yes", "against": new.pk})
    entry = Promotion.objects.first()
    assert ModelVersion.objects.get(pk=old.pk).promoted
    assert (entry.action, entry.model_version, entry.previous, entry.confirmed) == ("rollback", old, new, True)


def test_every_time_on_the_model_pages_has_its_date(admin, version):
    model = make_scored_version(version, "classifier-1", macro_f1=0.8, accuracy=0.85)
    services.promote(version=model)
    moment = datetime(2026, 12, 3, 6, 56, tzinfo=UTC)
    ModelVersion.objects.filter(pk=model.pk).update(created_at=moment)
    Promotion.objects.update(promoted_at=moment)
    run = make_run(version, status="cancelled", finished_at=moment)
    for url in (reverse("training:models"), reverse("training:model", args=[model.pk]),
                reverse("training:run", args=[run.pk])):
        page = admin.get(url).content.decode()
        assert "3 Dec 2026, 06:56 UTC" in page, url
        dateless = [page[max(0, m.start() - 20):m.end()] for m in re.finditer(r"\b\d\d:\d\d\b", page)
                    if not re.search(r"\d{4}, $", page[:m.start()])]
        assert dateless == [], url
