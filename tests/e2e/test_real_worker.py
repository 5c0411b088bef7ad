"""Each kind of background job, end to end behind the page a person uses: the page queues it
(cytoloop.jobs.enqueue_on_commit, after commit), a real Celery worker (a thread, both queues)
takes it from the real Redis broker and does the work in the test's database, and the page
shows the outcome. Nothing is patched; every job row carries the broker's task id.

Kept lean: two small uploads, one image with two experts, a tiny classifier for one epoch on
32 px crops, untrained test-size models (the prediction job tests' fixture, built once here)."""

import io
import re
import threading
from pathlib import Path

import numpy as np
import pytest
from celery.signals import task_postrun
from PIL import Image as PILImage
from playwright.sync_api import expect

from annotation.geometry import Box
from annotation.models import Cluster, Image, ImportJob
from annotation.services import ensure_dataset, import_images, next_assignment, submit_annotation
from inference.models import ImagePrediction, PredictionJob
from tests.helpers import choose_label
from tests.inference import test_prediction_job as prediction_tests
from training.models import ModelVersion, TrainingRun

pytestmark = pytest.mark.e2e

#: a job's page stops polling at one of these (JobStatus: the job is finished)
FINISHED = re.compile(r"^(succeeded|failed|cancelled|interrupted)$")

#: the untrained test-size detector and classifier as SavedModels, made once per module
exported = prediction_tests.exported


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return Path(settings.MEDIA_ROOT)


@pytest.fixture
def finished_tasks():
    """wait(name, until=..., timeout=...) -> the return value of the latest run of task ``name``
    the worker has finished since the test began whose value ``until`` accepts, waiting for one
    if none yet (Celery's task_postrun signal: an event, not a poll of the database)."""
    done: list[tuple[str, object]] = []
    changed = threading.Condition()

    def record(task=None, retval=None, **_):
        with changed:
            done.append((task.name, retval))
            changed.notify_all()

    task_postrun.connect(record, weak=False)

    def wait(name: str, *, until=lambda retval: True, timeout: float = 60.0):
        with changed:
            found = changed.wait_for(lambda: [r for n, r in done if n == name and until(r)], timeout)
        assert found, f"no run of {name} finished within {timeout} s; finished: {done}"
        return found[-1]

    yield wait
    task_postrun.disconnect(record)


