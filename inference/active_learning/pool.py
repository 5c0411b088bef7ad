"""Simulated active learning, step 1: the clusters and each seed's split by image (pool, test,
initial labelled set), checked before anything trains."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from annotation.bethesda import NUM_CLASSES
from training.splits import image_grade, stratified_split


@dataclass(frozen=True)
class ClusterSet:
    """One crop per cluster: images uint8 (N, S, S, 3), labels (N,) in 0..5, image_ids (N,)
    (the image each cluster comes from; splits are made by image)."""

    images: np.ndarray
    labels: np.ndarray
    image_ids: np.ndarray

    def __post_init__(self) -> None:
        images = np.asarray(self.images)
        labels = np.asarray(self.labels)
        ids = np.asarray(self.image_ids)
        if images.ndim != 4 or images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (N, S, S, C), got {images.dtype} {images.shape}")
        n = images.shape[0]
        if labels.shape != (n,) or ids.shape != (n,):
            raise ValueError(
                f"one label and one image id per crop: {n} crops, labels {labels.shape}, "
                f"image_ids {ids.shape}"
            )
        if n and (not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0
                  or labels.max() >= NUM_CLASSES):
            raise ValueError(f"labels must be integers in 0..{NUM_CLASSES - 1}")
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "labels", labels.astype(np.int64))
        object.__setattr__(self, "image_ids", ids)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @classmethod
    def from_crops(cls, crops: dict) -> ClusterSet:
        """From ``training.services.image_crops``' {image id: (crops, labels, votes)}, in image
        id order."""
        keys = sorted(crops)
        if not keys:
            raise ValueError("no crops: the dataset has no clusters with ground truth")
        images = np.concatenate([crops[k][0] for k in keys])
        labels = np.concatenate([np.asarray(crops[k][1]) for k in keys])
        ids = np.concatenate([np.full(len(crops[k][1]), k) for k in keys])
        return cls(images, labels, ids)


@dataclass(frozen=True)
class Split:
    """One seed's split, as indices into the ClusterSet (sorted)."""

    seed: int
    pool: np.ndarray
    test: np.ndarray
    initial: np.ndarray  # pool clusters labelled before round 0
    test_images: int
    pool_images: int

    def to_json(self) -> dict:
        return {"seed": self.seed, "pool_clusters": int(self.pool.size),
                "test_clusters": int(self.test.size), "pool_images": self.pool_images,
                "test_images": self.test_images, "initial": self.initial.tolist()}


def split_by_image(image_ids, labels, *, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(pool indices, test indices) of the clusters, split by image and stratified by each
    image's most severe grade; no image has clusters on both sides."""
    ids = np.asarray(image_ids)
    labels = np.asarray(labels)
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    unique = sorted(set(ids.tolist()))
    grades = [image_grade(labels[ids == i].tolist()) for i in unique]
    parts = stratified_split(unique, grades, ratios=(1.0 - test_fraction, 0.0, test_fraction), seed=seed)
    test_images = np.asarray(parts["test"], dtype=ids.dtype)
    in_test = np.isin(ids, test_images)
    return np.flatnonzero(~in_test), np.flatnonzero(in_test)


def plan_splits(
    image_ids,
    labels,
    *,
    seeds: Sequence[int],
    test_fraction: float,
    initial: int,
    rounds: int,
    batch: int,
) -> list[Split]:
    """Every seed's split and initial set, checked before anything trains: ValueError (one
    line saying what to change) when a pool is too small for ``initial + rounds * batch``
    labels or a test set is empty."""
    for name, value, low in (("initial", initial, 1), ("rounds", rounds, 1), ("batch", batch, 1)):
        if int(value) < low:
            raise ValueError(f"{name} must be at least {low}, got {value}")
    if not seeds:
        raise ValueError("at least one seed is needed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {list(seeds)}")
    ids = np.asarray(image_ids)
    needed = initial + rounds * batch
    out = []
    for seed in seeds:
        pool, test = split_by_image(ids, labels, test_fraction=test_fraction, seed=seed)
        pool_images, test_images = np.unique(ids[pool]).size, np.unique(ids[test]).size
        if test.size == 0:
            raise ValueError(
                f"seed {seed}: the test set is empty ({np.unique(ids).size} images with clusters, "
                f"test fraction {test_fraction}); use a bigger dataset or a larger test fraction"
            )
        if pool.size < needed:
            raise ValueError(
                f"seed {seed}: the pool has {pool.size} clusters ({pool_images} images; the other "
                f"{test_images} are the test set), fewer than the {needed} the run reveals "
                f"(initial {initial} + {rounds} rounds x {batch}); lower the rounds, batch or "
                "initial size, or use a bigger dataset"
            )
        rng = np.random.default_rng([seed, 0xA1])
        first = np.sort(rng.choice(pool, size=initial, replace=False))
        out.append(Split(seed=int(seed), pool=pool, test=test, initial=first,
                         test_images=int(test_images), pool_images=int(pool_images)))
    return out
