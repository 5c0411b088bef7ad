"""Simulated active learning: the loop (the protocol in the package docstring). Strategies come
from the registry (``inference.strategies``: the ones al_simulate can run, "+diverse" for
k-center diversity); selection is ``inference.uncertainty``'s."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from annotation.bethesda import NUM_CLASSES
from inference.active_learning.learners import TTA, Classifier, Trainer, augment_tta, members_tta
from inference.active_learning.pool import ClusterSet, Split, plan_splits
from inference.strategies import (
    Strategy,
    check_simulation_strategies,
    get_strategy,
    simulation_strategy,
)
from inference.uncertainty import DEFAULT_POOL_FACTOR, Predictions, select, select_diverse
from training.metrics import macro_f1

#: The baseline every other strategy is measured against.
BASELINE = "random"


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
        predictions = Predictions(probabilities=probs, embeddings=emb,
                                  tta_probabilities=self.unlabelled_tta(tta) if strategy.needs_tta else None)
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
    """Run the protocol in the package docstring; see ``SimulationResult`` and ``Curve``.
    Everything is checked (strategies, sizes of every seed's pool) before anything trains."""
    names = check_simulation_strategies(strategies)
    parsed = {name: simulation_strategy(name) for name in names}
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
