"""The detector (YOLOv4) training loop (no Django import): whole images in lists, progress through
``training.loop.Hooks``; the epochs run in the loop both trainers share (``training.loop``).

What ``train_detector`` does, in order:

1. Anchors (``detector.data.choose_anchors``): IoU k-means (``detection.anchors.kmeans_anchors``)
   on the training boxes' sizes at the input size, or the preset's anchors scaled to it (by
   choice, or when the training set has fewer boxes, or distinct sizes, than anchors; the result
   says which and why).
2. Data (``detector.data``): training examples are rendered one at a time in a tf.data
   pipeline: the paper's 36x oversampling (an epoch is every (image, variant) pair, shuffled;
   boxes follow the flips), mosaic with probability ``mosaic_prob`` (the example and three
   other random training examples), letterboxing to the input size, then ``LabelEncoder``
   targets. Validation and test images are only letterboxed, never augmented.
3. A fresh detector's heads start small, every box at its anchor and every objectness at 1%
   (``init_head_outputs``). A custom ``train_step`` (a Keras model wrapping the detector)
   minimises ``YoloLoss``; AdamW under a warm-up + cosine schedule (``detection.schedule``).
   Mixed precision and XLA when a GPU is present; MirroredStrategy when there are several (the
   loss is divided by the replicas, whose gradients the optimizer sums).
4. After every epoch (``training.loop.EpochLoop``): validation mAP@0.5 (``detector.evaluation``:
   decode, per-class NMS mapped back to the original pixels, COCO AP), the best weights by it
   kept, and a checkpoint written: the detector's weights, the optimizer's variables (moments
   and step count, hence the schedule's position) and ``state.json`` (epoch, best, history,
   anchors). Calling ``train_detector`` again with the
   same ``checkpoint_dir`` resumes after the last finished epoch (with the anchors it started
   with; the schedule is rebuilt from the config, so more epochs stretch its cosine). Early
   stopping (``patience`` epochs without a better mAP), cancel (``Hooks.should_stop``, checked
   after every batch; the unfinished epoch is not kept) and a time limit (checked after every
   batch; the epoch is evaluated and kept) end the loop.
5. The best weights are loaded; the operating score threshold is chosen on the validation images
   (``choose_threshold``: the highest that keeps image-level recall for ">= ASC-US" at
   ``target_recall``); the test images are reported (AP per class, mAP, and the paper's
   image-level table at that threshold); the detector is saved as ``model.keras``.

Files in ``checkpoint_dir``: ``last.weights.h5``, ``last.optimizer.npz``, ``state.json`` (and
the epoch before's ``last.prev.weights.h5``, ``last.prev.optimizer.npz``, ``state.prev.json``:
``training.loop.load_checkpoint``), ``best.weights.h5`` and at the end ``model.keras``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training import loop
from training.detection.encoder import LabelEncoder
from training.detector import evaluation
from training.detector.config import DetectorRunConfig
from training.detector.data import (
    DetectorData,
    choose_anchors,
    detector_train_dataset,
    examples_per_epoch,
    letterbox_split,
    prepare_split,
)
from training.loop import Hooks

#: A fresh detector's objectness, and the spread of its heads' output weights
#: (``init_head_outputs``).
OBJECTNESS_PRIOR = 0.01
HEAD_OUTPUT_STD = 0.01


@dataclass
class DetectorTrainResult:
    """stopped: "completed" | "early_stopping" | "cancelled" | "time_limit".

    best_val_map: the best validation mAP@0.5 (None before an epoch finished or without
    validation ground truth). threshold: the operating threshold and how it was chosen
    (``threshold_dict``). anchors: the anchors used and where they came from. test_report:
    ``image_level_report`` at the threshold plus "ap" (per class and mAP) and "map".
    """

    stopped: str
    best_epoch: int | None
    best_val_map: float | None
    history: list[dict] = field(default_factory=list)
    test_report: dict | None = None
    threshold: dict | None = None
    anchors: dict | None = None
    model_path: Path | None = None


def init_head_outputs(detector, prior: float = OBJECTNESS_PRIOR, std: float = HEAD_OUTPUT_STD,
                      seed: int = 0) -> None:
    """Re-initialise every head's final (linear) convolution as RetinaNet does (Lin et al. 2017,
    section 4.1): kernel from N(0, std^2), biases 0 except objectness at ``logit(prior)``.

    He-normal outputs start each anchor's box at a random size, some a fraction of their anchor;
    the CIoU gradient through ``exp(t_wh)`` vanishes for such slivers and a box can stay one.
    Small outputs start every box at its anchor, centred in its cell. With the objectness bias
    at 0 every one of the thousands of anchors starts at objectness 0.5 and the first hundreds of
    updates go into learning that almost none holds a cluster; at a small prior the loss starts
    near its background level (YOLOv5 initialises its heads the same way).
    """
    import keras

    from training.networks.yolov4.head import BOX_FIELDS

    depth = BOX_FIELDS + detector.num_classes
    for k, stride in enumerate(detector.strides):
        layer = detector.get_layer(f"head_s{stride}_output")
        kernel = keras.initializers.RandomNormal(stddev=std, seed=seed + k)(layer.kernel.shape)
        layer.kernel.assign(kernel)
        bias = np.zeros(layer.bias.shape, dtype=np.float32)
        bias[BOX_FIELDS - 1 :: depth] = math.log(prior / (1.0 - prior))
        layer.bias.assign(bias)


def build_run_detector(config: DetectorRunConfig, anchors):
    """A fresh ``YOLOV4Detector`` of the run's preset and size, carrying ``anchors`` in its
    config (so a saved model has what its decoder and loss need), heads initialised by
    ``init_head_outputs``."""
    from training.networks.yolov4 import YOLOV4Detector, get_preset

    preset = get_preset(config.preset)
    detector = YOLOV4Detector(
        architecture=preset.architecture,
        num_classes=config.num_classes,
        input_size=config.input_size or preset.input_size,
        width_multiplier=preset.width_multiplier,
        stage_depths=preset.stage_depths,
        num_anchors=preset.num_anchors,
        anchors=np.asarray(anchors, dtype=np.float64).tolist(),
        scale_x_y=preset.scale_x_y,
        bn_momentum=config.bn_momentum,
        name=preset.name,
    )
    init_head_outputs(detector, seed=config.optim.seed)
    return detector


# --- training ---------------------------------------------------------------------------------


def _training_model(detector, yolo_loss):
    """A Keras model whose ``train_step`` minimises ``yolo_loss`` on the detector's heads."""
    import keras
    import tensorflow as tf

    class YoloTraining(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.detector = detector
            self.yolo_loss = yolo_loss
            self.trackers = {key: keras.metrics.Mean(name=name) for key, name in
                             (("total", "loss"), ("box", "box"), ("obj", "obj"), ("cls", "cls"))}
            self.built = True

        @property
        def metrics(self):
            return list(self.trackers.values())

        def call(self, images, training=False):
            return self.detector(images, training=training)

        def train_step(self, data):
            images, labels = data
            targets, gt_boxes = list(labels[:-1]), labels[-1]
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            with tf.GradientTape() as tape:
                outputs = self.detector(images, training=True)
                terms = self.yolo_loss(targets, gt_boxes, outputs)
                scaled = self.optimizer.scale_loss(terms["total"] / replicas)
            variables = self.trainable_variables
            self.optimizer.apply(tape.gradient(scaled, variables), variables)
            for key, tracker in self.trackers.items():
                tracker.update_state(terms[key])
            return {tracker.name: tracker.result() for tracker in self.trackers.values()}

    return YoloTraining(name="yolo_training")


def _optimizer(config: DetectorRunConfig, steps: int, variables):
    import keras

    from training.detection.schedule import WarmupCosineDecay

    optim = config.optim
    total = optim.epochs * steps
    schedule = WarmupCosineDecay(optim.learning_rate, total_steps=total,
                                 warmup_steps=min(total, round(optim.warmup_epochs * steps)),
                                 final_ratio=optim.final_lr_ratio)
    if optim.weight_decay <= 0:
        return keras.optimizers.Adam(schedule)
    optimizer = keras.optimizers.AdamW(schedule, weight_decay=optim.weight_decay)
    # batch-norm scales and offsets and the heads' biases (every 1-D variable) never decay
    optimizer.exclude_from_weight_decay(var_list=[v for v in variables if len(v.shape) <= 1])
    return optimizer


def _save_optimizer(optimizer, path: Path) -> None:
    tmp = path.with_name(path.stem + "-tmp.npz")
    np.savez(tmp, **{str(i): np.asarray(v.numpy()) for i, v in enumerate(optimizer.variables)})
    loop.put_in_place(tmp, path, keep_previous=True)


def _load_optimizer(optimizer, path: Path) -> None:
    with np.load(path) as stored:
        values = {key: stored[key] for key in stored.files}
    if len(values) != len(optimizer.variables):
        raise ValueError(f"{path}: {len(values)} optimizer variables saved, "
                         f"the optimizer has {len(optimizer.variables)}")
    for i, variable in enumerate(optimizer.variables):
        variable.assign(values[str(i)])


def train_detector(
    data: DetectorData, config: DetectorRunConfig, checkpoint_dir: Path, hooks: Hooks = Hooks()
) -> DetectorTrainResult:
    """Train (or resume training) a YOLOv4 detector; see the module docstring."""
    # TensorFlow and the modules that import it stay local: importing this module stays cheap
    import training.networks.yolov4  # noqa: F401  (registers the custom layers)
    from training.detection.loss import YoloLoss
    from training.networks.yolov4 import get_preset

    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    optim = config.optim
    preset = get_preset(config.preset)
    size = int(config.input_size or preset.input_size)
    num_classes = int(config.num_classes)
    train = prepare_split(data.train_images, data.train_boxes, data.train_classes, num_classes, "train")
    val = prepare_split(data.val_images, data.val_boxes, data.val_classes, num_classes, "val")
    test = prepare_split(data.test_images, data.test_boxes, data.test_classes, num_classes, "test")
    if len(train) == 0:
        raise ValueError("no training images")

    devices, strategy = loop.prepare_devices(optim.seed)

    state_file = checkpoint_dir / "state.json"
    last_weights = checkpoint_dir / "last.weights.h5"
    last_optimizer = checkpoint_dir / "last.optimizer.npz"
    best_weights = checkpoint_dir / "best.weights.h5"
    # a resumed run keeps the anchors it started with (in either state file: they never change)
    started = next((f for f in (state_file, loop.previous_of(state_file)) if f.exists()), None)
    try:
        state = json.loads(started.read_text()) if started else None
    except ValueError:
        state = None
    if state is None:
        state = loop.fresh_state(anchors=choose_anchors(train, preset, size, config.anchors, optim.seed))
    anchors = np.asarray(state["anchors"]["anchors"], dtype=np.float64)

    count = examples_per_epoch(len(train), config.augment)
    steps = optim.steps_per_epoch or max(1, count // optim.batch_size)
    encoder = LabelEncoder(size, preset.strides, anchors, num_classes)
    train_ds = detector_train_dataset(train, encoder, optim.batch_size, config.augment, optim.seed)
    yolo_loss = YoloLoss(anchors, preset.strides, preset.scale_x_y, num_classes)

    def build():
        detector = build_run_detector(config, anchors)
        model = _training_model(detector, yolo_loss)
        model.compile(optimizer=_optimizer(config, steps, model.trainable_variables),
                      jit_compile=bool(devices["gpus"]))
        # the optimizer's slots made up front spare TensorFlow a second trace of the train step
        model.optimizer.build(model.trainable_variables)
        return detector, model

    def load(previous: bool) -> bool:
        detector.load_weights(loop.previous_of(last_weights) if previous else last_weights)
        _load_optimizer(model.optimizer, loop.previous_of(last_optimizer) if previous else last_optimizer)
        return True

    with strategy.scope():
        detector, model = build()
        resumed, resumed_state, notice = loop.load_checkpoint(state_file, load, [last_weights, last_optimizer])
        if resumed:  # the newest readable checkpoint
            state = resumed_state
        else:
            state = loop.fresh_state(anchors=state["anchors"])
            if notice:  # every checkpoint failed to load, perhaps half-way: start from fresh weights
                detector, model = build()

    val_canvases, val_infos = letterbox_split(val, size)
    val_truths = evaluation.ground_truths(val)
    val_has_truth = val.num_boxes > 0
    predictor = evaluation.DetectorPredictor(detector, batch_size=max(optim.batch_size, 8))

    def train_epoch(callback) -> dict:
        fit = model.fit(train_ds, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False,
                        callbacks=[callback])
        logs = {key: float(values[-1]) for key, values in fit.history.items()}
        return {key: logs.get(key) for key in ("loss", "box", "obj", "cls")}

    def validate() -> float | None:
        if not val_has_truth:
            return None
        return evaluation.validation_map(predictor, val_canvases, val_infos, val_truths, num_classes)

    def save_last() -> None:
        loop.save_weights(detector, last_weights, keep_previous=True)
        _save_optimizer(model.optimizer, last_optimizer)

    epochs = loop.EpochLoop(state=state, state_file=state_file, epochs=optim.epochs, steps=steps,
                            patience=optim.patience, time_limit_s=optim.time_limit_s, metric="map",
                            hooks=hooks, notice=notice)
    stopped = epochs.run(
        train_epoch=train_epoch,
        validate=validate,
        # without validation ground truth there is nothing to compare: the latest weights are kept
        save_best=lambda: loop.save_weights(detector, best_weights),
        save_last=save_last,
        extras=lambda: {"learning_rate": float(model.optimizer.learning_rate)},
        early_stopping=val_has_truth,
    )

    result = DetectorTrainResult(stopped=stopped, best_epoch=state["best_epoch"], best_val_map=state["best"],
                                 history=state["history"], anchors=state["anchors"])
    if stopped == "cancelled" or not best_weights.exists():
        return result
    detector.load_weights(best_weights)

    result.threshold = evaluation.operating_threshold(predictor, val, val_canvases, val_infos, val_truths,
                                                      config.target_recall)
    if len(test):
        test_canvases, test_infos = letterbox_split(test, size)
        detections = predictor.predict(test_canvases, test_infos)
        result.test_report = evaluation.detection_report(detections, evaluation.ground_truths(test),
                                                         result.threshold["threshold"], num_classes)
    final = checkpoint_dir / "model.keras"
    detector.save(final)
    result.model_path = final
    return result


def export_detector_saved_model(model_path: Path, out_dir: Path) -> Path:
    """A TensorFlow SavedModel of a trained detector for serving: images float32 (B, S, S, 3) in
    [0, 1] to the raw heads. Beside it, ``detector.json`` holds what decoding needs (input size,
    strides, anchors, scale_x_y, classes), which the SavedModel's graph does not carry."""
    import keras

    import training.networks.yolov4  # noqa: F401  (registers the custom layers for loading)

    model = keras.saving.load_model(model_path)
    out_dir = Path(out_dir)
    model.export(str(out_dir), format="tf_saved_model")
    (out_dir / "detector.json").write_text(json.dumps({
        "architecture": model.architecture, "input_size": model.input_size,
        "num_classes": model.num_classes, "strides": list(model.strides),
        "anchors": model.anchors, "scale_x_y": model.scale_x_y,
    }))
    return out_dir
