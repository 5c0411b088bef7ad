"""Shared by the simulated active-learning tests: clusters that a fast NumPy nearest-centroid
classifier can learn, that classifier, and a trainer that records what it was trained on."""

from __future__ import annotations

import numpy as np

from inference.active_learning import ClusterSet, simulate


def make_clusters(n_images=24, per_image=6, side=4, seed=0) -> ClusterSet:
    """Crops whose pixels are a class pattern plus noise: learnable, never two alike."""
    rng = np.random.default_rng(seed)
    patterns = rng.uniform(40, 215, size=(6, side, side, 3))
    labels = rng.integers(0, 6, size=n_images * per_image)
    noise = rng.normal(0, 45, size=(labels.size, side, side, 3))
    images = np.clip(patterns[labels] + noise, 0, 255).astype(np.uint8)
    image_ids = np.repeat(np.arange(100, 100 + n_images), per_image)
    return ClusterSet(images, labels, image_ids)


class Centroids:
    """Nearest centroid on the flattened pixels; softmax of -distance / temperature (classes
    never seen get probability 0). Deterministic; the embedding is the pixels themselves."""

    def __init__(self, images, labels):
        x = self.features(images)
        self.classes = np.unique(labels)
        self.centres = np.stack([x[labels == k].mean(axis=0) for k in self.classes])

    @staticmethod
    def features(images):
        return images.reshape(len(images), -1).astype(np.float64) / 255.0

    def predict(self, images):
        x = self.features(images)
        d = np.sqrt(((x[:, None, :] - self.centres[None]) ** 2).sum(axis=2))
        logits = -d / 0.5
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        probs = np.zeros((len(x), 6))
        probs[:, self.classes] = p / p.sum(axis=1, keepdims=True)
        return probs, x.astype(np.float32)


class RecordingTrainer:
    """train(images, labels, seed) -> Centroids, remembering every call's crops and seed."""

    def __init__(self, clusters: ClusterSet):
        self.index_of = {img.tobytes(): i for i, img in enumerate(clusters.images)}
        self.calls: list[tuple[list[int], int]] = []

    def __call__(self, images, labels, seed):
        self.calls.append(([self.index_of[img.tobytes()] for img in images], seed))
        return Centroids(images, labels)


def run(clusters, strategies, seeds=(0, 1), rounds=3, batch=5, initial=4, **kw):
    trainer = RecordingTrainer(clusters)
    result = simulate(clusters, strategies, train=trainer, rounds=rounds, batch=batch, seeds=seeds,
                      initial=initial, **kw)
    return result, trainer


def labelled_at(curve, r):
    return np.sort(np.concatenate([curve.initial, *curve.picked[:r]]).astype(int))
