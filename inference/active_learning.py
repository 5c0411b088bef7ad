"""Simulated active learning on a labelled dataset: the ground truth plays the expert.

Pure module (no Django import; TensorFlow and matplotlib only inside the functions that need
them). The caller hands over one crop per cluster with its label and image (``ClusterSet``) and
a training function; ``simulate`` runs the loop for every seed and strategy and returns the
learning curves (test macro-F1 against the number of labels used).

Protocol, for each seed s
    1. Split by image (``plan_splits``): the images are cut into a test set (``test_fraction``
       of them) and the pool (the rest), stratified by each image's most severe grade
       (``training.splits.stratified_split`` with seed s). Every cluster of a pool image is one
       pool item; every cluster of a test image is in the test set. The test set has one use
       only, the point on the curve after each round: it is never trained on, never ranked and
       never picks weights or hyper-parameters. Each seed is its own split, so the spread over
       seeds includes which images are tested.
    2. Initial labelled set: ``initial`` pool clusters drawn uniformly with seed s, the same for
       every strategy of that seed.
    3. Rounds r = 0 .. R: train a fresh classifier on the labelled crops (``train(images,
       labels, seed)``; the model seed depends on s and r only, so at round r every strategy
       starts from the same initial weights), record (labels used, test macro-F1); then, except
       after the last round, predict the unlabelled pool (probabilities and embeddings; test-time
       augmentation too when the strategy needs it), score it with the strategy, pick ``batch``
       clusters (``select``; with a "+diverse" suffix ``select_diverse``, k-center greedy on
       the embeddings among the ``pool_factor * batch`` most uncertain, the labelled clusters
       counting as centres) and reveal their labels. A curve has R + 1 points, at
       ``initial + r * batch`` labels. Round 0 is the same model for every strategy of a seed,
       so it is trained once and shared.

No validation split (a decision): each round trains for a fixed number of optimizer steps and
keeps the final weights. A validation set carved from a few dozen labelled clusters would take a
large share of the labels the curve counts, and its macro-F1 over a handful of crops would pick
weights by noise; picking them on the test set would let the curve choose its own best point.
Every strategy gets the same steps in every round, so the curves compare labelled sets at equal
compute.

Summary: per strategy and round, the mean and sample sd (ddof=1) of test macro-F1 over seeds.
Label efficiency (``label_efficiency``): the target is random's final mean macro-F1; for every
other strategy, the labels its mean curve needs to reach it (the first point at or above it,
linearly interpolated from the point before; the first point itself when that already reaches
it; None, "not reached", otherwise); the best strategy is the one that needs fewest, and the
ratio is those labels over random's final label count. The issue's goal is a ratio <= 0.5.
The measure is undefined when random's final mean is not above the shared first point (a curve
that does not rise: every strategy would "reach" it with the initial labels alone). It reads
the mean curves: with a spread over seeds as large as the gaps between strategies, a ratio
below 0.5 can be noise; read it beside the table's sd and the paired per-seed ratios (the best
strategy against the same seed's random curve: same test set, same initial labels, same
round-0 model), which ``label_efficiency`` adds when given the result.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from annotation.bethesda import BETHESDA, NUM_CLASSES
from inference.uncertainty import (
    DEFAULT_POOL_FACTOR,
    STRATEGIES,
    Predictions,
    Strategy,
    UnknownStrategy,
    get_strategy,
    select,
    select_diverse,
)
from training.metrics import macro_f1
from training.splits import image_grade, stratified_split

#: A strategy name with this suffix picks with ``select_diverse`` instead of ``select``.
DIVERSE_SUFFIX = "+diverse"
#: The baseline every other strategy is measured against.
BASELINE = "random"
#: The issue's goal: the best strategy reaches random's final macro-F1 with at most this share
#: of random's labels.
GOAL_RATIO = 0.5
#: ``training.augment`` variant indices of the four orientations, unfiltered (as_is, hflip,
#: vflip, hvflip): the default test-time augmentation.
ORIENTATION_VARIANTS: tuple[int, ...] = (0, 9, 18, 27)
#: All 36 oversampling variants (4 orientations x 9 photometric filters).
ALL_VARIANTS: tuple[int, ...] = tuple(range(36))


# --- data ----------------------------------------------------------------------------------


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


# --- strategies ----------------------------------------------------------------------------


def parse_strategy(name: str) -> tuple[Strategy, bool]:
    """(the uncertainty strategy, whether to add diversity) for a name such as "entropy" or
    "entropy+diverse". UnknownStrategy lists the known names; a strategy that needs detector
    scores is refused (the simulation trains only the classifier)."""
    base, diverse = name, False
    if name.endswith(DIVERSE_SUFFIX):
        base, diverse = name[: -len(DIVERSE_SUFFIX)], True
    if base not in STRATEGIES:
        raise UnknownStrategy(
            f"unknown strategy {name!r}; known: {', '.join(known_strategies())} "
            f"(add {DIVERSE_SUFFIX} to any for k-center diversity)"
        )
    strategy = STRATEGIES[base]
    if "detector_scores" in strategy.requires:
        raise ValueError(
            f"strategy {base!r} needs detector scores, and this simulation trains only the "
            "classifier (no detector runs on the pool), so there are none; leave it out"
        )
    return strategy, diverse


def known_strategies() -> list[str]:
    """The names ``simulate`` accepts (without the "+diverse" variants)."""
    return [n for n, s in STRATEGIES.items() if "detector_scores" not in s.requires]


def check_strategies(names: Sequence[str]) -> list[str]:
    """The names, validated: known, usable here, no duplicates; and at least one."""
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise ValueError("no strategies given")
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"strategies named twice: {', '.join(duplicated)}")
    for name in names:
        parse_strategy(name)
    return names


# --- the learner ---------------------------------------------------------------------------


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
        from training.augment import variant

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
            if tuple(x.shape[1:3]) != size:  # as training.pipeline.eval_dataset resizes
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
    """A ``Trainer`` that runs ``training.trainer.train_classifier`` with ``config`` (a
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
        import keras

        import training.networks.resnest  # noqa: F401  (registers the layers for loading)
        from training.trainer import ClassifierData, train_classifier

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


# --- the simulation ------------------------------------------------------------------------


@dataclass
class Curve:
    """One strategy on one seed. ``labels[r]`` and ``macro_f1[r]`` after round r's training;
    ``picked[r]`` the clusters (indices into the ClusterSet) revealed after round r, most
    uncertain first; ``class_counts[r]`` the labelled set's clusters per class at round r."""

    seed: int
    initial: list[int]
    labels: list[int] = field(default_factory=list)
    macro_f1: list[float] = field(default_factory=list)
    picked: list[list[int]] = field(default_factory=list)
    class_counts: list[list[int]] = field(default_factory=list)


@dataclass
class SimulationResult:
    strategies: list[str]
    seeds: list[int]
    rounds: int
    batch: int
    initial: int
    test_fraction: float
    curves: dict[str, list[Curve]]
    splits: list[dict]

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


class _Round:
    """One trained model and what the selection and the curve need from it."""

    def __init__(self, model: Classifier, clusters: ClusterSet, split: Split, labelled: np.ndarray):
        self.model = model
        self.clusters = clusters
        self.labelled = labelled
        self.unlabelled = np.setdiff1d(split.pool, labelled)
        probs, _ = model.predict(clusters.images[split.test])
        self.test_f1 = float(macro_f1(clusters.labels[split.test], probs.argmax(axis=1)))
        self._cache: dict[str, object] = {}  # round 0 is shared: each output computed once

    def _get(self, key: str, compute: Callable[[], object]):
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def unlabelled_outputs(self) -> tuple[np.ndarray, np.ndarray]:
        return self._get("unlabelled", lambda: self.model.predict(self.unlabelled_images()))

    def unlabelled_images(self) -> np.ndarray:
        return self._get("unlabelled_images", lambda: self.clusters.images[self.unlabelled])

    def unlabelled_tta(self, tta: TTA) -> np.ndarray:
        def compute():
            if tta is members_tta:
                if not hasattr(self.model, "member_probabilities"):
                    raise ValueError("committee scores (tta=members_tta) need an ensemble of at least 2 members")
                return self.model.member_probabilities(self.unlabelled_images())
            views = tta(self.unlabelled_images())
            return np.stack([self.model.predict(v)[0] for v in views], axis=1)

        return self._get("tta", compute)

    def labelled_embeddings(self) -> np.ndarray:
        return self._get("labelled", lambda: self.model.predict(self.clusters.images[self.labelled])[1])

    def pick(self, strategy: Strategy, diverse: bool, k: int, *, tta: TTA, random_seed: int,
             pool_factor: float) -> np.ndarray:
        """Indices (into the ClusterSet) of the k clusters to reveal, most uncertain first."""
        probs, emb = self.unlabelled_outputs()
        if strategy.name == BASELINE:
            strategy = get_strategy(BASELINE, seed=random_seed)
        needs_tta = "tta_probabilities" in strategy.requires
        predictions = Predictions(probabilities=probs, embeddings=emb,
                                  tta_probabilities=self.unlabelled_tta(tta) if needs_tta else None)
        scores = strategy.score(predictions)
        if not diverse:
            local = select(scores, k, descending=strategy.descending)
            return self.unlabelled[local]
        centres = self.labelled_embeddings()
        n = scores.size
        local = select_diverse(
            np.concatenate([scores, np.zeros(len(centres))]),  # centres' scores are never read
            np.concatenate([emb, centres.astype(emb.dtype)]),
            k,
            descending=strategy.descending,
            pool_factor=pool_factor,
            already_selected=np.arange(n, n + len(centres)),
        )
        return self.unlabelled[local]


def model_seed(seed: int, round_index: int) -> int:
    """The training seed of round r of seed s (shared by every strategy at that round)."""
    return int(seed) * 1000 + int(round_index)


def simulate(
    clusters: ClusterSet,
    strategies: Sequence[str],
    *,
    train: Trainer,
    rounds: int,
    batch: int,
    seeds: Sequence[int] = (0, 1, 2),
    initial: int | None = None,
    test_fraction: float = 0.25,
    tta: TTA | None = None,
    pool_factor: float = DEFAULT_POOL_FACTOR,
    progress: Callable[[str], None] = lambda line: None,
) -> SimulationResult:
    """Run the protocol in the module docstring; see ``SimulationResult`` and ``Curve``.
    Everything is checked (strategies, sizes of every seed's pool) before anything trains."""
    names = check_strategies(strategies)
    parsed = {name: parse_strategy(name) for name in names}
    initial = batch if initial is None else initial
    seeds = [int(s) for s in seeds]
    splits = plan_splits(clusters.image_ids, clusters.labels, seeds=seeds, test_fraction=test_fraction,
                         initial=initial, rounds=rounds, batch=batch)
    tta = tta or augment_tta()
    result = SimulationResult(strategies=names, seeds=seeds, rounds=int(rounds), batch=int(batch),
                              initial=int(initial), test_fraction=float(test_fraction),
                              curves={name: [] for name in names}, splits=[s.to_json() for s in splits])

    def record(curve: Curve, state: _Round) -> None:
        curve.labels.append(int(state.labelled.size))
        curve.macro_f1.append(state.test_f1)
        curve.class_counts.append(np.bincount(clusters.labels[state.labelled], minlength=NUM_CLASSES).tolist())

    def trained(split: Split, labelled: np.ndarray, r: int) -> _Round:
        model = train(clusters.images[labelled], clusters.labels[labelled], model_seed(split.seed, r))
        return _Round(model, clusters, split, labelled)

    for split in splits:
        seed = split.seed
        first = trained(split, split.initial, 0)
        progress(f"seed {seed} | every strategy | round 0/{rounds}: {split.initial.size} labels, "
                 f"test macro-F1 {100 * first.test_f1:.1f}")
        for name in names:
            strategy, diverse = parsed[name]
            curve = Curve(seed=seed, initial=split.initial.tolist())
            state = first
            record(curve, state)
            for r in range(1, rounds + 1):
                picks = state.pick(strategy, diverse, batch, tta=tta, random_seed=model_seed(seed, r - 1),
                                   pool_factor=pool_factor)
                curve.picked.append(picks.tolist())
                state = trained(split, np.sort(np.concatenate([state.labelled, picks])), r)
                progress(f"seed {seed} | {name} | round {r}/{rounds}: {state.labelled.size} labels, "
                         f"test macro-F1 {100 * state.test_f1:.1f}")
                record(curve, state)
            result.curves[name].append(curve)
    return result


# --- summary -------------------------------------------------------------------------------


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for one value)."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def summarize(result: SimulationResult) -> dict[str, dict[str, list[float]]]:
    """{strategy: {"labels": [...], "mean": [...], "sd": [...]}}, macro-F1 over seeds per round."""
    out = {}
    for name, curves in result.curves.items():
        labels = curves[0].labels
        if any(c.labels != labels for c in curves):
            raise ValueError(f"{name}: the seeds' curves have different label counts")
        stats = [mean_sd([c.macro_f1[r] for c in curves]) for r in range(len(labels))]
        out[name] = {"labels": list(labels), "mean": [m for m, _ in stats], "sd": [s for _, s in stats]}
    return out


