"""Detector training: run config, learning-rate schedule, the tf.data pipeline, anchors, and the
training loop on synthetic Pap images with the test-size YOLOv4 (128 px, 1/8 widths).

Each ``train_detector`` call pays one trace of the train step (15-25 s on two CPU cores); the
overfitting run is shared by the tests that read its model, threshold and report. Synthetic
clusters are drawn at 0.4 of their usual size so that one or two fit a 128 px image; their
Bethesda labels become detector classes in ATYPICAL order, NILM boxes are dropped.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from annotation.bethesda import ATYPICAL
from annotation.synthetic import SyntheticConfig, generate_image
from training import augment as image_augment
from training.detection import augment as det_augment
from training.detection.evaluate import GroundTruth, average_precision
from training.detection.letterbox import letterbox
from training.detector.config import (
    DetectorAugmentConfig,
    DetectorOptimConfig,
    DetectorRunConfig,
)
from training.detector.data import (
    DetectorData,
    choose_anchors,
    examples_per_epoch,
    letterbox_split,
    prepare_split,
    training_example,
)
from training.detector.evaluation import DetectorPredictor
from training.detector.trainer import train_detector
from training.loop import Hooks

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

SIZE = 128
NO_AUGMENT = DetectorAugmentConfig(oversample=False, mosaic=False)


def synthetic(seed: int, *, size: int = SIZE, grades=("LSIL", "SCC"), clusters=(1, 2)):
    """(image uint8, boxes xyxy, detector classes) of one synthetic picture."""
    config = SyntheticConfig.small(size=size, grades=list(grades), cell_scale=0.4,
                                   clusters_per_image=clusters)
    picture = generate_image(seed, config)
    atypical = [b for b in picture.boxes if b.label in ATYPICAL]
    boxes = np.array([[b.x, b.y, b.x + b.width, b.y + b.height] for b in atypical], dtype=float)
    classes = np.array([ATYPICAL.index(b.label) for b in atypical], dtype=np.int64)
    return picture.image, boxes.reshape(-1, 4), classes


def dataset(seeds, **kwargs):
    images, boxes, classes = zip(*(synthetic(s, **kwargs) for s in seeds), strict=True)
    return list(images), list(boxes), list(classes)


def run_config(epochs: int, steps: int, *, batch_size: int = 4, augment=NO_AUGMENT,
               learning_rate: float = 1e-3, **optim):
    """The test preset at 128 px. Batch-norm momentum 0.9: with 0.99 the moving statistics of a
    run this short still lag far behind the weights and inference mode finds little."""
    return DetectorRunConfig(
        preset="yolov4_test", input_size=SIZE, anchors="preset", bn_momentum=0.9, augment=augment,
        optim=DetectorOptimConfig(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                                  steps_per_epoch=steps, patience=100, **optim),
    )


def load_model(path):
    import training.networks.yolov4  # noqa: F401  (registers the custom layers)

    return keras.saving.load_model(path)


# --- config and schedule ----------------------------------------------------------------------


def test_run_config_round_trips_through_json():
    config = DetectorRunConfig(
        preset="yolov4_tiny", input_size=416, anchors="preset", bn_momentum=0.97,
        augment=DetectorAugmentConfig(mosaic_prob=0.25, mosaic_centre_range=(0.3, 0.7)),
        optim=DetectorOptimConfig(epochs=7, warmup_epochs=0.5, time_limit_s=600, seed=3),
    )
    data = json.loads(json.dumps(config.to_json()))
    assert DetectorRunConfig.from_json(data) == config
    assert DetectorRunConfig.from_json({}) == DetectorRunConfig()
    assert DetectorRunConfig().input_size is None and DetectorRunConfig().anchors == "kmeans"


@pytest.mark.parametrize("bad", [
    {"anchors": "random"}, {"input_size": 100}, {"num_classes": 0},
    {"augment": {"mosaic_prob": 1.5}}, {"optim": {"batch_size": 0}}, {"target_recall": 0.0},
])
def test_run_config_refuses_bad_values(bad):
    with pytest.raises(ValueError):
        DetectorRunConfig.from_json(bad)


def test_schedule_warms_up_linearly_then_follows_a_cosine_to_its_floor():
    from training.detection.schedule import WarmupCosineDecay

    schedule = WarmupCosineDecay(0.01, total_steps=110, warmup_steps=10, final_ratio=0.1)
    values = {step: float(schedule(step)) for step in (0, 5, 10, 35, 60, 85, 110, 500)}
    expected = {0: 0.0, 5: 0.005, 10: 0.01, 60: 0.0055, 110: 0.001, 500: 0.001,
                35: 0.001 + 0.009 * (1 + math.cos(math.pi / 4)) / 2,
                85: 0.001 + 0.009 * (1 + math.cos(3 * math.pi / 4)) / 2}
    assert values == pytest.approx(expected, rel=1e-5, abs=1e-9)
    reference = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=100, alpha=0.1, warmup_target=0.01, warmup_steps=10)
    steps = np.arange(0, 130, 7)
    np.testing.assert_allclose([float(schedule(s)) for s in steps],
                               [float(reference(s)) for s in steps], rtol=1e-5, atol=1e-9)


def test_schedule_is_serialisable_alone_and_inside_an_optimizer():
    from training.detection.schedule import WarmupCosineDecay

    schedule = WarmupCosineDecay(3e-3, total_steps=50, warmup_steps=5, final_ratio=0.01)
    data = json.loads(json.dumps(keras.saving.serialize_keras_object(schedule)))
    again = keras.saving.deserialize_keras_object(data)
    assert isinstance(again, WarmupCosineDecay) and again.get_config() == schedule.get_config()
    optimizer = keras.optimizers.AdamW(schedule, weight_decay=5e-4)
    restored = keras.optimizers.deserialize(
        json.loads(json.dumps(keras.optimizers.serialize(optimizer))))
    assert restored.get_config()["learning_rate"] == optimizer.get_config()["learning_rate"]
    assert float(restored.learning_rate) == pytest.approx(float(schedule(0)))


# --- data ------------------------------------------------------------------------------------


def test_prepare_split_clips_boxes_to_their_image_and_checks_classes():
    image = np.zeros((40, 60, 3), dtype=np.uint8)
    split = prepare_split([image], [[[-5, 10, 30, 50], [70, 0, 80, 10]]], [[1, 2]], 5)
    assert split.boxes[0].tolist() == [[0.0, 10.0, 30.0, 40.0]] and split.classes[0].tolist() == [1]
    with pytest.raises(ValueError, match="0..4"):
        prepare_split([image], [[[0, 0, 10, 10]]], [[5]], 5)


def test_a_plain_training_example_is_the_letterboxed_image_and_boxes():
    image, boxes, classes = synthetic(0, size=160)
    split = prepare_split([image], [boxes], [classes], 5)
    canvas, out_boxes, out_classes = training_example(split, 0, SIZE, NO_AUGMENT,
                                                      np.random.default_rng(0))
    expected, info = letterbox(image, SIZE)
    np.testing.assert_array_equal(canvas, expected)
    np.testing.assert_allclose(out_boxes, info.to_input(boxes))
    assert out_classes.tolist() == classes.tolist()


def test_oversampled_example_numbers_walk_the_36_variants_of_each_image():
    images, boxes, classes = dataset([0, 1])
    split = prepare_split(images, boxes, classes, 5)
    augment = DetectorAugmentConfig(oversample=True, mosaic=False)
    assert examples_per_epoch(2, augment) == 72
    canvas, out_boxes, _ = training_example(split, 36 + 14, SIZE, augment, np.random.default_rng(0))
    pixels, moved = det_augment.variant(images[1], boxes[1], 14)
    np.testing.assert_array_equal(canvas, pixels)  # already at the input size
    np.testing.assert_array_equal(pixels, image_augment.variant(images[1], 14))
    np.testing.assert_allclose(out_boxes, moved)


def test_mosaic_examples_carry_boxes_of_several_images():
    images, boxes, classes = dataset(range(4), grades=("ASC-US", "LSIL", "ASC-H", "HSIL", "SCC"))
    split = prepare_split(images, boxes, classes, 5)
    augment = DetectorAugmentConfig(oversample=True, mosaic=True, mosaic_prob=1.0)
    counts = []
    for seed in range(10):
        canvas, out_boxes, out_classes = training_example(split, 0, SIZE, augment,
                                                          np.random.default_rng(seed))
        assert canvas.shape == (SIZE, SIZE, 3)
        assert np.all((out_boxes >= 0) & (out_boxes <= SIZE))
        assert np.all(out_boxes[:, 2:] - out_boxes[:, :2] >= augment.min_box_size)
        counts.append(len(out_classes))
    assert max(counts) > max(len(c) for c in classes)


def test_training_batches_hold_images_in_unit_range_and_the_encoder_targets():
    from training.detection.encoder import LabelEncoder
    from training.detector.data import detector_train_dataset
    from training.networks.yolov4 import get_preset

    images, boxes, classes = dataset([0])
    split = prepare_split(images, boxes, classes, 5)
    preset = get_preset("yolov4_test")
    encoder = LabelEncoder(SIZE, preset.strides, preset.anchor_array, 5)
    batch_images, labels = next(iter(detector_train_dataset(split, encoder, 2, NO_AUGMENT)))
    assert batch_images.shape == (2, SIZE, SIZE, 3) and batch_images.dtype == tf.float32
    canvas, info = letterbox(images[0], SIZE)
    np.testing.assert_allclose(batch_images[1].numpy(), canvas / 255.0, atol=1e-6)
    expected = encoder.encode(info.to_input(boxes[0]), classes[0])
    assert len(labels) == len(expected.targets) + 1
    for got, want in zip(labels[:-1], expected.targets, strict=True):
        np.testing.assert_allclose(got[0].numpy(), want, atol=1e-4)
    np.testing.assert_allclose(labels[-1][0].numpy(), expected.gt_boxes, atol=1e-4)


def test_anchors_come_from_kmeans_on_the_training_boxes_at_the_input_size():
    from training.networks.yolov4 import get_preset

    images, boxes, classes = dataset(range(8), size=256, clusters=(2, 3))
    split = prepare_split(images, boxes, classes, 5)
    assert split.num_boxes >= 9
    chosen = choose_anchors(split, get_preset("yolov4_test"), SIZE, "kmeans")
    anchors = np.asarray(chosen["anchors"])
    assert chosen["source"] == "kmeans" and chosen["reason"] is None
    assert anchors.shape == (3, 3, 2) and chosen["num_boxes"] == split.num_boxes
    areas = anchors.reshape(-1, 2).prod(axis=1)
    assert np.all(np.diff(areas) >= 0)  # smallest anchors at the finest stride
    # fitted to these boxes: closer than the preset's generic anchors
    preset = choose_anchors(split, get_preset("yolov4_test"), SIZE, "preset")
    assert chosen["avg_iou"] > preset["avg_iou"]


def test_anchors_fall_back_to_the_preset_with_fewer_boxes_than_anchors():
    from training.networks.yolov4 import get_preset

    images, boxes, classes = dataset([0, 1])
    split = prepare_split(images, boxes, classes, 5)
    assert split.num_boxes < 9
    chosen = choose_anchors(split, get_preset("yolov4_test"), SIZE, "kmeans")
    assert chosen["source"] == "preset" and "too few" in chosen["reason"]
    np.testing.assert_allclose(chosen["anchors"], get_preset("yolov4_test").anchors_at(SIZE),
                               atol=1e-3)


# --- training ---------------------------------------------------------------------------------


def test_loss_decreases_over_training_steps_on_a_synthetic_image(tmp_path):
    images, boxes, classes = dataset([3])
    data = DetectorData(images, boxes, classes)
    progress = []
    config = run_config(epochs=2, steps=20, batch_size=2, warmup_epochs=0.0)
    result = train_detector(data, config, tmp_path, Hooks(on_progress=progress.append))
    steps = [p["loss"] for p in progress if "history" not in p]  # running means, every 5 steps
    assert len(steps) == 8 and steps == sorted(steps, reverse=True), steps
    assert result.history[1]["loss"] < 0.6 * result.history[0]["loss"], (steps, result.history)


@pytest.fixture(scope="module")
def overfit(tmp_path_factory):
    """Four training images; validation and test: the same four and two NILM-only images.

    75 steps at a peak rate of 2e-3: ten sets of four images tried reached a training mAP@0.5
    of 1.0 (nine) or 0.83 (one, a box found at IoU 0.4); these four reach 1.0 by epoch 2."""
    images, boxes, classes = dataset(range(4))
    nilm = dataset([100, 101], grades=("NILM",))
    assert all(len(b) == 0 for b in nilm[1])
    val = [images + nilm[0], boxes + nilm[1], classes + nilm[2]]
    data = DetectorData(images, boxes, classes, *val, *val)
    directory = tmp_path_factory.mktemp("overfit")
    result = train_detector(data, run_config(epochs=3, steps=25, learning_rate=2e-3), directory)
    return data, result, directory


def test_tiny_detector_overfits_a_handful_of_synthetic_images(overfit):
    data, result, _ = overfit
    model = load_model(result.model_path)
    split = prepare_split(data.train_images, data.train_boxes, data.train_classes, 5)
    canvases, infos = letterbox_split(split, SIZE)
    detections = DetectorPredictor(model).predict(canvases, infos)
    truths = [GroundTruth(b, c) for b, c in zip(split.boxes, split.classes, strict=True)]
    ap = average_precision(detections, truths, 5)
    assert ap.map > 0.8, (ap.ap, result.history)
    assert result.stopped == "completed"


def test_threshold_keeps_every_atypical_validation_image(overfit):
    data, result, _ = overfit
    threshold = result.threshold
    assert threshold["source"] == "validation" and threshold["achieved"]
    assert threshold["recall"] == 1.0 and threshold["target_recall"] == 1.0
    model = load_model(result.model_path)
    split = prepare_split(data.val_images, data.val_boxes, data.val_classes, 5)
    canvases, infos = letterbox_split(split, SIZE)
    for detections, classes in zip(DetectorPredictor(model).predict(canvases, infos),
                                   split.classes, strict=True):
        if len(classes):
            assert detections.scores.max() >= threshold["threshold"]
    report = result.test_report
    assert report["atypical"]["recall"] == 1.0 and report["threshold"] == threshold["threshold"]
    assert report["map"] == report["ap"]["map"] and len(report["verdict"]["confusion_matrix"]) == 6
    json.dumps({"report": report, "threshold": threshold, "anchors": result.anchors})


def test_saved_model_export_gives_the_keras_models_heads(overfit, tmp_path):
    from training.detector.trainer import export_detector_saved_model

    data, result, _ = overfit
    out = export_detector_saved_model(result.model_path, tmp_path / "saved")
    served = tf.saved_model.load(str(out))
    model = load_model(result.model_path)
    canvas, _ = letterbox(data.train_images[0], SIZE)
    images = (canvas[None] / 255.0).astype(np.float32)
    for got, want in zip(served.serve(images), model(images), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-4)
    meta = json.loads((out / "detector.json").read_text())
    assert meta["anchors"] == model.anchors and meta["input_size"] == SIZE


@pytest.mark.parametrize("augment, validated", [
    pytest.param(NO_AUGMENT, False, id="plain"),  # the short version: no augmentation, no validation
    pytest.param(DetectorAugmentConfig(oversample=True, mosaic=True, mosaic_prob=0.5), True,
                 id="oversampled-mosaic-validated", marks=pytest.mark.slow),
])
def test_a_run_resumes_from_its_checkpoint(tmp_path, augment, validated):
    from training.detection.schedule import WarmupCosineDecay

    images, boxes, classes = dataset([0, 1])
    data = DetectorData(images, boxes, classes, *((images, boxes, classes) if validated else ()))
    first = train_detector(data, run_config(epochs=1, steps=3, batch_size=2, augment=augment), tmp_path)
    assert first.stopped == "completed" and [h["epoch"] for h in first.history] == [1]
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["epoch"] == 0

    progress = []
    config = run_config(epochs=2, steps=3, batch_size=2, augment=augment)
    second = train_detector(data, config, tmp_path, Hooks(on_progress=progress.append))
    assert [h["epoch"] for h in second.history] == [1, 2]
    assert second.history[0] == first.history[0]
    assert {p["epoch"] for p in progress} == {2}  # epoch 1 was not trained again
    assert second.anchors == first.anchors
    # the optimizer's step count came back: epoch 2 ended at step 6 of the 2-epoch schedule
    schedule = WarmupCosineDecay(1e-3, total_steps=6, warmup_steps=3, final_ratio=0.01)
    assert second.history[1]["learning_rate"] == pytest.approx(float(schedule(6)), rel=1e-5)
    assert json.loads((tmp_path / "state.json").read_text())["epoch"] == 1


def test_a_cancelled_run_stops_without_keeping_the_unfinished_epoch(tmp_path):
    images, boxes, classes = dataset([0])
    data = DetectorData(images, boxes, classes, images, boxes, classes)
    result = train_detector(data, run_config(epochs=3, steps=20, batch_size=2), tmp_path,
                            Hooks(should_stop=lambda: True))
    assert result.stopped == "cancelled"
    assert result.history == [] and result.model_path is None and result.best_epoch is None
    assert not (tmp_path / "state.json").exists()
