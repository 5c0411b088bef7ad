"""The detector (YOLOv4) training loop (no Django import): whole images in lists, progress through
the classifier's ``Hooks``.

What ``train_detector`` does, in order:

1. Anchors: IoU k-means (``detection.anchors.kmeans_anchors``) on the training boxes' sizes at the
   input size, or the preset's anchors scaled to it (by choice, or when the training set has
   fewer boxes, or distinct sizes, than anchors; the result says which and why).
2. Data: training examples are rendered one at a time in a tf.data pipeline: the paper's 36x
   oversampling (an epoch is every (image, variant) pair, shuffled; boxes follow the flips),
   mosaic with probability ``mosaic_prob`` (the example and three other random training
   examples), letterboxing to the input size, then ``LabelEncoder`` targets. Validation and test
   images are only letterboxed, never augmented.
3. A fresh detector's heads start small, every box at its anchor and every objectness at 1%
   (``init_head_outputs``). A custom ``train_step`` (a Keras model wrapping the detector)
   minimises ``YoloLoss``; AdamW under a warm-up + cosine schedule (``detection.schedule``).
   Mixed precision and XLA when a GPU is present; MirroredStrategy when there are several (the
   loss is divided by the replicas, whose gradients the optimizer sums).
4. After every epoch: validation mAP@0.5 (decode, per-class NMS mapped back to the original
   pixels, COCO AP), the best weights by it kept, and a checkpoint written: the detector's
   weights, the optimizer's variables (moments and step count, hence the schedule's position)
   and ``state.json`` (epoch, best, history, anchors). Calling ``train_detector`` again with the
   same ``checkpoint_dir`` resumes after the last finished epoch (with the anchors it started
   with; the schedule is rebuilt from the config, so more epochs stretch its cosine). Early
   stopping (``patience`` epochs without a better mAP), cancel (``Hooks.should_stop``, checked
   after every batch; the unfinished epoch is not kept) and a time limit (checked after every
   batch; the epoch is evaluated and kept) end the loop.
5. The best weights are loaded; the operating score threshold is chosen on the validation images
   (``choose_threshold``: the highest that keeps image-level recall for ">= ASC-US" at
   ``target_recall``); the test images are reported (AP per class, mAP, and the paper's
   image-level table at that threshold); the detector is saved as ``model.keras``.

Files in ``checkpoint_dir``: ``last.weights.h5``, ``last.optimizer.npz``, ``state.json``,
``best.weights.h5`` and at the end ``model.keras``.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.detection import augment as det_augment
from training.detection.boxes import as_boxes
from training.detection.letterbox import Letterbox, letterbox
from training.detector_config import DetectorAugmentConfig, DetectorRunConfig
from training.trainer import Hooks, accelerator

#: The threshold used when the validation images cannot choose one (no atypical image among
#: them): Darknet's default detection threshold.
DEFAULT_THRESHOLD = 0.25
#: A fresh detector's objectness, and the spread of its heads' output weights
#: (``init_head_outputs``).
OBJECTNESS_PRIOR = 0.01
HEAD_OUTPUT_STD = 0.01


@dataclass
class DetectorData:
    """Whole images per split. Images uint8 (H, W, 3) RGB of any size; boxes (n, 4) float xyxy
    pixels of that image; classes (n,) ints in 0..C-1. An image may have no box (a NILM image:
    the detector learns to find nothing there)."""

    train_images: list[np.ndarray]
    train_boxes: list[np.ndarray]
    train_classes: list[np.ndarray]
    val_images: list[np.ndarray] = field(default_factory=list)
    val_boxes: list[np.ndarray] = field(default_factory=list)
    val_classes: list[np.ndarray] = field(default_factory=list)
    test_images: list[np.ndarray] = field(default_factory=list)
    test_boxes: list[np.ndarray] = field(default_factory=list)
    test_classes: list[np.ndarray] = field(default_factory=list)


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


# --- data -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    """One split, checked and cleaned: boxes clipped to their image, empty ones dropped."""

    images: list[np.ndarray]
    boxes: list[np.ndarray]
    classes: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_boxes(self) -> int:
        return sum(b.shape[0] for b in self.boxes)


def prepare_split(images, boxes, classes, num_classes: int, name: str = "split") -> Split:
    """Validated copies of one split (see ``DetectorData``); raises ValueError on bad input."""
    if not (len(images) == len(boxes) == len(classes)):
        raise ValueError(f"{name}: {len(images)} images, {len(boxes)} box arrays, "
                         f"{len(classes)} class arrays")
    out_images, out_boxes, out_classes = [], [], []
    for i, (image, b, c) in enumerate(zip(images, boxes, classes, strict=True)):
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
            raise ValueError(f"{name} image {i}: need uint8 (H, W, 3), got {image.dtype} {image.shape}")
        b = as_boxes(b, f"{name} boxes of image {i}")
        c = np.asarray(c).reshape(-1)
        if c.shape[0] != b.shape[0]:
            raise ValueError(f"{name} image {i}: {b.shape[0]} boxes but {c.shape[0]} classes")
        if c.size and (not np.all(c == np.round(c)) or c.min() < 0 or c.max() >= num_classes):
            raise ValueError(f"{name} image {i}: classes must be integers in 0..{num_classes - 1}")
        b, c = det_augment.clip_boxes(b, c.astype(np.int64), image.shape[1], image.shape[0])
        out_images.append(np.ascontiguousarray(image))
        out_boxes.append(b)
        out_classes.append(c)
    return Split(out_images, out_boxes, out_classes)


def examples_per_epoch(num_images: int, augment: DetectorAugmentConfig) -> int:
    """Training examples in one pass: 36 per image with oversampling, else one."""
    return num_images * (det_augment.VARIANTS_PER_IMAGE if augment.oversample else 1)


def _rendered(split: Split, index: int, oversample: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not oversample:
        return split.images[index], split.boxes[index], split.classes[index]
    i, v = divmod(int(index), det_augment.VARIANTS_PER_IMAGE)
    pixels, boxes = det_augment.variant(split.images[i], split.boxes[i], v)
    return pixels, boxes, split.classes[i]


def training_example(
    split: Split, index: int, size: int, augment: DetectorAugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training example ``index`` (0..examples_per_epoch - 1) as the network sees it:
    ``(canvas uint8 (S, S, 3), boxes (n, 4) xyxy canvas pixels, classes (n,))``.

    With oversampling, example ``index`` is variant ``index % 36`` of image ``index // 36``. With
    probability ``augment.mosaic_prob`` (drawn from ``rng``) it becomes a mosaic of itself and
    three examples drawn from ``rng``, itself in a random quadrant; otherwise it is letterboxed.
    """
    count = examples_per_epoch(len(split), augment)
    if augment.mosaic and augment.mosaic_prob > 0 and rng.random() < augment.mosaic_prob:
        picks = [int(index), *(int(j) for j in rng.integers(0, count, size=3))]
        picks = [picks[k] for k in rng.permutation(4)]
        parts = [_rendered(split, j, augment.oversample) for j in picks]
        canvas, boxes, classes = det_augment.random_mosaic(
            [p[0] for p in parts], [p[1] for p in parts], [p[2] for p in parts], size, rng,
            centre_range=augment.mosaic_centre_range, min_size=augment.min_box_size,
            min_visible=augment.min_box_visible,
        )
    else:
        pixels, boxes, classes = _rendered(split, index, augment.oversample)
        canvas, info = letterbox(pixels, size)
        boxes = info.to_input(boxes)
    boxes, classes = det_augment.clip_boxes(boxes, classes, canvas.shape[1], canvas.shape[0])
    return canvas, boxes, classes


