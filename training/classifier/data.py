"""The classifier's data (no Django import): ``ClassifierData`` (crops and labels per split, in
arrays) and the tf.data input pipelines for the ResNeSt classifier.

The classifier module that imports TensorFlow at its top; oversampling filters, targets and
metrics are NumPy modules (``training/augment.py``, ``smoothing.py``, ``metrics.py``).

``train_dataset``: (optional) the paper's 36x oversampling, then a full shuffle, then on the fly
scale augmentation and random erasing, each switchable by ``AugmentConfig``. ``eval_dataset``:
the images as they are, never augmented, in order.

Oversampling happens before shuffling: the epoch is the 36N (image, variant) pairs, shuffled
with a buffer that holds all of them (uniform shuffle). The pairs are indices; each variant is
rendered from its source image when it is read (``augment.variant``, through
``tf.numpy_function``), so the 36x set is never held in memory and is element for element what
``augment.oversample`` would give.

Output: ``(image, target)`` batches; images float32 in [0, 1], shape (input_size, input_size, 3)
(``uint8 / 255``; the model applies any further normalisation it wants, ImageNet mean/std
included), targets float32 (N, 6) as given (one-hot, smoothed or vote shares, see
``smoothing.py``). Images whose side differs from ``input_size`` are resized (bilinear,
antialiased) first; at the input size nothing is resampled.

Determinism: for a given ``seed`` the sequence of epochs (order, scale factors, crop offsets,
erased rectangles and their fill) is the same every time the dataset is built. Within one
dataset object each new epoch reshuffles and redraws. Every random draw is a stateless op keyed
by a per-element seed, so parallel mapping does not change the result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from training import augment
from training.augment import VARIANTS_PER_IMAGE, AugmentConfig


@dataclass
class ClassifierData:
    train_images: np.ndarray  # uint8 (N, S, S, 3)
    train_labels: np.ndarray  # int (N,)
    val_images: np.ndarray
    val_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    train_votes: np.ndarray | None = None  # (N, 6) vote shares, for TargetConfig(kind="votes")


#: Random erasing aspect ratio range (Zhong et al.: r1 = 0.3, aspect drawn from [r1, 1/r1]).
ERASING_ASPECT: tuple[float, float] = (0.3, 1.0 / 0.3)
#: Rectangles tried per image before giving up (Zhong et al. retry until one fits).
ERASING_ATTEMPTS = 10


def _size(input_size, images: np.ndarray) -> tuple[int, int]:
    if input_size is None:
        return int(images.shape[1]), int(images.shape[2])
    if isinstance(input_size, (int, np.integer)):
        side = int(input_size)
        size = (side, side)
    else:
        size = tuple(int(v) for v in input_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"input_size must be a positive side or (height, width), got {input_size}")
    return size


def _check(images, targets, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    images = np.asarray(images)
    targets = np.asarray(targets, dtype=np.float32)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(
            f"images must be a uint8 array (N, H, W, 3), got {images.dtype} {images.shape}"
        )
    if targets.ndim != 2 or len(targets) != len(images):
        raise ValueError(
            f"targets must be (N, classes) with N = {len(images)} images, got {targets.shape}"
        )
    if len(images) == 0:
        raise ValueError("no images")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return images, targets


def train_size(num_images: int, config: AugmentConfig = AugmentConfig()) -> int:
    """Examples per training epoch: 36 x num_images with oversampling, else num_images."""
    return num_images * (VARIANTS_PER_IMAGE if config.oversample else 1)


def _loader(images: np.ndarray, targets: np.ndarray, size: tuple[int, int], oversampled: bool):
    """index -> (float32 image at ``size`` in [0, 1], target row)."""
    per_image = VARIANTS_PER_IMAGE if oversampled else 1
    target_table = tf.constant(targets, dtype=tf.float32)
    src_shape = images.shape[1:]

    def read(index):
        i, v = divmod(int(index), per_image)
        if oversampled:
            return augment.variant(images[i], v)
        return images[i]

    def load(index):
        image = tf.numpy_function(read, [index], tf.uint8, stateful=False)
        image.set_shape(src_shape)
        image = tf.cast(image, tf.float32) / 255.0
        if tuple(src_shape[:2]) != size:
            image = tf.image.resize(image, size, method="bilinear", antialias=True)
            image = tf.clip_by_value(image, 0.0, 1.0)
        target = tf.gather(target_table, index // per_image)
        return image, target

    return load


def random_scale(image: tf.Tensor, seed: tf.Tensor, scale_range: tuple[float, float]) -> tf.Tensor:
    """Zoom by a factor drawn uniformly from ``scale_range``, then back to the image's size.

    Zoomed in (factor > 1): a random crop of the original size. Zoomed out (factor < 1):
    symmetric (mirror) padding around the smaller image at a random offset, which keeps the
    slide-like background instead of black borders. ``seed``: a stateless seed, shape (2,).
    """
    h, w = int(image.shape[0]), int(image.shape[1])
    seeds = tf.random.experimental.stateless_split(seed, 3)
    factor = tf.random.stateless_uniform([], seeds[0], scale_range[0], scale_range[1])
    nh = tf.maximum(1, tf.cast(tf.round(factor * h), tf.int32))
    nw = tf.maximum(1, tf.cast(tf.round(factor * w), tf.int32))
    scaled = tf.image.resize(image, tf.stack([nh, nw]), method="bilinear", antialias=True)
    pad_h = tf.maximum(0, h - nh)
    pad_w = tf.maximum(0, w - nw)
    offsets = tf.random.stateless_uniform([4], seeds[1])
    top = tf.cast(tf.floor(offsets[0] * tf.cast(pad_h + 1, tf.float32)), tf.int32)
    left = tf.cast(tf.floor(offsets[1] * tf.cast(pad_w + 1, tf.float32)), tf.int32)
    padded = tf.pad(scaled, [[top, pad_h - top], [left, pad_w - left], [0, 0]], mode="SYMMETRIC")
    ph = tf.maximum(nh, h)
    pw = tf.maximum(nw, w)
    y0 = tf.cast(tf.floor(offsets[2] * tf.cast(ph - h + 1, tf.float32)), tf.int32)
    x0 = tf.cast(tf.floor(offsets[3] * tf.cast(pw - w + 1, tf.float32)), tf.int32)
    out = tf.slice(padded, tf.stack([y0, x0, 0]), [h, w, int(image.shape[2])])
    out = tf.clip_by_value(out, 0.0, 1.0)
    out.set_shape(image.shape)
    return out


def random_erasing(
    image: tf.Tensor,
    seed: tf.Tensor,
    probability: float,
    area_range: tuple[float, float],
    aspect_range: tuple[float, float] = ERASING_ASPECT,
    attempts: int = ERASING_ATTEMPTS,
) -> tf.Tensor:
    """Random erasing (Zhong et al. 2017): with ``probability``, one rectangle of random values.

    The rectangle's area is a fraction of the image drawn uniformly from ``area_range``, its
    aspect ratio (height / width) uniformly from ``aspect_range``; the first of ``attempts``
    draws that fits inside the image is used (none fits: image unchanged). Its pixels are
    replaced with independent uniform values in [0, 1] per channel. ``seed``: shape (2,).
    """
    h, w, c = (int(d) for d in image.shape)
    seeds = tf.random.experimental.stateless_split(seed, 5)
    erase = tf.random.stateless_uniform([], seeds[0]) < probability
    area = tf.random.stateless_uniform([attempts], seeds[1], area_range[0], area_range[1]) * (h * w)
    aspect = tf.random.stateless_uniform([attempts], seeds[2], aspect_range[0], aspect_range[1])
    eh = tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32)
    ew = tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32)
    fits = (eh > 0) & (ew > 0) & (eh < h) & (ew < w)
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
    erase = erase & tf.reduce_any(fits)
    eh, ew = eh[first], ew[first]
    pos = tf.random.stateless_uniform([2], seeds[3])
    y0 = tf.cast(tf.floor(pos[0] * tf.cast(h - eh + 1, tf.float32)), tf.int32)
    x0 = tf.cast(tf.floor(pos[1] * tf.cast(w - ew + 1, tf.float32)), tf.int32)
    rows = tf.range(h)[:, None]
    cols = tf.range(w)[None, :]
    mask = (rows >= y0) & (rows < y0 + eh) & (cols >= x0) & (cols < x0 + ew) & erase
    noise = tf.random.stateless_uniform([h, w, c], seeds[4], dtype=image.dtype)
    out = tf.where(mask[:, :, None], noise, image)
    out.set_shape(image.shape)
    return out


def train_dataset(
    images,
    targets,
    batch_size: int,
    config: AugmentConfig = AugmentConfig(),
    seed: int = 0,
    input_size=None,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """Training batches ``(image, target)``: oversample, shuffle, then scale and erase on the fly.

    images: uint8 (N, H, W, 3) RGB crops of the training split only. targets: (N, classes)
    float rows (``smoothing.make_targets``). config: which augmentations run. seed: every random
    draw derives from it. input_size: output side (int) or (height, width); None keeps H x W.
    One epoch has ``train_size(N, config)`` examples (36N with oversampling, else N).
    """
    images, targets = _check(images, targets, batch_size)
    size = _size(input_size, images)
    seed = int(seed)
    count = train_size(len(images), config)
    load = _loader(images, targets, size, config.oversample)
    scale_range = tuple(config.scale_range)
    area_range = tuple(config.erasing_area)

    def element(index, random_value):
        image, target = load(index)
        element_seed = tf.stack([random_value, tf.constant(seed, tf.int64)])
        seeds = tf.random.experimental.stateless_split(element_seed, 2)
        if config.scale:
            image = random_scale(image, seeds[0], scale_range)
        if config.random_erasing and config.erasing_prob > 0:
            image = random_erasing(image, seeds[1], config.erasing_prob, area_range)
        return image, target

    indices = tf.data.Dataset.range(count).shuffle(count, seed=seed, reshuffle_each_iteration=True)
    randoms = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    ds = tf.data.Dataset.zip((indices, randoms))
    ds = ds.map(element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(int(batch_size), drop_remainder=drop_remainder)
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(images, targets, batch_size: int, input_size=None) -> tf.data.Dataset:
    """Validation/test batches ``(image, target)`` in input order, never augmented.

    Images are ``uint8 / 255`` as float32 (resized only when their side differs from
    ``input_size``); targets as given, float32.
    """
    images, targets = _check(images, targets, batch_size)
    size = _size(input_size, images)
    load = _loader(images, targets, size, oversampled=False)
    ds = tf.data.Dataset.range(len(images)).map(
        load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    return ds.batch(int(batch_size)).prefetch(tf.data.AUTOTUNE)


def steps_per_epoch(
    num_images: int,
    batch_size: int,
    config: AugmentConfig = AugmentConfig(),
    drop_remainder: bool = False,
) -> int:
    """Batches per training epoch for ``num_images`` training images."""
    n = train_size(num_images, config)
    return n // batch_size if drop_remainder else math.ceil(n / batch_size)