def labels_to_reach(labels: Sequence[float], values: Sequence[float], target: float) -> float | None:
    """Labels at which the curve first reaches ``target`` (linear between the point before and
    the first point at or above it; the first point's labels when it starts there); None when
    it never does."""
    if len(labels) != len(values) or not labels:
        raise ValueError("one value per label count, and at least one point")
    for i, value in enumerate(values):
        if value >= target:
            if i == 0:
                return float(labels[0])
            x0, x1, y0, y1 = labels[i - 1], labels[i], values[i - 1], values[i]
            return float(x0 + (x1 - x0) * (target - y0) / (y1 - y0))
    return None


@dataclass(frozen=True)
class Efficiency:
    target: float  # random's final mean macro-F1
    baseline_labels: int  # random's final label count
    start: float  # random's first mean macro-F1 (round 0, shared by every strategy)
    needed: dict[str, float | None]  # labels each other strategy needs (None: not reached)
    best: str | None  # the strategy that needs fewest; None when none reaches it or undefined
    ratio: float | None  # best's labels / baseline_labels
    # The same ratio seed by seed (best's curve against its own seed's random curve), when the
    # result was given: None where that seed's random curve does not rise or best never reaches it.
    per_seed: list[float | None] | None = None

    @property
    def seeds_meeting_goal(self) -> int | None:
        """In how many seeds the best strategy needed at most GOAL_RATIO of random's labels."""
        if self.per_seed is None:
            return None
        return sum(1 for r in self.per_seed if r is not None and r <= GOAL_RATIO + 1e-12)

    @property
    def defined(self) -> bool:
        """Random's curve rose: its final mean is above the shared starting point. Otherwise
        every strategy "reaches" the target at the start and the ratio says nothing."""
        return self.target > self.start

    @property
    def goal_met(self) -> bool:
        return self.defined and self.ratio is not None and self.ratio <= GOAL_RATIO + 1e-12

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "defined": self.defined, "goal_ratio": GOAL_RATIO,
                "goal_met": self.goal_met, "seeds_meeting_goal": self.seeds_meeting_goal}


