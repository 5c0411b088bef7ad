"""The Training pages (admin only), runs: who may open them, start a run from the form (classifier
or detector), watch its progress, cancel and resume it. Django's test client against the real
PostgreSQL; the Celery hand-off (cytoloop.jobs.send_now, for training.run) is recorded instead of
sent, so no message for a test-only run id is left on the shared broker."""

from __future__ import annotations

import ast
import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from annotation.models import Dataset
from tests.helpers import record_enqueues
from tests.training.pages.conftest import make_model_version, make_run
from training.classifier.config import ClassifierRunConfig
from training.forms import PRESET_CHOICES
from training.models import TrainingRun

pytestmark = pytest.mark.django_db


ROOT = Path(__file__).resolve().parents[3]

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
    assert 'id="resumed"' not in partial
    resumed = "resumed from the previous checkpoint (epoch 2): last.keras is unreadable (ValueError)"
    TrainingRun.objects.filter(pk=run.pk).update(progress={**run.progress, "resumed": resumed})
    partial = htmx_get(admin, reverse("training:run", args=[run.pk])).content.decode()
    assert 'id="resumed">Resumed from the previous checkpoint (epoch 2): last.keras is unreadable' in partial


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