def detector_train_dataset(split: Split, encoder, batch_size: int,
                           augment: DetectorAugmentConfig = DetectorAugmentConfig(), seed: int = 0):
    """Endless training batches ``(images float32 (B, S, S, 3) in [0, 1], (targets per scale...,
    gt_boxes))`` for ``YoloLoss``; ``encoder`` a ``LabelEncoder`` at the input size.

    Example order is a full shuffle of ``examples_per_epoch`` indices, reshuffled every pass;
    each example's random draws (mosaic or not, partners, centre) come from a generator seeded
    with ``seed`` and a per-element random value, so parallel rendering does not change them and
    a dataset built with the same seed gives the same sequence.
    """
    import tensorflow as tf

    if len(split) == 0:
        raise ValueError("no training images")
    size = int(encoder.input_height)
    if encoder.input_width != size:
        raise ValueError("the detector's input is square")
    count = examples_per_epoch(len(split), augment)
    seed = int(seed)

    def element(index, random_value):
        rng = np.random.default_rng([abs(seed), int(random_value) % (1 << 63)])
        canvas, boxes, classes = training_example(split, int(index), size, augment, rng)
        return (canvas, *encoder.encode_flat(boxes, classes))

    shapes = encoder.output_shapes

    def load(index, random_value):
        out = tf.numpy_function(element, [index, random_value], [tf.uint8, *encoder.output_dtypes],
                                stateful=False)
        image = out[0]
        image.set_shape((size, size, 3))
        labels = tuple(out[1:])
        for tensor, shape in zip(labels, shapes, strict=True):
            tensor.set_shape(shape)
        return tf.cast(image, tf.float32) / 255.0, labels

    indices = tf.data.Dataset.range(count).shuffle(count, seed=seed, reshuffle_each_iteration=True)
    randoms = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    ds = tf.data.Dataset.zip((indices.repeat(), randoms))
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(int(batch_size), drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def letterbox_split(split: Split, size: int) -> tuple[np.ndarray, list[Letterbox]]:
    """Every image of a split letterboxed: (uint8 (N, S, S, 3), one ``Letterbox`` each)."""
    canvases, infos = [], []
    for image in split.images:
        canvas, info = letterbox(image, size)
        canvases.append(canvas)
        infos.append(info)
    if not canvases:
        return np.zeros((0, size, size, 3), dtype=np.uint8), []
    return np.stack(canvases), infos


# --- anchors ----------------------------------------------------------------------------------


def choose_anchors(split: Split, preset, input_size: int, source: str = "kmeans", seed: int = 0) -> dict:
    """The anchors for a run: ``{"source": "kmeans" | "preset", "anchors": (scales, A, 2) list
    of (w, h) input pixels, "input_size", "num_boxes", "avg_iou" (of the training boxes with
    these anchors, None without boxes), "reason" (why the preset's were used, else None)}``."""
    from training.detection.anchors import avg_iou, kmeans_anchors, sizes_at_input, split_anchors

    per_scale = preset.num_anchors
    k = preset.num_scales * per_scale
    wh, image_sizes = [], []
    for image, boxes in zip(split.images, split.boxes, strict=True):
        if boxes.shape[0]:
            wh.append(boxes[:, 2:] - boxes[:, :2])
            image_sizes.append(np.tile([image.shape[1], image.shape[0]], (boxes.shape[0], 1)))
    wh_input = None
    if wh:
        wh_input = sizes_at_input(np.concatenate(wh), np.concatenate(image_sizes), input_size)
    anchors, reason = None, None
    if source == "preset":
        reason = "the run config asks for the preset's anchors"
    elif wh_input is None or wh_input.shape[0] < k:
        n = 0 if wh_input is None else wh_input.shape[0]
        reason = f"{n} training boxes are too few for k-means with k = {k}"
    else:
        try:
            anchors = split_anchors(kmeans_anchors(wh_input, k, seed=seed).anchors, per_scale)
        except ValueError as exc:
            reason = f"k-means failed: {exc}"
    if anchors is None:
        anchors = np.asarray(preset.anchors_at(input_size), dtype=np.float64)
    quality = None if wh_input is None else avg_iou(wh_input, anchors.reshape(-1, 2))
    return {
        "source": "preset" if reason else "kmeans",
        "anchors": np.round(anchors, 4).tolist(),
        "input_size": int(input_size),
        "num_boxes": 0 if wh_input is None else int(wh_input.shape[0]),
        "avg_iou": quality,
        "reason": reason,
    }


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


# --- prediction and evaluation ----------------------------------------------------------------


class DetectorPredictor:
    """Raw heads -> ``Detections`` in the original images' pixels, for a trained detector.

    ``predict(canvases uint8 (N, S, S, 3), letterboxes)``: the forward pass and decoding run in
    one traced function (any batch size, traced once); NMS and the letterbox undo in NumPy.
    """

    def __init__(self, detector, batch_size: int = 16, score_threshold: float | None = None) -> None:
        import tensorflow as tf

        from training.detection.loss import decode

        self.detector = detector
        self.batch_size = int(batch_size)
        self.score_threshold = score_threshold
        size = int(detector.input_size)
        anchors = np.asarray(detector.anchors, dtype=np.float64)
        strides = tuple(detector.strides)
        scale_xy = tuple(detector.scale_x_y) if detector.scale_x_y else 1.0

        @tf.function(input_signature=[tf.TensorSpec((None, size, size, 3), tf.uint8)])
        def forward(batch):
            images = tf.cast(batch, tf.float32) / 255.0
            return decode(detector(images, training=False), anchors, strides, scale_xy)

        self._forward = forward

    def predict(self, canvases: np.ndarray, letterboxes) -> list:
        from training.detection.nms import SCORE_THRESHOLD, postprocess

        threshold = SCORE_THRESHOLD if self.score_threshold is None else self.score_threshold
        out = []
        for start in range(0, len(canvases), self.batch_size):
            boxes, scores = self._forward(canvases[start : start + self.batch_size])
            out.extend(postprocess(np.asarray(boxes), np.asarray(scores),
                                   letterboxes[start : start + self.batch_size],
                                   score_threshold=threshold))
        return out


def ground_truths(split: Split) -> list:
    from training.detection.evaluate import GroundTruth

    return [GroundTruth(b, c) for b, c in zip(split.boxes, split.classes, strict=True)]


def threshold_dict(choice, min_class: int = 0) -> dict:
    """A ``ThresholdChoice`` as JSON data (the curve under "curve")."""
    return {
        "threshold": float(choice.threshold),
        "recall": float(choice.recall),
        "precision": float(choice.precision),
        "f1": float(choice.f1),
        "achieved": bool(choice.achieved),
        "target_recall": float(choice.target_recall),
        "min_class": int(min_class),
        "source": "validation",
        "reason": None,
        "curve": {
            "thresholds": [float(v) for v in choice.thresholds],
            "recalls": [float(v) for v in choice.recalls],
            "precisions": [float(v) for v in choice.precisions],
        },
    }


def detection_report(detections, truths, threshold: float, num_classes: int) -> dict:
    """The test split's report: ``image_level_report`` at ``threshold`` (threshold, n, classes,
    atypical, verdict with its confusion matrix) plus "ap" (``APResult.as_dict``) and "map"."""
    from training.detection.evaluate import average_precision, image_level_report

    ap = average_precision(detections, truths, num_classes).as_dict()
    report = image_level_report(detections, truths, threshold, num_classes)
    return {**report, "ap": ap, "map": ap["map"]}


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
    os.replace(tmp, path)


def _load_optimizer(optimizer, path: Path) -> None:
    with np.load(path) as stored:
        values = {key: stored[key] for key in stored.files}
    if len(values) != len(optimizer.variables):
        raise ValueError(f"{path}: {len(values)} optimizer variables saved, "
                         f"the optimizer has {len(optimizer.variables)}")
    for i, variable in enumerate(optimizer.variables):
        variable.assign(values[str(i)])


def _save_weights(model, path: Path) -> None:
    tmp = path.with_name(path.name.replace(".weights.h5", "-tmp.weights.h5"))
    model.save_weights(tmp)
    os.replace(tmp, path)


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _map_or_none(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def train_detector(
    data: DetectorData, config: DetectorRunConfig, checkpoint_dir: Path, hooks: Hooks = Hooks()
) -> DetectorTrainResult:
    """Train (or resume training) a YOLOv4 detector; see the module docstring."""
    import keras
    import tensorflow as tf

    import training.networks.yolov4  # noqa: F401  (registers the custom layers)
    from training.detection.encoder import LabelEncoder
    from training.detection.evaluate import average_precision, choose_threshold
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

    keras.utils.set_random_seed(optim.seed)
    devices = accelerator()
    if devices["gpus"]:
        keras.mixed_precision.set_global_policy("mixed_float16")
    strategy = tf.distribute.MirroredStrategy() if devices["gpus"] > 1 else tf.distribute.get_strategy()

    state_file = checkpoint_dir / "state.json"
    last_weights = checkpoint_dir / "last.weights.h5"
    last_optimizer = checkpoint_dir / "last.optimizer.npz"
    best_weights = checkpoint_dir / "best.weights.h5"
    resuming = state_file.exists() and last_weights.exists() and last_optimizer.exists()
    if resuming:
        state = json.loads(state_file.read_text())
    else:
        state = {"epoch": -1, "best": None, "best_epoch": None, "bad_epochs": 0, "history": [],
                 "anchors": choose_anchors(train, preset, size, config.anchors, optim.seed)}
    anchors = np.asarray(state["anchors"]["anchors"], dtype=np.float64)

    count = examples_per_epoch(len(train), config.augment)
    steps = optim.steps_per_epoch or max(1, count // optim.batch_size)
    encoder = LabelEncoder(size, preset.strides, anchors, num_classes)
    train_ds = detector_train_dataset(train, encoder, optim.batch_size, config.augment, optim.seed)
    yolo_loss = YoloLoss(anchors, preset.strides, preset.scale_x_y, num_classes)

    with strategy.scope():
        detector = build_run_detector(config, anchors)
        model = _training_model(detector, yolo_loss)
        model.compile(optimizer=_optimizer(config, steps, model.trainable_variables),
                      jit_compile=bool(devices["gpus"]))
        # the optimizer's slots made up front spare TensorFlow a second trace of the train step
        model.optimizer.build(model.trainable_variables)
        if resuming:
            detector.load_weights(last_weights)
            _load_optimizer(model.optimizer, last_optimizer)

    val_canvases, val_infos = letterbox_split(val, size)
    val_truths = ground_truths(val)
    val_has_truth = val.num_boxes > 0
    predictor = DetectorPredictor(detector, batch_size=max(optim.batch_size, 8))

    started = time.monotonic()
    stopped = "completed"
    flags = {"cancelled": False}

    def past_limit() -> bool:
        limit = optim.time_limit_s
        return limit is not None and time.monotonic() - started > limit

    class Progress(keras.callbacks.Callback):
        def __init__(self, epoch):
            super().__init__()
            self.epoch = epoch
            self.epoch_started = time.monotonic()

        def on_train_batch_end(self, batch, logs=None):
            done = batch + 1
            if done % 5 == 0 or done == steps:
                per_step = (time.monotonic() - self.epoch_started) / done
                remaining_epochs = optim.epochs - self.epoch - 1
                hooks.on_progress({
                    "step": done, "steps": steps, "epoch": self.epoch + 1, "epochs": optim.epochs,
                    "loss": float((logs or {}).get("loss", float("nan"))),
                    "eta_s": round(per_step * ((steps - done) + remaining_epochs * steps), 1),
                    "best_val_map": state["best"],
                })
            if hooks.should_stop():
                flags["cancelled"] = True
                self.model.stop_training = True
            elif past_limit():
                self.model.stop_training = True

    for epoch in range(state["epoch"] + 1, optim.epochs):
        fit = model.fit(train_ds, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False,
                        callbacks=[Progress(epoch)])
        if flags["cancelled"] or hooks.should_stop():
            stopped = "cancelled"
            break
        logs = {key: float(values[-1]) for key, values in fit.history.items()}
        val_map = None
        if val_has_truth:
            detections = predictor.predict(val_canvases, val_infos)
            val_map = _map_or_none(average_precision(detections, val_truths, num_classes).map)
        learning_rate = float(model.optimizer.learning_rate)
        entry = {"epoch": epoch + 1, "loss": logs.get("loss"), "box": logs.get("box"),
                 "obj": logs.get("obj"), "cls": logs.get("cls"), "val_map": val_map,
                 "learning_rate": learning_rate, "elapsed_s": round(time.monotonic() - started, 1)}
        state["history"].append(entry)
        # without validation ground truth there is nothing to compare: the latest weights are kept
        better = val_map is None or state["best"] is None or val_map > state["best"]
        if better:
            state.update(best=val_map, best_epoch=epoch + 1, bad_epochs=0)
            _save_weights(detector, best_weights)
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch
        _save_weights(detector, last_weights)
        _save_optimizer(model.optimizer, last_optimizer)
        _write_json(state_file, state)
        hooks.on_progress({"step": steps, "steps": steps, "epoch": epoch + 1, "epochs": optim.epochs,
                           "loss": entry["loss"], "val_map": val_map, "best_val_map": state["best"],
                           "eta_s": None, "history": list(state["history"])})
        if past_limit():
            stopped = "time_limit"
            break
        if val_has_truth and state["bad_epochs"] >= optim.patience:
            stopped = "early_stopping"
            break

    result = DetectorTrainResult(stopped=stopped, best_epoch=state["best_epoch"], best_val_map=state["best"],
                                 history=state["history"], anchors=state["anchors"])
    if stopped == "cancelled" or not best_weights.exists():
        return result
    detector.load_weights(best_weights)

    min_class = 0  # ">= ASC-US": any detector class counts as atypical
    if len(val) and any(c.size and c.max() >= min_class for c in val.classes):
        val_detections = predictor.predict(val_canvases, val_infos)
        choice = choose_threshold(val_detections, val_truths, target_recall=config.target_recall,
                                  min_class=min_class)
        result.threshold = threshold_dict(choice, min_class)
    else:
        result.threshold = {"threshold": DEFAULT_THRESHOLD, "source": "default", "min_class": min_class,
                            "reason": "no validation image has an atypical box to set the threshold on"}
    if len(test):
        test_canvases, test_infos = letterbox_split(test, size)
        detections = predictor.predict(test_canvases, test_infos)
        result.test_report = detection_report(detections, ground_truths(test), result.threshold["threshold"],
                                         num_classes)
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
