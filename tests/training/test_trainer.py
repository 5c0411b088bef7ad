"""The classifier training loop without a database: early stopping, time limit, the best
checkpoint by validation macro-F1, progress reports. Tiny preset, 32 px random crops."""

import numpy as np
import pytest

from training.augment import AugmentConfig
from training.classifier.config import ClassifierRunConfig, DataConfig, OptimConfig
from training.classifier.data import ClassifierData
from training.classifier.trainer import train_classifier
from training.loop import Hooks


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


def test_a_torn_checkpoint_resumes_from_the_previous_good_one_and_says_so(data, tmp_path):
    first = train_classifier(data, config(epochs=2, patience=10), tmp_path)
    assert [h["epoch"] for h in first.history] == [1, 2]
    assert (tmp_path / "last.prev.keras").exists() and (tmp_path / "state.prev.json").exists()
    (tmp_path / "last.keras").write_bytes((tmp_path / "last.keras").read_bytes()[:2078])  # torn mid-write
    reports = []
    result = train_classifier(data, config(epochs=3, patience=10), tmp_path, Hooks(on_progress=reports.append))
    assert [h["epoch"] for h in result.history] == [1, 2, 3]  # epoch 2 again, from epoch 1's checkpoint
    assert result.history[0] == first.history[0]
    assert reports and all("last.keras is unreadable" in r["resumed"] and "(epoch 1)" in r["resumed"]
                           for r in reports), reports[:1]
    assert result.model_path is not None


@pytest.fixture
def pretend_two_gpus(monkeypatch):
    """The GPU-host path on this CPU: accelerator() reports two cards, MirroredStrategy is
    counted (on a CPU-only host it mirrors over the CPU), and the global dtype policy the run
    sets is put back afterwards."""
    import keras
    import tensorflow as tf

    import training.loop

    fake = {"gpus": 2, "names": ["pretend card 0", "pretend card 1"]}
    monkeypatch.setattr(training.loop, "accelerator", lambda: fake)
    made = []
    real = tf.distribute.MirroredStrategy

    def counted(*args, **kwargs):
        made.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(tf.distribute, "MirroredStrategy", counted)
    compile_real = keras.Model.compile

    def compile_spy(self, *args, **kwargs):
        made.append(("jit_compile", kwargs.get("jit_compile")))
        return compile_real(self, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "compile", compile_spy)
    before = keras.mixed_precision.global_policy().name
    yield made
    keras.mixed_precision.set_global_policy(before)


def test_on_a_gpu_host_the_classifier_trains_mixed_precision_xla_and_mirrored(data, tmp_path, pretend_two_gpus):
    import keras

    result = train_classifier(data, config(epochs=1), tmp_path)
    assert keras.mixed_precision.global_policy().name == "mixed_float16"
    assert pretend_two_gpus == [1, ("jit_compile", True)]  # one MirroredStrategy; XLA on
    assert result.model_path is not None and result.test_report is not None
    model = keras.saving.load_model(result.model_path)
    assert model.compute_dtype == "float16" or model.dtype_policy.name == "mixed_float16"


def _detector_run_on_three_images(tmp_path):
    """One epoch of the 128 px test preset: two training images, one for validation and test."""
    from training.detector.config import (
        DetectorAugmentConfig,
        DetectorOptimConfig,
        DetectorRunConfig,
    )
    from training.detector.data import DetectorData
    from training.detector.trainer import train_detector

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, size=(128, 128, 3), dtype=np.uint8) for _ in range(3)]
    boxes = [np.array([[20.0, 20.0, 60.0, 60.0]], np.float32) for _ in range(3)]
    classes = [np.array([3]) for _ in range(3)]
    data = DetectorData(images[:2], boxes[:2], classes[:2], images[2:], boxes[2:], classes[2:],
                        images[2:], boxes[2:], classes[2:])
    config = DetectorRunConfig(preset="yolov4_test", input_size=128, anchors="preset",
                               augment=DetectorAugmentConfig(oversample=False, mosaic=False),
                               optim=DetectorOptimConfig(epochs=1, batch_size=2, steps_per_epoch=2))
    return train_detector(data, config, tmp_path)


def test_on_a_gpu_host_the_detector_is_built_mixed_precision_xla_and_mirrored(tmp_path, pretend_two_gpus,
                                                                              monkeypatch):
    """The short version of the next test (slow: XLA compiles the train step on the CPU): the run
    is stopped at its first fit, with the model it would train built and compiled."""
    import keras

    class FirstFit(Exception):
        pass

    def first_fit(model, *args, **kwargs):
        raise FirstFit(model)

    monkeypatch.setattr(keras.Model, "fit", first_fit)
    with pytest.raises(FirstFit) as stopped:
        _detector_run_on_three_images(tmp_path)
    model = stopped.value.args[0]
    assert keras.mixed_precision.global_policy().name == "mixed_float16"
    assert model.dtype_policy.name == "mixed_float16"
    assert type(model.distribute_strategy).__name__ == "MirroredStrategy"
    assert pretend_two_gpus == [1, ("jit_compile", True)]  # one MirroredStrategy; XLA on


@pytest.mark.slow
def test_on_a_gpu_host_the_detector_trains_mixed_precision_xla_and_mirrored(tmp_path, pretend_two_gpus):
    import keras

    result = _detector_run_on_three_images(tmp_path)
    assert keras.mixed_precision.global_policy().name == "mixed_float16"
    assert pretend_two_gpus[0] == 1 and ("jit_compile", True) in pretend_two_gpus
    assert result.model_path is not None and len(result.history) == 1
