"""Active-learning strategies: the one registry of how clusters are scored, and where each may run.

Pure module (no Django, no TensorFlow). A ``Strategy`` is a small object: a ``name``, a label
(``description``), ``score(predictions)`` (one float per cluster, from a validated
``inference.uncertainty.Predictions``), which way wins (``descending``, alias
``higher_is_more_uncertain``: True when a higher score is more uncertain and picked first) and
the optional prediction fields it reads (``requires``; ``needs_detector``, ``needs_tta``).

Where a strategy may run is said here, once, by what that place has to score with:
    ranking rounds  (``ROUND``: the service, the round form, the pages) score stored
                    predictions: detector scores and embeddings, no test-time augmentations.
                    ``ROUND_STRATEGIES``, ``round_strategy(name)``.
    al_simulate     (``SIMULATION``: ``inference.active_learning`` and its command) trains only
                    the classifier: embeddings and test-time augmentations (or an ensemble's
                    members, ``members_tta``), no detector scores. ``SIMULATION_STRATEGIES``,
                    ``simulation_strategy(name)``; a "+diverse" suffix adds k-center diversity.
A strategy a place cannot run is refused there with the reason (``StrategyRefused``); a name
that is no strategy, with the known ones (``UnknownStrategy``).

Adding a strategy: write its score function (``Predictions`` -> (N,) floats), add a
``Strategy(name, fn, descending=..., requires=(...), description=...)`` to ``STRATEGIES``. The
round form offers it, the service and al_simulate accept it, wherever its fields exist.

Conventions
    * Classes are the six Bethesda classes in their ordinal order (``annotation.bethesda``),
      index 0 = NILM ... 5 = SCC. Only ``margin`` is ascending (a small gap between the two
      best classes is uncertain).
    * "The call" is the predicted class ``argmax p``; on an exact tie of probabilities the
      lower (less severe) index is the call, as ``np.argmax`` gives.

Strategies (registry ``STRATEGIES``; ``get_strategy(name)``)
    ``least_confidence``   1 - max_k p_k. 0 for a one-hot, 5/6 for the uniform distribution.
    ``margin``             p_(1) - p_(2), the gap between the two largest probabilities;
                           ascending. 1 for a one-hot, 0 when the two best classes tie.
    ``entropy``            -sum_k p_k ln p_k in nats (natural log, 0 ln 0 = 0); from 0 to
                           ln 6 = 1.792 for the uniform distribution.
    ``ordinal_cost``       sum_k p_k |k - i| with i the call: the expected number of grades
                           between the truth and the call, if the truth is drawn from p. A
                           NILM/HSIL split scores higher than an ASC-H/HSIL split with the same
                           maximum probability; entropy and least confidence cannot tell them
                           apart.
    ``clinical_cost``      sum_k p_k C[k, i], the expected clinical cost of the call, with C the
                           project's ``CLINICAL_COST`` (rows: truth, columns: call). It is
                           asymmetric: missing a lesion costs more than over-calling it
                           (HSIL called NILM costs 10, SCC called NILM 12, NILM called HSIL 2),
                           so a cluster the model calls NILM with a real chance of HSIL/SCC
                           ranks highest. ``clinical_cost_strategy(cost)`` takes another matrix.
    ``detector_disagreement``
                           s * P(NILM) + (1 - s) * (1 - P(NILM)), with s the detector's score
                           (its confidence that the cluster is atypical, any of ASC-US..SCC)
                           and 1 - P(NILM) the classifier's probability of that same event: the
                           probability that two independent judges holding these beliefs
                           disagree on "atypical or not". 0 when both are sure and agree, 1 when
                           both are sure and disagree, 0.5 when either is a coin flip. Needs
                           ``detector_scores``.
    ``tta_variance``       the variance (population, ddof=0) across the T test-time
                           augmentations of each class's probability, averaged over the six
                           classes. 0 when every augmentation gives the same distribution;
                           at most 5/36 (one-hots spread evenly over the six classes); two
                           disagreeing one-hots, half the augmentations each, give 1/12. Needs
                           ``tta_probabilities``.
    ``tta_bald``           BALD / mutual information, in nats: H(mean_t p_t) - mean_t H(p_t), the
                           entropy of the averaged prediction minus the average entropy of the
                           augmented predictions. 0 when every augmentation agrees, high when
                           each augmentation is confident but they disagree; never negative.
                           Needs ``tta_probabilities``.
    ``random``             uniform scores in [0, 1) from ``np.random.default_rng(seed)``, one
                           per cluster in pool order (seed 0 in the registry; ``get_strategy(
                           "random", seed=...)`` or ``random_strategy(seed)`` for another). The
                           baseline every other strategy is compared with.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from annotation.bethesda import CLINICAL_COST, NUM_CLASSES
from inference.uncertainty import Predictions, select


class UnknownStrategy(ValueError):
    """A strategy name that is not in ``STRATEGIES``."""


class StrategyRefused(ValueError):
    """A known strategy that cannot run here (the message says why)."""


_OPTIONAL_FIELDS = ("detector_scores", "embeddings", "tta_probabilities")


@dataclass(frozen=True)
class Strategy:
    """A way to score clusters. ``score(predictions)`` returns one float per cluster;
    ``descending`` True means a higher score is more uncertain (picked first).

    ``requires`` names the optional ``Predictions`` fields the strategy reads; ``score``
    refuses predictions that lack one. ``fn`` receives validated predictions."""

    name: str
    fn: Callable[[Predictions], np.ndarray] = field(repr=False)
    descending: bool = True
    requires: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        unknown = [f for f in self.requires if f not in _OPTIONAL_FIELDS]
        if unknown:
            raise ValueError(
                f"strategy {self.name!r} requires unknown fields {unknown}; "
                f"optional fields are {', '.join(_OPTIONAL_FIELDS)}"
            )

    @property
    def higher_is_more_uncertain(self) -> bool:
        return self.descending

    @property
    def label(self) -> str:
        """"name: description", as a choice list shows it."""
        return f"{self.name}: {self.description}"

    @property
    def direction(self) -> str:
        return "higher is more uncertain" if self.descending else "lower is more uncertain"

    @property
    def needs_detector(self) -> bool:
        return "detector_scores" in self.requires

    @property
    def needs_tta(self) -> bool:
        """Scores test-time augmentations (or an ensemble's members' votes)."""
        return "tta_probabilities" in self.requires

    def score(self, predictions: Predictions) -> np.ndarray:
        if not isinstance(predictions, Predictions):
            raise TypeError(
                f"strategy {self.name!r} scores a Predictions, got {type(predictions).__name__}"
            )
        for name in self.requires:
            if getattr(predictions, name) is None:
                raise ValueError(
                    f"strategy {self.name!r} needs {name}, which these predictions do not have"
                )
        scores = np.asarray(self.fn(predictions), dtype=np.float64)
        if scores.shape != (len(predictions),):
            raise ValueError(
                f"strategy {self.name!r} returned shape {scores.shape}, "
                f"expected ({len(predictions)},)"
            )
        return scores

    def select(self, predictions: Predictions, k: int, **options) -> np.ndarray:
        """Indices of the k most uncertain clusters (``select`` with this direction)."""
        return select(self.score(predictions), k, descending=self.descending, **options)


def _entropy(p: np.ndarray) -> np.ndarray:
    """Entropy in nats along the last axis, 0 ln 0 = 0."""
    logs = np.zeros_like(p)
    np.log(p, out=logs, where=p > 0.0)
    return -np.einsum("...c,...c->...", p, logs)


def _least_confidence(pred: Predictions) -> np.ndarray:
    return 1.0 - pred.probabilities.max(axis=1)


def _margin(pred: Predictions) -> np.ndarray:
    ordered = np.sort(pred.probabilities, axis=1)
    return ordered[:, -1] - ordered[:, -2]


def _entropy_score(pred: Predictions) -> np.ndarray:
    return _entropy(pred.probabilities)


_GRADES = np.arange(NUM_CLASSES)
#: |k - i| for truth k (rows) and call i (columns).
ORDINAL_DISTANCE = np.abs(_GRADES[:, None] - _GRADES[None, :]).astype(np.float64)
ORDINAL_DISTANCE.flags.writeable = False


def _expected_cost_of_call(probabilities: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """sum_k p_k cost[k, call] with call = argmax p (lower index on a tie)."""
    call = probabilities.argmax(axis=1)
    # (N, 6) @ (6, 6) gives the expected cost of every possible call; keep the actual call's.
    expected = probabilities @ cost
    return np.take_along_axis(expected, call[:, None], axis=1)[:, 0]


def _ordinal_cost(pred: Predictions) -> np.ndarray:
    return _expected_cost_of_call(pred.probabilities, ORDINAL_DISTANCE)


def _check_cost_matrix(cost) -> np.ndarray:
    matrix = np.array(cost, dtype=np.float64)
    if matrix.shape != (NUM_CLASSES, NUM_CLASSES):
        raise ValueError(
            f"a cost matrix must have shape ({NUM_CLASSES}, {NUM_CLASSES}), got {matrix.shape}"
        )
    if not np.isfinite(matrix).all() or (matrix < 0).any():
        raise ValueError("a cost matrix must hold finite, non-negative costs")
    matrix.flags.writeable = False
    return matrix


def _detector_disagreement(pred: Predictions) -> np.ndarray:
    s = pred.detector_scores
    assert s is not None  # required: Strategy.score checked it
    p_nilm = pred.probabilities[:, 0]
    return s * p_nilm + (1.0 - s) * (1.0 - p_nilm)


def _tta_variance(pred: Predictions) -> np.ndarray:
    tta = pred.tta_probabilities
    assert tta is not None  # required: Strategy.score checked it
    deviation = tta - tta.mean(axis=1, keepdims=True)
    return np.einsum("ntc,ntc->n", deviation, deviation) / (tta.shape[1] * tta.shape[2])


def _tta_bald(pred: Predictions) -> np.ndarray:
    tta = pred.tta_probabilities
    assert tta is not None  # required: Strategy.score checked it
    info = _entropy(tta.mean(axis=1)) - _entropy(tta).mean(axis=1)
    return np.maximum(info, 0.0)  # Jensen: >= 0; clip rounding noise below zero


def clinical_cost_strategy(cost=CLINICAL_COST, *, name: str = "clinical_cost") -> Strategy:
    """Expected clinical cost of the call, sum_k p_k cost[k, argmax p] (rows: truth,
    columns: call). The default is ``annotation.bethesda.CLINICAL_COST``."""
    matrix = _check_cost_matrix(cost)
    return Strategy(
        name=name,
        fn=lambda pred: _expected_cost_of_call(pred.probabilities, matrix),
        description="expected clinical cost of the predicted class (missing HSIL/SCC costs most)",
    )


def random_strategy(seed: int = 0) -> Strategy:
    """Uniform scores in [0, 1) from ``np.random.default_rng(seed)``: the same seed and pool
    size always give the same scores."""
    seed = operator.index(seed)

    def fn(pred: Predictions) -> np.ndarray:
        return np.random.default_rng(seed).random(len(pred))

    return Strategy(name="random", fn=fn, description=f"random baseline (seed {seed})")


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy("least_confidence", _least_confidence, description="1 - max p"),
        Strategy(
            "margin", _margin, descending=False,
            description="gap between the two largest probabilities (smaller is more uncertain)",
        ),
        Strategy("entropy", _entropy_score, description="Shannon entropy in nats"),
        Strategy(
            "ordinal_cost", _ordinal_cost,
            description="expected grade distance |k - argmax p| under p",
        ),
        clinical_cost_strategy(),
        Strategy(
            "detector_disagreement", _detector_disagreement, requires=("detector_scores",),
            description="s P(NILM) + (1 - s)(1 - P(NILM)), s the detector's atypical score",
        ),
        Strategy(
            "tta_variance", _tta_variance, requires=("tta_probabilities",),
            description="variance across test-time augmentations, averaged over classes",
        ),
        Strategy(
            "tta_bald", _tta_bald, requires=("tta_probabilities",),
            description="mutual information (BALD) over test-time augmentations, nats",
        ),
        random_strategy(0),
    )
}


def get_strategy(name: str, *, seed: int | None = None) -> Strategy:
    """The strategy called ``name``; ``seed`` makes a new seeded ``random`` strategy (and is
    refused for the others, which are deterministic)."""
    if name not in STRATEGIES:
        raise UnknownStrategy(
            f"unknown uncertainty strategy {name!r}; known: {', '.join(sorted(STRATEGIES))}"
        )
    if seed is not None:
        if name != "random":
            raise ValueError(f"strategy {name!r} takes no seed; only 'random' does")
        return random_strategy(seed)
    return STRATEGIES[name]



# --- where each strategy may run -----------------------------------------------------------

#: The "+diverse" suffix of a simulation strategy name: pick with ``select_diverse``.
DIVERSE_SUFFIX = "+diverse"


@dataclass(frozen=True, eq=False)
class Place:
    """Where strategies run: the optional ``Predictions`` fields it has (``provides``) and, for
    each field it lacks, the refusal a strategy that needs it gets (``{name}``: the strategy)."""

    name: str
    provides: frozenset[str]
    refusals: dict[str, str]

    def __post_init__(self) -> None:
        unsaid = set(_OPTIONAL_FIELDS) - set(self.provides) - set(self.refusals)
        if unsaid:
            raise ValueError(f"{self.name}: say whether it provides {', '.join(sorted(unsaid))}")

    def refusal(self, strategy: Strategy) -> str | None:
        """Why ``strategy`` cannot run here, or None when it can."""
        missing = [f for f in strategy.requires if f not in self.provides]
        return self.refusals[missing[0]].format(name=strategy.name) if missing else None

    def names(self) -> tuple[str, ...]:
        """The registry's strategies this place can run, in registry order."""
        return tuple(name for name, s in STRATEGIES.items() if self.refusal(s) is None)


