"""Shared by the Training page tests: a dataset version, and runs and model versions made on it."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image as PILImage

from annotation.models import Dataset
from training.classifier.config import ClassifierRunConfig, DataConfig, OptimConfig
from training.metrics import classification_report
from training.models import DatasetVersion, ModelVersion, TrainingRun


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
