"""The detector's data (no Django import): whole images per split (``DetectorData``), checked
and cleaned (``prepare_split``), the training examples as the network sees them (the paper's 36x
oversampling, mosaic, letterboxing; ``training_example``) in an endless tf.data pipeline
(``detector_train_dataset``), letterboxed validation/test canvases (``letterbox_split``), and the
run's anchors (``choose_anchors``: IoU k-means on the training boxes, or the preset's).

The augmentation and anchor math is in ``training/detection/`` (pure NumPy).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from training.detection import augment as det_augment
from training.detection.anchors import avg_iou, kmeans_anchors, sizes_at_input, split_anchors
from training.detection.boxes import as_boxes
from training.detection.letterbox import Letterbox, letterbox
from training.detector.config import DetectorAugmentConfig


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
    import tensorflow as tf  # heavy optional import, kept local

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