ROUND = Place("ranking round", frozenset({"detector_scores", "embeddings"}), {
    "tta_probabilities": "{name} needs test-time-augmented predictions, which prediction jobs do not "
                         "store; use it in al_simulate, or pick another strategy",
})
SIMULATION = Place("al_simulate", frozenset({"embeddings", "tta_probabilities"}), {
    "detector_scores": "strategy {name!r} needs detector scores, and this simulation trains only the "
                       "classifier (no detector runs on the pool), so there are none; leave it out",
})

#: What the round form offers, the strategies it does not, and its default.
ROUND_STRATEGIES = ROUND.names()
NOT_FOR_ROUNDS = tuple(name for name in STRATEGIES if name not in ROUND_STRATEGIES)
DEFAULT_ROUND_STRATEGY = "clinical_cost"
#: The names al_simulate accepts (each also with the "+diverse" suffix).
SIMULATION_STRATEGIES = SIMULATION.names()


def round_strategy(name: str, *, seed: int = 0) -> Strategy:
    """The strategy a ranking round scores with (``random`` seeded with ``seed``):
    UnknownStrategy for an unknown name, StrategyRefused for one rounds cannot run."""
    chosen = get_strategy(name, seed=seed if name == "random" else None)
    refusal = ROUND.refusal(chosen)
    if refusal:
        raise StrategyRefused(refusal)
    return chosen


def simulation_strategy(name: str) -> tuple[Strategy, bool]:
    """(the strategy, whether to add diversity) for an al_simulate name such as "entropy" or
    "entropy+diverse": UnknownStrategy lists the known names; StrategyRefused for one the
    simulation cannot run (it has no detector scores)."""
    base, diverse = name, False
    if name.endswith(DIVERSE_SUFFIX):
        base, diverse = name[: -len(DIVERSE_SUFFIX)], True
    if base not in STRATEGIES:
        raise UnknownStrategy(
            f"unknown strategy {name!r}; known: {', '.join(SIMULATION_STRATEGIES)} "
            f"(add {DIVERSE_SUFFIX} to any for k-center diversity)"
        )
    refusal = SIMULATION.refusal(STRATEGIES[base])
    if refusal:
        raise StrategyRefused(refusal)
    return STRATEGIES[base], diverse


def check_simulation_strategies(names: Sequence[str]) -> list[str]:
    """The al_simulate names, validated: known, usable there, no duplicates; and at least one."""
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise ValueError("no strategies given")
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"strategies named twice: {', '.join(duplicated)}")
    for name in names:
        simulation_strategy(name)
    return names
