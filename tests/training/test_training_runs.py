"""Training runs on the database: dataset versions, a tiny run end to end, cancel, crash and
resume, the registry. Tiny preset, 32 px crops: seconds per epoch on this CPU."""

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

import training.services
from annotation.formats import write_coco
from annotation.models import Image
from annotation.services import ensure_dataset, import_images
from annotation.synthetic import SyntheticConfig, generate_dataset
from cytoloop.celery import app
from tests.helpers import ROOT, child_env, manage, wait_until
from training.augment import AugmentConfig
from training.classifier.config import ClassifierRunConfig, DataConfig, OptimConfig
from training.models import ModelVersion, Promotion, TrainingRun
from training.selectors import promoted_version
from training.services import (
    Heartbeat,
    TrainingRefused,
    cancel_run,
    classifier_data,
    create_dataset_version,
    execute_run,
    mark_interrupted_runs,
    promote,
    resume_run,
    rollback,
    start_training_run,
)
from training.tasks import train_task

pytestmark = pytest.mark.django_db(transaction=True)


def tiny(epochs=2, **optim):
    return ClassifierRunConfig(
        preset="resnest_tiny", dropout=0.0, data=DataConfig(input_size=32),
        augment=AugmentConfig(oversample=False),
        optim=OptimConfig(epochs=epochs, batch_size=8, learning_rate=3e-3, **optim),
    )


@pytest.fixture
def synthetic(synthetic_dataset):
    return synthetic_dataset("trainset", 14, seed=4)


def test_a_dataset_version_freezes_splits_by_image(synthetic):
    first = create_dataset_version(dataset=synthetic, seed=1)
    second = create_dataset_version(dataset=synthetic, seed=1)
    assert (first.number, second.number) == (1, 2) and first.splits == second.splits
    ids = first.splits["train"] + first.splits["val"] + first.splits["test"]
    assert sorted(ids) == sorted(Image.objects.filter(dataset=synthetic).values_list("id", flat=True))
    assert len(set(ids)) == len(ids)
    for name, members in first.splits.items():
        assert set(Image.objects.filter(pk__in=members).values_list("split", flat=True)) <= {name}


def test_classifier_data_has_one_crop_per_cluster_and_no_image_in_two_splits(synthetic):
    version = create_dataset_version(dataset=synthetic, seed=0)
    data = classifier_data(version, input_size=32, margin=0.25)
    total = sum(c for split in version.counts.values() for c in split["clusters"].values())
    assert len(data.train_labels) + len(data.val_labels) + len(data.test_labels) == total
    assert data.train_images.shape[1:] == (32, 32, 3)
    assert data.train_votes.shape == (len(data.train_labels), 6)


def test_a_tiny_run_trains_registers_a_version_with_a_saved_model_and_report(synthetic, settings, tmp_path):
    run = start_training_run(kind="classifier", config=tiny(), dataset=synthetic, enqueue=False)
    assert ClassifierRunConfig.from_json(json.loads(json.dumps(run.config))) == tiny()
    run = execute_run(run.pk)
    assert run.status == "succeeded", run.error
    assert len(run.history) == 2 and run.best_metric is not None
    assert run.progress.get("epoch") == 2 and run.progress.get("epochs") == 2, run.progress
    version = ModelVersion.objects.get(run=run)
    folder = Path(settings.MEDIA_ROOT) / version.artifact_dir
    assert (folder / "saved_model" / "saved_model.pb").exists()
    assert (folder / "model.keras").exists() and (folder / "confusion.png").stat().st_size > 1000
    report = version.metrics["test"]
    assert set(report["classes"]) == {"NILM", "ASC-US", "LSIL", "ASC-H", "HSIL", "SCC"}
    assert 0.0 <= report["average"]["f1"] <= 1.0 and report["n"] > 0
    assert execute_run(run.pk).status == "succeeded"  # idempotent: a finished run stays as it is
    assert ModelVersion.objects.count() == 1


def test_a_run_cancelled_before_its_first_step_stops_and_keeps_no_version(synthetic):
    run = start_training_run(kind="classifier", config=tiny(), dataset=synthetic, enqueue=False)
    TrainingRun.objects.filter(pk=run.pk).update(status="running")
    cancel_run(run=run)
    TrainingRun.objects.filter(pk=run.pk).update(status="queued")
    run = execute_run(run.pk)
    assert run.status == "cancelled" and not ModelVersion.objects.exists()
    queued = start_training_run(kind="classifier", config=tiny(), dataset=synthetic, enqueue=False)
    assert cancel_run(run=queued).status == "cancelled"
    with pytest.raises(TrainingRefused):
        cancel_run(run=queued)


