"""The tiny classifier learns synthetic cluster crops clearly above chance (about 30 s here).

Six balanced grades from the synthetic generator, split by image; the training loop is the
platform's own (train_classifier), evaluated on held-out images. Chance for six classes is a
macro-F1 and an accuracy of about 1/6."""

import numpy as np
import pytest

from annotation.bethesda import BETHESDA
from annotation.crops import crops_for_image
from annotation.synthetic import SyntheticConfig, generate_image
from training.augment import AugmentConfig
from training.classifier.config import ClassifierRunConfig, DataConfig, OptimConfig
from training.classifier.data import ClassifierData
from training.classifier.trainer import train_classifier
from training.smoothing import TargetConfig

CHANCE = 1 / len(BETHESDA)


@pytest.fixture(scope="module")
def crops():
    config = SyntheticConfig.small(size=192, grades=BETHESDA, clusters_per_image=(2, 4))
    x, y, image = [], [], []
    for seed in range(120):
        picture = generate_image(seed, config)
        x.append(crops_for_image(picture.image, list(picture.boxes), size=40))
        y += [BETHESDA.index(b.label) for b in picture.boxes]
        image += [seed] * len(picture.boxes)
    x, y, image = np.concatenate(x), np.asarray(y), np.asarray(image)
    train, val, test = image < 80, (image >= 80) & (image < 95), image >= 95
    return ClassifierData(x[train], y[train], x[val], y[val], x[test], y[test])


def test_every_grade_is_in_training_and_test(crops):
    assert set(crops.train_labels) == set(range(6)) and set(crops.test_labels) == set(range(6))


def test_tiny_model_learns_synthetic_crops_clearly_above_chance(crops, tmp_path):
    config = ClassifierRunConfig(
        preset="resnest_tiny", dropout=0.0, data=DataConfig(input_size=40), targets=TargetConfig(kind="onehot"),
        augment=AugmentConfig(oversample=False, scale=False, random_erasing=False),
        optim=OptimConfig(epochs=8, batch_size=32, learning_rate=3e-3, steps_per_epoch=25, patience=100),
    )
    result = train_classifier(crops, config, tmp_path)
    report = result.test_report
    assert report["n"] == len(crops.test_labels) >= 20
    assert report["average"]["f1"] > 2 * CHANCE, report["average"]
    assert report["overall_accuracy"] > 2 * CHANCE, report["overall_accuracy"]
    # it learned during the run: the best validation score beats the first epoch's
    assert result.best_val_macro_f1 > result.history[0]["val_macro_f1"]
