"""Prediction jobs: the promoted models over a dataset, stored per cluster, pushed to the real
Label Studio as pre-annotations, idempotent per (image, model versions), and nothing lost while
Label Studio is down. Untrained test-size models (threshold 0) keep it to seconds."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from annotation import labelstudio
from annotation.models import Image, PredictionBox
from annotation.services import ensure_dataset, import_images
from inference.models import ClusterPrediction, ImagePrediction, PredictionJob
from inference.services import InferenceRefused, run_prediction_job, start_prediction_job
from tests.helpers import wait_until
from training.models import DatasetVersion, ModelVersion

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    import keras

    from training.classifier.trainer import export_saved_model
    from training.detector.trainer import export_detector_saved_model
    from training.networks.resnest import ResNeStClassifier
    from training.networks.yolov4 import build_detector

    base = tmp_path_factory.mktemp("models")
    keras.utils.set_random_seed(2)
    build_detector("yolov4_test", num_classes=5).save(base / "detector.keras")
    export_detector_saved_model(base / "detector.keras", base / "detector")
    ResNeStClassifier.from_preset("resnest_tiny", input_size=32).save(base / "classifier.keras")
    export_saved_model(base / "classifier.keras", base / "classifier")
    return base


def promote_models(exported: Path, media_root: Path, dataset):
    dv = DatasetVersion.objects.create(dataset=dataset, number=1, splits={})
    versions = []
    for kind in ("detector", "classifier"):
        target = media_root / "models" / kind / f"{kind}-test" / "saved_model"
        shutil.copytree(exported / kind, target, dirs_exist_ok=True)
        versions.append(ModelVersion.objects.create(
            kind=kind, name=f"{kind}-test", dataset_version=dv, artifact_dir=f"models/{kind}/{kind}-test",
            config={"data": {"margin": 0.25}}, metrics={"threshold": {"threshold": 0.0}} if kind == "detector"
            else {}, promoted=True))
    return versions


def make_dataset(tmp_path, name, n=3):
    from PIL import Image as PILImage

    rng = np.random.default_rng(5)
    folder = tmp_path / name
    folder.mkdir()
    for i in range(n):
        PILImage.fromarray(rng.integers(0, 255, size=(120, 160, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    dataset, _ = ensure_dataset(name=name)
    import_images(dataset=dataset, path=folder)
    return dataset


def test_a_job_needs_promoted_models(tmp_path, settings):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    dataset = make_dataset(tmp_path, "nomodels", 1)
    with pytest.raises(InferenceRefused, match="no promoted detector or classifier"):
        start_prediction_job(dataset=dataset, enqueue=False)
    assert not PredictionJob.objects.exists()


def test_a_job_predicts_every_image_once_and_pushes_preannotations(label_studio, exported, tmp_path, settings):
    dataset = make_dataset(tmp_path, "predict-me")
    promote_models(exported, Path(settings.MEDIA_ROOT), dataset)
    with pytest.raises(InferenceRefused, match="not in dataset"):
        start_prediction_job(dataset=dataset, image_ids=[10**6], enqueue=False)

    job = run_prediction_job(start_prediction_job(dataset=dataset, enqueue=False).pk)
    assert job.status == "succeeded", job.error
    assert job.progress["predicted"] == 3 and job.progress["pushed"] == 3 and job.progress["push_failed"] == 0
    assert ImagePrediction.objects.count() == 3
    clusters = ClusterPrediction.objects.count()
    assert clusters > 0 and PredictionBox.objects.filter(model_version="detector-test+classifier-test").count() == clusters
    image = Image.objects.filter(dataset=dataset).order_by("id").first()
    stored = ImagePrediction.objects.get(image=image)
    in_ls = labelstudio.client().predictions.list(task=image.ls_task_id)
    assert [p.model_version for p in in_ls] == ["detector-test+classifier-test"]
    assert len(in_ls[0].result) == stored.clusters.count() and in_ls[0].result[0]["score"] is not None

    again = run_prediction_job(start_prediction_job(dataset=dataset, enqueue=False).pk)  # idempotent
    assert again.progress["predicted"] == 0 and again.progress["skipped"] == 3 and again.progress["pushed"] == 0
    assert ImagePrediction.objects.count() == 3 and ClusterPrediction.objects.count() == clusters
    assert len(labelstudio.client().predictions.list(task=image.ls_task_id)) == 1


def test_predictions_are_kept_while_label_studio_is_down_and_pushed_on_the_next_run(
        label_studio, exported, tmp_path, settings):
    dataset = make_dataset(tmp_path, "ls-down", 2)
    promote_models(exported, Path(settings.MEDIA_ROOT), dataset)
    labelstudio.push_images(dataset, list(Image.objects.filter(dataset=dataset)))
    label_studio.stop()
    try:
        job = run_prediction_job(start_prediction_job(dataset=dataset, enqueue=False).pk)
    finally:
        label_studio.start()
    assert job.status == "succeeded" and job.progress["push_failed"] == 2 and job.progress["pushed"] == 0
    assert ImagePrediction.objects.filter(ls_prediction_id__isnull=True).count() == 2  # kept, pending
    again = run_prediction_job(start_prediction_job(dataset=dataset, enqueue=False).pk)
    assert again.progress["pushed"] == 2 and not ImagePrediction.objects.filter(ls_prediction_id__isnull=True).exists()


def prediction_rows(dataset):
    """Every stored prediction of the dataset, as comparable tuples."""
    return (sorted(ImagePrediction.objects.filter(image__dataset=dataset).values_list("id", "image_id", "verdict")),
            sorted(PredictionBox.objects.filter(image__dataset=dataset).values_list(
                "id", "image_id", "x", "y", "width", "height", "label", "score", "model_version")),
            sorted(ClusterPrediction.objects.filter(image_prediction__image__dataset=dataset).values_list(
                "id", "box_id", "detector_score", "detector_class")))


def test_no_two_predictions_of_an_image_overlap_with_one_label(exported, tmp_path, settings):
    from training.detection.boxes import box_iou, xywh_to_xyxy

    dataset = make_dataset(tmp_path, "no-copies", 2)
    promote_models(exported, Path(settings.MEDIA_ROOT), dataset)
    job = run_prediction_job(start_prediction_job(dataset=dataset, push_to_label_studio=False, enqueue=False).pk)
    assert job.status == "succeeded", job.error
    for image in Image.objects.filter(dataset=dataset):
        boxes = list(PredictionBox.objects.filter(image=image))
        assert len(boxes) > 1  # threshold 0: an untrained detector finds many
        iou = box_iou(*(2 * [xywh_to_xyxy(np.asarray([[b.x, b.y, b.width, b.height] for b in boxes]))]))
        copies = [(a.label, a.score, round(float(iou[i, j]), 3)) for i, a in enumerate(boxes)
                  for j, b in enumerate(boxes) if i < j and a.label == b.label and iou[i, j] > 0.9]
        assert copies == [], f"image {image.pk}: {len(copies)} near-copies of {len(boxes)}"


def test_running_a_prediction_job_again_changes_nothing(exported, tmp_path, settings):
    dataset = make_dataset(tmp_path, "rerun", 2)
    promote_models(exported, Path(settings.MEDIA_ROOT), dataset)
    job = run_prediction_job(start_prediction_job(dataset=dataset, push_to_label_studio=False, enqueue=False).pk)
    before = prediction_rows(dataset)
    assert job.status == "succeeded" and before[1]
    # the task redelivered (acks_late after a lost worker finds the job still running) ...
    PredictionJob.objects.filter(pk=job.pk).update(status=PredictionJob.Status.RUNNING)
    assert run_prediction_job(job.pk).progress["predicted"] == 0
    # ... and a second job for the same models
    run_prediction_job(start_prediction_job(dataset=dataset, push_to_label_studio=False, enqueue=False).pk)
    assert prediction_rows(dataset) == before


def test_two_workers_storing_one_image_keep_one_prediction(tmp_path, settings):
    # A redelivered task runs beside the first: both find no prediction and insert; the second
    # waits on the unique index, then must return the first one's rows, not fail the job.
    import threading

    from django.db import connection, connections, transaction

    from inference.pipeline import ClusterResult, ImageResult
    from inference.services import store_prediction

    dataset = make_dataset(tmp_path, "race", 1)
    dv = DatasetVersion.objects.create(dataset=dataset, number=1, splits={})
    detector, classifier = (ModelVersion.objects.create(kind=kind, name=f"{kind}-race", dataset_version=dv, config={}, metrics={})
                            for kind in ("detector", "classifier"))
    image = Image.objects.get(dataset=dataset)
    result = ImageResult([ClusterResult((1, 2, 30, 20), 0.9, "HSIL", np.eye(6)[4], np.ones(4, np.float32))])
    outcome = {}

    def second_worker():
        try:
            outcome["stored"] = store_prediction(image=image, result=result, detector=detector, classifier=classifier)
        except Exception as exc:  # noqa: BLE001 - the test reports it
            outcome["error"] = exc
        finally:
            connections.close_all()

    with transaction.atomic():
        first = store_prediction(image=image, result=result, detector=detector, classifier=classifier)
        worker = threading.Thread(target=second_worker)
        worker.start()
        with connection.cursor() as cursor:

            def second_insert_waits_or_ended():  # waits on our uncommitted row
                cursor.execute("SELECT pg_stat_clear_snapshot()")  # else one snapshot per transaction
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                               "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()")
                return cursor.fetchone()[0] or not worker.is_alive()

            wait_until(second_insert_waits_or_ended, timeout=20, interval=0.02,
                       message="the second worker never waited on the first one's insert")
    worker.join(20)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["stored"].pk == first.pk
    assert ImagePrediction.objects.filter(image=image).count() == 1 and PredictionBox.objects.filter(image=image).count() == 1


def test_a_preannotation_whose_push_reply_was_lost_is_not_pushed_twice(label_studio, exported, tmp_path, settings):
    dataset = make_dataset(tmp_path, "lost-reply", 1)
    promote_models(exported, Path(settings.MEDIA_ROOT), dataset)
    run_prediction_job(start_prediction_job(dataset=dataset, enqueue=False).pk)
    stored = ImagePrediction.objects.get(image__dataset=dataset)
    pushed_id = stored.ls_prediction_id
    assert pushed_id is not None
    # Label Studio created it but the worker died before recording the id: the next run pushes again
    ImagePrediction.objects.filter(pk=stored.pk).update(ls_prediction_id=None)
    again = run_prediction_job(start_prediction_job(dataset=dataset, enqueue=False).pk)
    assert again.status == "succeeded", again.error
    assert [p.id for p in labelstudio.client().predictions.list(task=stored.image.ls_task_id)] == [pushed_id]
    stored.refresh_from_db()
    assert stored.ls_prediction_id == pushed_id


def test_the_repair_merges_exact_copies_stored_before_the_fix(tmp_path, make_user):
    from annotation.models import ExpertAnnotation, ExpertBox
    from inference.models import RankedImage
    from inference.pipeline import ClusterResult, ImageResult
    from inference.repair import merge_exact_copies
    from inference.services import store_prediction

    dataset = make_dataset(tmp_path, "old-copies", 1)
    dv = DatasetVersion.objects.create(dataset=dataset, number=1, splits={})
    detector, classifier = (ModelVersion.objects.create(kind=kind, name=f"{kind}-old", dataset_version=dv,
                                                        config={}, metrics={}) for kind in ("detector", "classifier"))
    image = Image.objects.get(dataset=dataset)
    p = np.eye(6)[4] * 0.9 + 0.02

    def lesion(box, grade):
        return ClusterResult(box, 0.8, grade, p, np.ones(4, np.float32))

    # what the old pipeline stored: one lesion twice (two detector classes), and a distinct one
    store_prediction(image=image, result=ImageResult([lesion((5, 5, 30, 20), "HSIL"), lesion((5, 5, 30, 20), "LSIL"),
                                                      lesion((60, 40, 20, 20), "HSIL")]),
                     detector=detector, classifier=classifier)
    first, copy, other = PredictionBox.objects.filter(image=image).order_by("id")
    expert = ExpertAnnotation.objects.create(image=image, annotator=make_user("e1@example.org"), origin="editor")
    from_copy = ExpertBox.objects.create(annotation=expert, x=5, y=5, width=30, height=20, label="HSIL",
                                         prediction=copy, prediction_model=copy.model_version, prediction_changed=False)
    models = {"PredictionBox": PredictionBox, "ClusterPrediction": ClusterPrediction, "ExpertBox": ExpertBox,
              "RankedImage": RankedImage}
    assert merge_exact_copies(**models) == 1
    assert list(PredictionBox.objects.filter(image=image).order_by("id")) == [first, other]
    assert ClusterPrediction.objects.filter(image_prediction__image=image).count() == 2
    from_copy.refresh_from_db()
    assert from_copy.prediction_id == first.pk
    assert merge_exact_copies(**models) == 0
