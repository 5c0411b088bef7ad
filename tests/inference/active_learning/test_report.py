"""Simulated active learning: the summary per round and the label efficiency against random."""

from __future__ import annotations

import numpy as np
import pytest

from inference.active_learning import (
    Efficiency,
    format_efficiency,
    format_table,
    label_efficiency,
    labels_to_reach,
    summarize,
)
from tests.inference.active_learning.conftest import make_clusters, run


def summary_of(curves: dict[str, list[float]], labels=(10, 20, 30, 40)):
    return {name: {"labels": list(labels), "mean": list(v), "sd": [0.0] * len(v)} for name, v in curves.items()}


def test_efficiency_interpolates_the_labels_needed():
    summary = summary_of({"random": [0.2, 0.3, 0.4, 0.5], "entropy": [0.2, 0.45, 0.55, 0.6],
                          "margin": [0.2, 0.3, 0.5, 0.5]})
    eff = label_efficiency(summary)
    assert eff.target == 0.5 and eff.baseline_labels == 40
    assert eff.needed == {"entropy": pytest.approx(25.0), "margin": pytest.approx(30.0)}
    assert eff.best == "entropy" and eff.ratio == pytest.approx(25 / 40) and not eff.goal_met
    line = format_efficiency(eff)
    assert "best entropy reaches it at 25 labels = 0.62 of random's" in line and "not met" in line


def test_efficiency_meets_the_goal_at_half_the_labels():
    eff = label_efficiency(summary_of({"random": [0.2, 0.3, 0.4, 0.5], "entropy": [0.3, 0.5, 0.6, 0.7]}))
    assert eff.needed["entropy"] == 20.0 and eff.ratio == 0.5 and eff.goal_met


def test_efficiency_says_not_reached():
    eff = label_efficiency(summary_of({"random": [0.2, 0.3, 0.4, 0.5], "entropy": [0.2, 0.3, 0.4, 0.49]}))
    assert eff == Efficiency(target=0.5, baseline_labels=40, start=0.2, needed={"entropy": None}, best=None,
                             ratio=None)
    assert "not reached by any other strategy" in format_efficiency(eff)
    assert label_efficiency(summary_of({"entropy": [0.1, 0.2, 0.3, 0.4]})) is None  # no random


def test_efficiency_is_undefined_when_random_does_not_rise():
    eff = label_efficiency(summary_of({"random": [0.3, 0.25, 0.3, 0.28], "entropy": [0.3, 0.2, 0.2, 0.2]}))
    assert not eff.defined and eff.best is None and eff.ratio is None and not eff.goal_met
    assert eff.needed == {"entropy": 10.0}  # "reached" at the start: the reason it is undefined
    line = format_efficiency(eff)
    assert "undefined: that is not above the 30.0 every strategy starts from" in line
    assert "not assessable" in line and "met" not in line
    assert label_efficiency(summary_of({"random": [0.3, 0.31], "margin": [0.3, 0.2]}, labels=(5, 10))).defined


def test_efficiency_seed_by_seed_pairs_each_seed_with_its_own_random_curve():
    from inference.active_learning import Curve, SimulationResult

    def curves(*values):
        return [Curve(seed=i, initial=[], labels=[10, 20, 30, 40], macro_f1=list(v)) for i, v in enumerate(values)]

    result = SimulationResult(
        strategies=["random", "entropy"], seeds=[0, 1, 2], rounds=3, batch=10, initial=10, test_fraction=0.25,
        curves={"random": curves([0.2, 0.3, 0.3, 0.4], [0.3, 0.5, 0.6, 0.7], [0.5, 0.4, 0.4, 0.45]),
                "entropy": curves([0.2, 0.6, 0.6, 0.6], [0.3, 0.5, 0.6, 0.6], [0.5, 0.7, 0.7, 0.7])},
        splits=[])
    eff = label_efficiency(summarize(result), result=result)
    assert eff.best == "entropy"
    # seed 0: 0.4 reached at 15 of 40 labels; seed 1: 0.7 never reached; seed 2: random does not rise
    assert eff.per_seed == [pytest.approx(0.375), None, None] and eff.seeds_meeting_goal == 1
    assert "seed by seed against that seed's random: 0.38, -, - (1 of 3 seeds <= 0.5)" in format_efficiency(eff)
    assert eff.to_json()["seeds_meeting_goal"] == 1
    assert label_efficiency(summarize(result)).per_seed is None  # means only without the result


def test_labels_to_reach_starts_at_the_first_point_and_needs_a_crossing():
    assert labels_to_reach([10, 20], [0.6, 0.7], 0.5) == 10.0
    assert labels_to_reach([10, 20, 30], [0.1, 0.3, 0.2], 0.2) == 15.0
    assert labels_to_reach([10, 20], [0.1, 0.3], 0.31) is None


def test_summary_and_table_show_mean_and_sample_sd_per_round():
    result, _ = run(make_clusters(), ["random", "entropy"], seeds=(0, 1, 2), rounds=2)
    summary = summarize(result)
    f1 = np.asarray([c.macro_f1 for c in result.curves["entropy"]])
    assert summary["entropy"]["labels"] == [4, 9, 14]
    assert np.allclose(summary["entropy"]["mean"], f1.mean(axis=0))
    assert np.allclose(summary["entropy"]["sd"], f1.std(axis=0, ddof=1))
    table = format_table(summary_of({"random": [0.2, 0.35], "entropy": [0.2, 0.4]}, labels=(10, 20)))
    assert table.splitlines() == ["| labels | random | entropy |", "|---|---|---|",
                                  "| 10 | 20.0 +- 0.0 | 20.0 +- 0.0 |", "| 20 | 35.0 +- 0.0 | 40.0 +- 0.0 |"]
