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
from training.records import DatasetVersion, ModelVersion

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    import keras

    from training.detector_trainer import export_detector_saved_model
    from training.models.resnest import ResNeStClassifier
    from training.models.yolov4 import build_detector
    from training.trainer import export_saved_model

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
