"""The classifier training loop without a database: early stopping, time limit, the best
checkpoint by validation macro-F1, progress reports. Tiny preset, 32 px random crops."""

import numpy as np
import pytest

from training.augment import AugmentConfig
from training.config import ClassifierRunConfig, DataConfig, OptimConfig
from training.trainer import ClassifierData, Hooks, train_classifier


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)

    def part(n):
        return rng.integers(0, 255, size=(n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 6, size=n)

    (tx, ty), (vx, vy), (sx, sy) = part(16), part(8), part(8)
    return ClassifierData(tx, ty, vx, vy, sx, sy)


def config(**optim):
    values = {"epochs": 3, "batch_size": 8, "learning_rate": 3e-3, "steps_per_epoch": 2, **optim}
    return ClassifierRunConfig(preset="resnest_tiny", dropout=0.0, data=DataConfig(input_size=32),
                               augment=AugmentConfig(oversample=False), optim=OptimConfig(**values))


def test_early_stopping_after_patience_epochs_without_improvement(data, tmp_path):
    # six identical validation crops, one per class: whatever the model predicts, it predicts one
    # class for all six, so the macro-F1 is 2/7 / 6 every epoch and never improves on the first
    flat = ClassifierData(data.train_images, data.train_labels, np.full((6, 32, 32, 3), 128, np.uint8),
                          np.arange(6), data.test_images, data.test_labels)
    result = train_classifier(flat, config(epochs=10, patience=2), tmp_path)
    assert {round(h["val_macro_f1"], 6) for h in result.history} == {round(2 / 7 / 6, 6)}
    assert result.stopped == "early_stopping"
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert result.best_epoch == 1 and result.model_path is not None


def test_time_limit_stops_the_run_and_keeps_what_it_has(data, tmp_path):
    result = train_classifier(data, config(epochs=50, steps_per_epoch=400, time_limit_s=1), tmp_path)
    assert result.stopped == "time_limit"
    assert len(result.history) == 1 and result.model_path is not None and result.test_report is not None


def test_best_checkpoint_is_the_best_validation_epoch_and_progress_is_reported(data, tmp_path):
    reports = []
    result = train_classifier(data, config(epochs=4, patience=10), tmp_path, Hooks(on_progress=reports.append))
    scores = [h["val_macro_f1"] for h in result.history]
    assert result.best_val_macro_f1 == max(scores)
    assert result.best_epoch == scores.index(max(scores)) + 1
    ends = [r for r in reports if "history" in r]
    assert [len(r["history"]) for r in ends] == [1, 2, 3, 4]
    assert all({"step", "steps", "epoch", "epochs", "loss"} <= set(r) for r in reports)
    assert any(r.get("eta_s") is not None for r in reports)