def _png(seed: int, size=(320, 240)) -> bytes:
    pixels = np.random.default_rng(seed).integers(90, 230, size=(size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    PILImage.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def _admin(make_user, login):
    make_user("ops@lab.example", roles=["admin"], password="worker-pass-1")
    return login("ops@lab.example", "worker-pass-1")


def test_the_worker_imports_what_an_admin_uploads(make_user, login, celery_worker):
    page = _admin(make_user, login)
    page.locator("nav.mainnav").get_by_role("link", name="Import").click()
    page.fill("#id_new_dataset", "worker-import")
    page.set_input_files("#id_files", [
        {"name": f"upload-{seed}.png", "mimeType": "image/png", "buffer": _png(seed)} for seed in (1, 2)])
    page.click("#import-submit")
    page.wait_for_url(re.compile(r".*/datasets/import/\d+/$"), timeout=30_000)

    job_section = page.locator("section.job[data-status]")
    expect(job_section).to_have_attribute("data-status", FINISHED, timeout=90_000)
    job = ImportJob.objects.get()
    assert job.status == "succeeded" and job.task_id, (job.status, job.error)
    expect(job_section).to_have_attribute("data-status", "succeeded")
    expect(job_section.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
    assert sorted(Image.objects.values_list("original_name", flat=True)) == ["upload-1.png", "upload-2.png"]

    page.click("#open-gallery")
    thumbs = page.locator(".thumbs .thumb img")
    expect(thumbs).to_have_count(2)
    page.wait_for_function(
        "[...document.querySelectorAll('.thumbs img')].every(i => i.complete && i.naturalWidth > 0)")


def test_the_worker_computes_consensus_when_the_last_expert_submits_in_the_browser(
        make_user, login, celery_worker, finished_tasks, open_editor, tmp_path):
    folder = tmp_path / "smear"
    folder.mkdir()
    (folder / "two-experts.png").write_bytes(_png(3, size=(800, 600)))
    dataset, _ = ensure_dataset(name="worker-consensus", experts_per_image=2)
    import_images(dataset=dataset, path=folder)

    # the first expert (through the service) calls the lesion LSIL ...
    first = make_user("first@lab.example", roles=["pathologist"])
    image = next_assignment(annotator=first).image
    submit_annotation(image=image, annotator=first, boxes=[Box(240.0, 180.0, 240.0, 180.0, "LSIL")])
    assert finished_tasks("annotation.compute_consensus") == "not_ready"

    # ... the second, in the browser, draws the same cells and calls them HSIL (key 5)
    make_user("second@lab.example", roles=["pathologist"], password="worker-pass-2")
    page = login("second@lab.example", "worker-pass-2")
    page.locator("nav.mainnav").get_by_role("link", name="My queue").click()
    page.get_by_role("button", name="Start annotating").click()
    page.wait_for_url(re.compile(rf".*/annotate/{image.pk}/$"))
    editor, _, shown = open_editor(page)
    choose_label(page, editor, "5", "HSIL")
    page.mouse.move(shown["x"] + 0.3 * shown["width"], shown["y"] + 0.3 * shown["height"])
    page.mouse.down()
    page.mouse.move(shown["x"] + 0.6 * shown["width"], shown["y"] + 0.6 * shown["height"], steps=10)
    page.mouse.up()
    expect(editor.locator("li[aria-label=region]")).to_have_count(1)
    page.click("#submit-annotation")
    expect(page.locator(".msg-success")).to_contain_text("Saved 1 box on two-experts.png")

    assert finished_tasks("annotation.compute_consensus", until=lambda r: r == "computed") == "computed"
    cluster = Cluster.objects.get(image=image)
    assert cluster.status == "disputed" and sorted(m["label"] for m in cluster.members) == ["HSIL", "LSIL"]

    # a reviewer finds it among the disputes
    page.context.clear_cookies()
    make_user("rev@lab.example", roles=["reviewer"], password="worker-pass-3")
    login("rev@lab.example", "worker-pass-3")
    page.locator("nav.mainnav").get_by_role("link", name="Disputes").click()
    expect(page.locator("#disputes tbody tr")).to_have_count(1)
    expect(page.locator("#disputes tbody tr").first).to_have_attribute("data-cluster", str(cluster.pk))


def test_the_worker_trains_a_classifier_an_admin_starts_from_the_form(
        synthetic_dataset, make_user, login, celery_worker):
    labelled_dataset = synthetic_dataset("worker-train", 8, seed=7, size=192)
    page = _admin(make_user, login)
    page.locator("nav.mainnav").get_by_role("link", name="Training").click()
    page.select_option("#id_dataset", str(labelled_dataset.pk))
    page.select_option("#id_preset", "resnest_tiny")
    page.fill("#id_epochs", "1")
    page.fill("#id_batch_size", "8")
    page.fill("#id_input_size", "32")
    for option in ("#id_oversample", "#id_scale", "#id_random_erasing"):
        page.uncheck(option)
    page.click("#start-run")
    page.wait_for_url(re.compile(r".*/training/runs/\d+/$"))

    expect(page.locator("#live")).to_have_attribute("data-status", FINISHED, timeout=300_000)
    run = TrainingRun.objects.get()
    assert run.status == "succeeded" and run.task_id, (run.status, run.error)
    assert run.config["optim"]["epochs"] == 1 and run.config["preset"] == "resnest_tiny"
    expect(page.locator("#run-status")).to_have_text("Succeeded")
    version = ModelVersion.objects.get(run=run)
    expect(page.locator("#model-version-link")).to_contain_text(version.name)


def test_the_worker_predicts_a_dataset_an_admin_starts_from_the_page(
        exported, media, make_user, login, celery_worker, tmp_path):
    dataset = prediction_tests.make_dataset(tmp_path, "worker-predict", 2)
    prediction_tests.promote_models(exported, media, dataset)
    page = _admin(make_user, login)
    page.locator("nav.mainnav").get_by_role("link", name="Active learning").click()
    page.select_option("#id_predict-dataset", str(dataset.pk))
    page.uncheck("#id_predict-push_to_label_studio")
    page.click("#start-prediction")
    page.wait_for_url(re.compile(r".*/inference/#jobs$"))

    job = PredictionJob.objects.get()
    row = page.locator(f'#jobs-table tr[data-job="{job.pk}"]')
    expect(row).to_have_attribute("data-status", FINISHED, timeout=240_000)
    job.refresh_from_db()
    assert job.status == "succeeded" and job.task_id, (job.status, job.error)
    assert job.progress["predicted"] == 2, job.progress
    expect(row).to_have_attribute("data-status", "succeeded")
    expect(row.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
    assert ImagePrediction.objects.filter(image__dataset=dataset).count() == 2