def _per_seed_ratios(result: SimulationResult, best: str, baseline: str) -> list[float | None]:
    ratios: list[float | None] = []
    for base, other in zip(result.curves[baseline], result.curves[best], strict=True):
        target = base.macro_f1[-1]
        needed = labels_to_reach(other.labels, other.macro_f1, target) if target > base.macro_f1[0] else None
        ratios.append(None if needed is None else needed / base.labels[-1])
    return ratios


def label_efficiency(summary: dict, baseline: str = BASELINE,
                     result: SimulationResult | None = None) -> Efficiency | None:
    """Label efficiency of the best non-baseline strategy (module docstring); None when the
    baseline or every other strategy is missing. Undefined (best and ratio None, ``defined``
    False) when random's final mean is not above its first point. With ``result``, also the
    best strategy's ratio in each seed against that seed's own random curve (``per_seed``): a
    paired reading, less at the mercy of one seed's luck than the means."""
    if baseline not in summary or len(summary) < 2:
        return None
    base = summary[baseline]
    target, final_labels = float(base["mean"][-1]), int(base["labels"][-1])
    start = float(base["mean"][0])
    needed = {name: labels_to_reach(s["labels"], s["mean"], target)
              for name, s in summary.items() if name != baseline}
    reached = {n: v for n, v in needed.items() if v is not None}
    best = None
    if reached and target > start:
        best = min(reached, key=lambda n: (reached[n], list(needed).index(n)))
    ratio = reached[best] / final_labels if best is not None else None
    per_seed = _per_seed_ratios(result, best, baseline) if result is not None and best is not None else None
    return Efficiency(target=target, baseline_labels=final_labels, start=start, needed=needed,
                      best=best, ratio=ratio, per_seed=per_seed)


