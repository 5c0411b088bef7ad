"""Simulated active learning: the learners. A ``Trainer`` trains a ``Classifier`` from scratch on
the labelled crops; the Keras one trains the tiny ResNeSt (TensorFlow is imported only inside
the functions that run it: importing this package stays light); an ensemble averages several;
``augment_tta`` and ``members_tta`` say what the tta_* strategies compare."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from training.augment import variant

#: ``training.augment`` variant indices of the four orientations, unfiltered (as_is, hflip,
#: vflip, hvflip): the default test-time augmentation.
ORIENTATION_VARIANTS: tuple[int, ...] = (0, 9, 18, 27)
#: All 36 oversampling variants (4 orientations x 9 photometric filters).
ALL_VARIANTS: tuple[int, ...] = tuple(range(36))


class Classifier(Protocol):
    def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities (N, 6), embeddings (N, D)) for uint8 images (N, S, S, 3)."""


#: train(images uint8 (n, S, S, 3), labels (n,), seed) -> a Classifier trained from scratch.
Trainer = Callable[[np.ndarray, np.ndarray, int], Classifier]
#: tta(images) -> T >= 2 arrays like ``images``, the augmented views (the first may be the
#: images themselves).
TTA = Callable[[np.ndarray], list[np.ndarray]]


def augment_tta(indices: Sequence[int] = ORIENTATION_VARIANTS) -> TTA:
    """Test-time augmentation with the oversampling variants (``training.augment.variant``):
    the default, the four orientations; ``ALL_VARIANTS`` for all 36."""
    indices = tuple(int(i) for i in indices)
    if len(indices) < 2:
        raise ValueError("test-time augmentation needs at least 2 variants")

    def tta(images: np.ndarray) -> list[np.ndarray]:
        out = []
        for index in indices:
            if index == 0:
                out.append(images)
            else:
                out.append(np.stack([variant(image, index) for image in images]) if len(images)
                           else images.copy())
        return out

    return tta


class KerasClassifier:
    """A trained ResNeSt classifier behind the ``Classifier`` interface."""

    def __init__(self, model, batch_size: int = 256):
        self.model = model
        self.batch_size = int(batch_size)

    def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import tensorflow as tf

        size = tuple(int(v) for v in self.model.input_shape[1:3])
        if len(images) == 0:  # no images: the shapes of one blank image's outputs, with no rows
            probs, emb = self.predict(np.zeros((1, *size, 3), np.uint8))
            return probs[:0], emb[:0]
        probabilities, embeddings = [], []
        for lo in range(0, len(images), self.batch_size):
            x = tf.convert_to_tensor(images[lo:lo + self.batch_size], dtype=tf.float32) / 255.0
            if tuple(x.shape[1:3]) != size:  # as training.classifier.data.eval_dataset resizes
                x = tf.clip_by_value(tf.image.resize(x, size, method="bilinear", antialias=True), 0.0, 1.0)
            out = self.model(x, training=False)
            probabilities.append(np.asarray(out["probabilities"], dtype=np.float64))
            embeddings.append(np.asarray(out["embedding"], dtype=np.float32))
        return np.concatenate(probabilities), np.concatenate(embeddings)


class EnsembleClassifier:
    """Classifiers trained on the same labels from different seeds, as one: the probabilities
    are the members' mean (a deep ensemble, Lakshminarayanan et al. 2017), the embedding the
    members' embeddings side by side (a squared distance is then the sum of the members'), and
    ``member_probabilities`` the committee's individual votes for query-by-committee scores
    (``members_tta``: BALD and vote variance over the members, Beluch et al. 2018)."""

    def __init__(self, members: Sequence[Classifier]):
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        self.members = list(members)
        self._last: tuple[np.ndarray, tuple[np.ndarray, np.ndarray]] | None = None

    def _outputs(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # The same array is often asked for twice in a round (mean and votes): keep the last.
        if self._last is None or self._last[0] is not images:
            outs = [member.predict(images) for member in self.members]
            votes = np.stack([p for p, _ in outs], axis=1)  # (N, M, 6)
            self._last = (images, (votes, np.concatenate([e for _, e in outs], axis=1)))
        return self._last[1]

    def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        votes, embeddings = self._outputs(images)
        return votes.mean(axis=1), embeddings

    def member_probabilities(self, images: np.ndarray) -> np.ndarray:
        return self._outputs(images)[0]


def ensemble_trainer(train: Trainer, members: int) -> Trainer:
    """``train`` run ``members`` times per call, with seeds ``seed * members + j``; one member
    is ``train`` itself (the seeds are then unchanged)."""
    members = int(members)
    if members < 1:
        raise ValueError(f"an ensemble needs at least 1 member, got {members}")
    if members == 1:
        return train

    def fit(images: np.ndarray, labels: np.ndarray, seed: int) -> Classifier:
        return EnsembleClassifier([train(images, labels, int(seed) * members + j) for j in range(members)])

    return fit


def members_tta(images: np.ndarray) -> list[np.ndarray]:
    """The ``tta`` that scores an ensemble's members instead of augmented views: the
    ``tta_*`` strategies then measure the committee's disagreement. Only ``simulate`` reads
    it (as a marker); it cannot make views of images by itself."""
    raise TypeError("members_tta marks committee scoring; pass it to simulate(tta=...) with an ensemble trainer")


def keras_trainer(config, workdir: str | Path | None = None) -> Trainer:
    """A ``Trainer`` that runs ``training.classifier.trainer.train_classifier`` with ``config`` (a
    ``ClassifierRunConfig``): a fresh model each call, one epoch of
    ``config.optim.steps_per_epoch`` steps, no validation or test data (the final weights are
    kept), the call's seed as ``optim.seed``. Checkpoints go to a temporary folder under
    ``workdir`` that is removed after the model is loaded back."""
    optim = config.optim
    if not optim.steps_per_epoch:
        raise ValueError("set optim.steps_per_epoch: every round trains for the same number of steps")
    if optim.epochs != 1:
        # without validation data train_classifier keeps the first epoch's weights
        raise ValueError(f"train one epoch of steps_per_epoch steps (epochs=1), got epochs={optim.epochs}")

    def train(images: np.ndarray, labels: np.ndarray, seed: int) -> Classifier:
        import keras  # TensorFlow: imported only when a Keras learner trains

        import training.networks.resnest  # noqa: F401  (registers the layers for loading)
        from training.classifier.data import ClassifierData
        from training.classifier.trainer import train_classifier

        side = int(config.data.input_size)
        empty = np.zeros((0, side, side, 3), np.uint8), np.zeros(0, np.int64)
        run_config = dataclasses.replace(config, optim=dataclasses.replace(optim, seed=int(seed)))
        folder = Path(tempfile.mkdtemp(prefix="al-round-", dir=workdir))
        try:
            trained = train_classifier(ClassifierData(images, np.asarray(labels), *empty, *empty),
                                       run_config, folder)
            if trained.model_path is None:
                raise RuntimeError(f"training stopped ({trained.stopped}) before it saved a model")
            model = keras.saving.load_model(trained.model_path)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return KerasClassifier(model)

    return train
