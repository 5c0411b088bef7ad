"""Active-learning strategies (inference/strategies.py): hand-computed scores on tiny arrays,
directions and rankings, and the registry's word on where each strategy may run.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from annotation.bethesda import BETHESDA, CLINICAL_COST
from inference.strategies import (
    NOT_FOR_ROUNDS,
    ROUND_STRATEGIES,
    SIMULATION_STRATEGIES,
    STRATEGIES,
    Place,
    StrategyRefused,
    UnknownStrategy,
    clinical_cost_strategy,
    get_strategy,
    random_strategy,
    round_strategy,
    simulation_strategy,
)
from inference.uncertainty import Predictions
from tests.helpers import ROOT
from tests.inference.conftest import UNIFORM, one_hot


def split(a: str, pa: float, b: str, pb: float) -> list[float]:
    p = [0.0] * 6
    p[BETHESDA.index(a)] += pa
    p[BETHESDA.index(b)] += pb
    return p


def scores_of(name: str, probabilities, **fields) -> np.ndarray:
    return STRATEGIES[name].score(Predictions(np.array(probabilities), **fields))


# --- strategies: hand-computed values ------------------------------------------------------

THREE = [[0.5, 0.3, 0.2, 0.0, 0.0, 0.0], one_hot("NILM"), UNIFORM]


def test_least_confidence_values():
    assert scores_of("least_confidence", THREE) == pytest.approx([0.5, 0.0, 5 / 6])


def test_margin_values_and_ascending_direction():
    assert scores_of("margin", THREE) == pytest.approx([0.2, 1.0, 0.0])
    assert STRATEGIES["margin"].descending is False
    assert STRATEGIES["margin"].higher_is_more_uncertain is False


def test_entropy_values_in_nats():
    expected = -(0.5 * math.log(0.5) + 0.3 * math.log(0.3) + 0.2 * math.log(0.2))
    assert scores_of("entropy", THREE) == pytest.approx([expected, 0.0, math.log(6)])


def test_ordinal_cost_values():
    # row 0: call NILM, 0.3 one grade away + 0.2 two grades away; uniform: (0+1+...+5)/6
    assert scores_of("ordinal_cost", THREE) == pytest.approx([0.7, 0.0, 2.5])


def test_clinical_cost_values_use_the_project_matrix():
    # row 0: call NILM; truth ASC-US costs 2, LSIL 3; uniform: column NILM summed / 6
    expected_uniform = sum(row[0] for row in CLINICAL_COST) / 6
    assert scores_of("clinical_cost", THREE) == pytest.approx(
        [0.3 * 2 + 0.2 * 3, 0.0, expected_uniform]
    )
    assert expected_uniform == pytest.approx(5.5)


def test_detector_disagreement_values():
    probs = [split("NILM", 0.8, "HSIL", 0.2), split("NILM", 0.1, "LSIL", 0.9),
             one_hot("NILM"), one_hot("NILM"), UNIFORM]
    detector = [0.9, 0.3, 1.0, 0.0, 0.5]
    got = scores_of("detector_disagreement", probs, detector_scores=np.array(detector))
    # s P(NILM) + (1 - s)(1 - P(NILM))
    assert got == pytest.approx([0.9 * 0.8 + 0.1 * 0.2, 0.3 * 0.1 + 0.7 * 0.9, 1.0, 0.0, 0.5])


def test_tta_variance_of_two_disagreeing_one_hots():
    tta = np.array([[one_hot("NILM"), one_hot("HSIL")]])
    got = scores_of("tta_variance", [split("NILM", 0.5, "HSIL", 0.5)], tta_probabilities=tta)
    assert got == pytest.approx([1 / 12])  # two classes with variance 1/4, mean over six


def test_tta_bald_of_two_disagreeing_one_hots_is_ln_two():
    tta = np.array([[one_hot("NILM"), one_hot("HSIL")]])
    got = scores_of("tta_bald", [split("NILM", 0.5, "HSIL", 0.5)], tta_probabilities=tta)
    assert got == pytest.approx([math.log(2)])


@pytest.mark.parametrize("name", ["tta_variance", "tta_bald"])
def test_tta_scores_are_zero_when_every_augmentation_agrees(name):
    rows = [[0.5, 0.3, 0.2, 0.0, 0.0, 0.0], UNIFORM, one_hot("SCC")]
    tta = np.repeat(np.array(rows)[:, None, :], 4, axis=1)
    assert scores_of(name, rows, tta_probabilities=tta) == pytest.approx([0.0, 0.0, 0.0], abs=1e-15)


@pytest.mark.parametrize("name", ["tta_variance", "tta_bald"])
def test_tta_scores_rank_disagreement_above_agreement(name):
    rows = [UNIFORM, UNIFORM]
    tta = np.array([[UNIFORM, UNIFORM], [one_hot("NILM"), one_hot("SCC")]])
    got = scores_of(name, rows, tta_probabilities=tta)
    assert got[1] > got[0]


# --- strategies: directions and rankings ---------------------------------------------------


@pytest.mark.parametrize("name", ["least_confidence", "margin", "entropy"])
def test_uniform_is_most_and_one_hot_least_uncertain(name):
    rng = np.random.default_rng(4)
    probs = rng.dirichlet(np.ones(6), size=8)
    probs[3] = UNIFORM
    probs[6] = one_hot("ASC-H")
    ranking = STRATEGIES[name].select(Predictions(probs), 8)
    assert ranking[0] == 3
    assert ranking[-1] == 6


def test_ordinal_cost_ranks_nilm_hsil_split_above_asch_hsil_split():
    probs = [split("ASC-H", 0.6, "HSIL", 0.4), split("NILM", 0.6, "HSIL", 0.4)]
    assert STRATEGIES["ordinal_cost"].select(Predictions(np.array(probs)), 1).tolist() == [1]
    # entropy cannot tell them apart
    entropy = scores_of("entropy", probs)
    assert entropy[0] == pytest.approx(entropy[1])


def test_clinical_cost_ranks_missed_scc_then_missed_hsil_highest():
    probs = [
        split("HSIL", 0.6, "NILM", 0.4),   # over-call risk: truth NILM called HSIL
        split("LSIL", 0.6, "ASC-US", 0.4),
        split("NILM", 0.6, "HSIL", 0.4),   # called NILM, might be HSIL
        split("NILM", 0.6, "ASC-US", 0.4),
        split("NILM", 0.6, "SCC", 0.4),    # called NILM, might be SCC
        split("ASC-US", 0.6, "LSIL", 0.4),
    ]
    assert STRATEGIES["clinical_cost"].select(Predictions(np.array(probs)), 2).tolist() == [4, 2]


def test_clinical_cost_is_asymmetric_where_ordinal_cost_is_not():
    probs = [split("HSIL", 0.6, "NILM", 0.4), split("NILM", 0.6, "HSIL", 0.4)]
    ordinal = scores_of("ordinal_cost", probs)
    clinical = scores_of("clinical_cost", probs)
    assert ordinal[0] == pytest.approx(ordinal[1])
    assert clinical[1] > clinical[0]


def test_clinical_cost_strategy_takes_another_matrix():
    strategy = clinical_cost_strategy(np.ones((6, 6)) - np.eye(6), name="zero_one")
    got = strategy.score(Predictions(np.array(THREE)))
    assert got == pytest.approx(scores_of("least_confidence", THREE))  # 0-1 cost = 1 - max p


def test_clinical_cost_strategy_rejects_a_wrong_shape():
    with pytest.raises(ValueError, match=r"cost matrix must have shape \(6, 6\)"):
        clinical_cost_strategy(np.ones((5, 5)))


def test_random_is_reproducible_per_seed_and_differs_across_seeds():
    pred = Predictions(np.array([UNIFORM] * 50))
    first = random_strategy(7).score(pred)
    assert np.array_equal(first, random_strategy(7).score(pred))
    assert np.array_equal(first, get_strategy("random", seed=7).score(pred))
    assert not np.array_equal(first, random_strategy(8).score(pred))
    assert ((first >= 0) & (first < 1)).all()


def test_registry_names_match_strategy_names():
    assert {name for name, s in STRATEGIES.items() if s.name == name} == set(STRATEGIES)
    assert {"least_confidence", "margin", "entropy", "ordinal_cost", "clinical_cost",
            "detector_disagreement", "tta_variance", "tta_bald", "random"} <= set(STRATEGIES)


def test_unknown_strategy_error_lists_known_names():
    with pytest.raises(UnknownStrategy, match=r"'confusion'.*known: clinical_cost, detector_disagreement"):
        get_strategy("confusion")


def test_seed_is_refused_for_a_deterministic_strategy():
    with pytest.raises(ValueError, match="takes no seed"):
        get_strategy("entropy", seed=1)


@pytest.mark.parametrize(
    ("name", "field"),
    [("detector_disagreement", "detector_scores"), ("tta_variance", "tta_probabilities"),
     ("tta_bald", "tta_probabilities")],
)
def test_strategy_needing_a_missing_field_says_which(name, field):
    with pytest.raises(ValueError, match=f"strategy '{name}' needs {field}"):
        STRATEGIES[name].score(Predictions(np.array([UNIFORM])))


def test_empty_predictions_give_no_scores_and_select_refuses_them():
    pred = Predictions(np.empty((0, 6)))
    assert STRATEGIES["entropy"].score(pred).shape == (0,)
    with pytest.raises(ValueError, match="the pool is empty"):
        STRATEGIES["entropy"].select(pred, 1)


# --- where each strategy may run -----------------------------------------------------------


def test_rounds_offer_every_strategy_their_stored_predictions_can_score():
    assert ROUND_STRATEGIES == ("least_confidence", "margin", "entropy", "ordinal_cost", "clinical_cost",
                                "detector_disagreement", "random")
    assert NOT_FOR_ROUNDS == ("tta_variance", "tta_bald")


def test_a_round_refuses_a_test_time_augmentation_strategy_with_the_reason():
    with pytest.raises(StrategyRefused, match="tta_bald needs test-time-augmented predictions, which "
                                              "prediction jobs do not store"):
        round_strategy("tta_bald")
    with pytest.raises(UnknownStrategy, match="unknown uncertainty strategy 'entropie'"):
        round_strategy("entropie")


def test_a_round_seeds_only_the_random_strategy():
    assert round_strategy("entropy") is STRATEGIES["entropy"]
    pred = Predictions(np.array([UNIFORM] * 5))
    assert np.array_equal(round_strategy("random", seed=3).score(pred), random_strategy(3).score(pred))


def test_the_simulation_runs_every_strategy_but_the_detectors():
    assert "detector_disagreement" not in SIMULATION_STRATEGIES
    assert set(SIMULATION_STRATEGIES) | {"detector_disagreement"} == set(STRATEGIES)
    assert simulation_strategy("tta_bald+diverse") == (STRATEGIES["tta_bald"], True)
    with pytest.raises(StrategyRefused, match="needs detector scores"):
        simulation_strategy("detector_disagreement+diverse")


def test_a_place_must_say_whether_it_provides_each_optional_field():
    with pytest.raises(ValueError, match="say whether it provides embeddings, tta_probabilities"):
        Place("somewhere", frozenset({"detector_scores"}), {})


def test_flags_follow_what_a_strategy_reads():
    assert STRATEGIES["tta_bald"].needs_tta and not STRATEGIES["tta_bald"].needs_detector
    assert STRATEGIES["detector_disagreement"].needs_detector
    assert STRATEGIES["margin"].direction == "lower is more uncertain"
    assert STRATEGIES["entropy"].label == "entropy: Shannon entropy in nats"


# --- purity --------------------------------------------------------------------------------


def test_strategies_module_imports_neither_django_nor_tensorflow():
    code = (
        "import sys, inference.strategies; "
        "sys.exit(any(m.split('.')[0] in ('django', 'tensorflow', 'keras') for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