def format_table(summary: dict) -> str:
    """Markdown: one row per label count, one column per strategy, test macro-F1 (%) mean +- sd."""
    names = list(summary)
    labels = summary[names[0]]["labels"]
    lines = ["| labels | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for r, n in enumerate(labels):
        cells = [f"{100 * summary[s]['mean'][r]:.1f} +- {100 * summary[s]['sd'][r]:.1f}" for s in names]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_efficiency(efficiency: Efficiency | None) -> str:
    """The label-efficiency line."""
    if efficiency is None:
        return "label efficiency: not computed (needs 'random' and at least one other strategy)"
    head = (f"label efficiency: target = random's final test macro-F1 {100 * efficiency.target:.1f} "
            f"at {efficiency.baseline_labels} labels")
    if not efficiency.defined:
        return (f"{head}; undefined: that is not above the {100 * efficiency.start:.1f} every strategy "
                f"starts from, so random's curve does not rise and any strategy 'reaches' it at the "
                f"start (goal <= {GOAL_RATIO:g}: not assessable)")
    if efficiency.best is None:
        return f"{head}; not reached by any other strategy (goal <= {GOAL_RATIO:g}: not met)"
    others = ", ".join(f"{n} {'not reached' if v is None else f'{v:.0f}'}"
                       for n, v in efficiency.needed.items())
    line = (f"{head}; best {efficiency.best} reaches it at {efficiency.needed[efficiency.best]:.0f} "
            f"labels = {efficiency.ratio:.2f} of random's (goal <= {GOAL_RATIO:g}: "
            f"{'met' if efficiency.goal_met else 'not met'}); labels needed: {others}")
    if efficiency.per_seed is not None:
        seeds = ", ".join("-" if r is None else f"{r:.2f}" for r in efficiency.per_seed)
        line += (f"; seed by seed against that seed's random: {seeds} ({efficiency.seeds_meeting_goal} of "
                 f"{len(efficiency.per_seed)} seeds <= {GOAL_RATIO:g})")
    return line


def plot_curves(summary: dict, path, *, title: str = "Simulated active learning",
                efficiency: Efficiency | None = None) -> Path:
    """PNG: per strategy the mean test macro-F1 (%) against labels used, with a +- sd band;
    random's final level and half its labels dotted when ``efficiency`` is given."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.6), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for name, s in summary.items():
        x = np.asarray(s["labels"], dtype=float)
        mean, sd = 100 * np.asarray(s["mean"]), 100 * np.asarray(s["sd"])
        style = {"color": "black", "linestyle": "--"} if name == BASELINE else {}
        line, = ax.plot(x, mean, marker="o", markersize=3, label=name, **style)
        ax.fill_between(x, mean - sd, mean + sd, color=line.get_color(), alpha=0.15, linewidth=0)
    if efficiency is not None:
        ax.axhline(100 * efficiency.target, color="grey", linestyle=":", linewidth=1,
                   label="random's final level")
        ax.axvline(GOAL_RATIO * efficiency.baseline_labels, color="grey", linestyle="-.", linewidth=1,
                   label=f"{GOAL_RATIO:g} x random's labels (goal)")
    ax.set_xticks(sorted({n for s in summary.values() for n in s["labels"]}))
    ax.set_xlabel("labels used (clusters)")
    ax.set_ylabel("test macro-F1 (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def format_counts(counts: Sequence[int]) -> str:
    """"NILM 12, ASC-US 3, ..." for a per-class count list."""
    return ", ".join(f"{name} {int(c)}" for name, c in zip(BETHESDA, counts, strict=True))