def test_a_run_killed_mid_training_is_marked_interrupted_and_resumes_from_its_checkpoint(synthetic, settings):
    run = start_training_run(kind="classifier", config=tiny(epochs=3), dataset=synthetic, enqueue=False)
    env = {**child_env(), "MEDIA_ROOT": str(settings.MEDIA_ROOT), "TEST_MEDIA_ROOT": str(settings.MEDIA_ROOT)}
    child = subprocess.Popen(
        [sys.executable, "manage.py", "shell", "-c",
         f"from training.services import execute_run; execute_run({run.pk})"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    state = Path(settings.MEDIA_ROOT) / "runs" / str(run.pk) / "state.json"

    def checkpointed():
        if state.exists():
            return True
        assert child.poll() is None, "the run exited before its first checkpoint: " + child.communicate()[1][-3000:]
        return False

    try:
        wait_until(checkpointed, timeout=240, message="the first epoch's checkpoint never appeared")
        history = wait_until(lambda: TrainingRun.objects.get(pk=run.pk).history, timeout=60,
                             message="the curve so far was not stored while the run trained")
    except AssertionError:
        child.kill()
        raise
    assert history[0]["epoch"] == 1
    os.kill(child.pid, 9)  # the worker dies mid-run
    child.wait()
    assert TrainingRun.objects.get(pk=run.pk).status == "running"
    from datetime import timedelta

    assert mark_interrupted_runs(stale_after=timedelta(seconds=0), auto_resume=False) == 1  # Resume by hand
    run = resume_run(run=TrainingRun.objects.get(pk=run.pk), enqueue=False)
    done_before = json.loads(state.read_text())["epoch"] + 1
    run = execute_run(run.pk)
    assert run.status == "succeeded", run.error
    assert [h["epoch"] for h in run.history] == [1, 2, 3]
    assert done_before >= 1  # it continued from the checkpoint instead of starting over


def test_a_run_silent_past_the_staleness_is_marked_interrupted_and_resumed_automatically_once(synthetic, monkeypatch,
                                                                                               settings):
    queued = []
    monkeypatch.setattr(training.services, "enqueue_on_commit", lambda task, *ids, job: queued.append((task, ids)))
    run = start_training_run(kind="classifier", config=tiny(), dataset=synthetic, enqueue=False)
    now = timezone.now()
    stale = timedelta(seconds=settings.TRAINING_STALE_AFTER_S)

    def silent_for(delta):
        TrainingRun.objects.filter(pk=run.pk).update(status="running", heartbeat_at=now - delta)

    silent_for(stale - timedelta(seconds=1))
    assert mark_interrupted_runs(now=now, auto_resume=True) == 0
    assert TrainingRun.objects.get(pk=run.pk).status == "running" and not queued
    silent_for(stale + timedelta(seconds=1))
    assert mark_interrupted_runs(now=now, auto_resume=True) == 1
    first = TrainingRun.objects.get(pk=run.pk)
    assert first.status == "queued" and "resumed automatically" in first.error
    assert queued == [("training.run", (run.pk,))]
    silent_for(stale + timedelta(seconds=1))  # interrupted again: now it waits for a person's Resume
    assert mark_interrupted_runs(now=now, auto_resume=True) == 1
    again = TrainingRun.objects.get(pk=run.pk)
    assert again.status == "interrupted" and len(queued) == 1
    assert resume_run(run=again, enqueue=False).status == "queued"


def test_a_heartbeat_thread_beats_while_a_run_trains(synthetic):
    run = start_training_run(kind="classifier", config=tiny(), dataset=synthetic, enqueue=False)
    old = timezone.now() - timedelta(hours=1)
    TrainingRun.objects.filter(pk=run.pk).update(status="running", heartbeat_at=old)
    with Heartbeat(run.pk, every_s=0.05):
        wait_until(lambda: TrainingRun.objects.get(pk=run.pk).heartbeat_at > old, timeout=10,
                   message="the heartbeat thread never wrote a heartbeat")


def test_the_sweep_the_heartbeat_and_the_broker_agree_on_a_killed_worker(settings):
    """Noticed within TRAINING_STALE_AFTER_S + a sweep; the broker's late copy comes after that."""
    sweep = settings.CELERY_BEAT_SCHEDULE["training-mark-interrupted"]
    assert sweep["task"] == "training.mark_interrupted"
    assert settings.TRAINING_STALE_AFTER_S + sweep["schedule"] <= 60  # noticed within a minute
    assert settings.TRAINING_HEARTBEAT_S * 3 <= settings.TRAINING_STALE_AFTER_S
    assert train_task.acks_late and train_task.reject_on_worker_lost
    options = app.conf.broker_transport_options or {}
    if "visibility_timeout" in options:  # the Redis broker
        assert options["visibility_timeout"] > settings.TRAINING_STALE_AFTER_S + sweep["schedule"]


def test_promote_and_rollback(synthetic):
    versions = []
    for _ in range(2):
        run = execute_run(start_training_run(kind="classifier", config=tiny(epochs=1), dataset=synthetic,
                                             enqueue=False).pk)
        versions.append(ModelVersion.objects.get(run=run))
    # one-epoch tiny models: below the macro-F1 floor, or the second worse than the first
    promote(version=versions[0], confirm=True)
    promote(version=versions[1], confirm=True)
    assert promoted_version("classifier") == versions[1]
    assert ModelVersion.objects.filter(promoted=True).count() == 1
    assert rollback(kind="classifier", confirm=True) == versions[0]
    assert promoted_version("classifier").pk == versions[0].pk
    assert Promotion.objects.count() == 3


def test_train_command_refuses_bad_input_with_one_line(synthetic):
    bad = manage("train", "classifier", "--dataset", "nope")
    assert bad.returncode != 0 and "no dataset named 'nope'" in bad.stderr
    bad = manage("train", "classifier", "--dataset", "trainset", "--preset", "resnest9")
    assert bad.returncode != 0 and "unknown preset" in bad.stderr and "Traceback" not in bad.stderr
    bad = manage("train", "detector", "--dataset", "trainset", "--preset", "resnest50")
    assert bad.returncode != 0 and "unknown preset 'resnest50' for the detector" in bad.stderr
    bad = manage("train", "detector", "--dataset", "trainset", "--preset", "yolov4_test", "--input-size", "100")
    assert bad.returncode != 0 and "multiple of 32" in bad.stderr and "Traceback" not in bad.stderr


def test_a_run_started_for_the_queue_is_trained_by_a_worker_consuming_only_the_gpu_queue(synthetic):
    from celery.contrib.testing.worker import start_worker

    from cytoloop.celery import app

    app.control.purge()
    run = start_training_run(kind="classifier", config=tiny(epochs=1), dataset=synthetic)  # enqueued on commit
    assert TrainingRun.objects.get(pk=run.pk).task_id
    with start_worker(app, queues=["gpu"], pool="solo", perform_ping_check=False, loglevel="WARNING",
                      shutdown_timeout=60):
        wait_until(lambda: TrainingRun.objects.get(pk=run.pk).status not in ("queued", "running"),
                   timeout=240, interval=0.5, message="the worker did not finish the run")
    run = TrainingRun.objects.get(pk=run.pk)
    assert run.status == "succeeded", (run.status, run.error)
    assert ModelVersion.objects.filter(run=run).exists()


@pytest.fixture
def atypical(tmp_path):
    out = tmp_path / "det"
    config = SyntheticConfig.small(size=128, grades=["NILM", "LSIL", "HSIL"])
    records = generate_dataset(out, 10, seed=9, config=config)
    write_coco(records, out / "annotations.json")
    ds, _ = ensure_dataset(name="detset")
    import_images(dataset=ds, path=out / "images", annotations=out / "annotations.json")
    return ds


def test_a_tiny_detector_run_registers_a_version_with_threshold_report_and_saved_model(atypical, settings):
    from training.detector.config import (
        DetectorAugmentConfig,
        DetectorOptimConfig,
        DetectorRunConfig,
    )

    config = DetectorRunConfig(preset="yolov4_test", input_size=128, anchors="preset",
                               augment=DetectorAugmentConfig(oversample=False, mosaic=False),
                               optim=DetectorOptimConfig(epochs=2, batch_size=4, steps_per_epoch=2))
    run = execute_run(start_training_run(kind="detector", config=config, dataset=atypical, enqueue=False).pk)
    assert run.status == "succeeded", run.error
    assert [h["epoch"] for h in run.history] == [1, 2] and run.best_metric is not None
    version = ModelVersion.objects.get(run=run)
    assert version.kind == "detector" and "best_val_map" in version.metrics
    assert 0.0 <= version.metrics["threshold"]["threshold"] <= 1.0
    assert {"ap", "map", "verdict"} <= set(version.metrics["test"])
    folder = Path(settings.MEDIA_ROOT) / version.artifact_dir
    assert (folder / "saved_model" / "saved_model.pb").exists() and (folder / "saved_model" / "detector.json").exists()
    assert (folder / "confusion.png").exists()
    promote(version=version, confirm=True)  # an untrained-size detector is below the mAP floor
    assert promoted_version("detector") == version
