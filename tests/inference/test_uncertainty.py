"""Active-learning selection and diversity (inference/uncertainty.py): predictions, select,
k-center greedy, image aggregation. The strategies' scores are in test_strategies.py.

Hand-computed values on tiny arrays; k-center greedy is checked against a brute-force
reference that recomputes every distance.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from inference.uncertainty import (
    Predictions,
    aggregate_to_images,
    k_center_greedy,
    select,
    select_diverse,
)
from tests.helpers import ROOT
from tests.inference.conftest import UNIFORM, one_hot

# --- Predictions validation ----------------------------------------------------------------


def test_predictions_reject_wrong_number_of_classes():
    with pytest.raises(ValueError, match=r"probabilities must have shape \(N, 6\), got \(2, 5\)"):
        Predictions(np.full((2, 5), 0.2))


def test_predictions_reject_one_dimensional_probabilities():
    with pytest.raises(ValueError, match="probabilities must have shape"):
        Predictions(np.array(UNIFORM))


def test_predictions_name_the_first_row_that_does_not_sum_to_one():
    rows = [UNIFORM, UNIFORM, [0.5, 0.2, 0.0, 0.0, 0.0, 0.0], [0.9, 0.0, 0.0, 0.0, 0.0, 0.0]]
    with pytest.raises(ValueError, match=r"probabilities: rows not summing to 1 \(tolerance 0.001\): 2 of 4; the first is row 2, summing to 0.7"):
        Predictions(np.array(rows))


def test_predictions_name_the_first_non_finite_row():
    rows = np.array([UNIFORM, UNIFORM, UNIFORM])
    rows[1, 3] = np.nan
    with pytest.raises(ValueError, match=r"probabilities: non-finite values \(NaN or inf\) in 1 of 3 rows; the first is row 1"):
        Predictions(rows)


def test_predictions_reject_a_negative_probability():
    with pytest.raises(ValueError, match=r"values outside \[0, 1\] in 1 of 1 rows; the first is row 0"):
        Predictions(np.array([[1.1, -0.1, 0.0, 0.0, 0.0, 0.0]]))


def test_predictions_accept_rounded_probabilities_within_tolerance():
    rounded = [0.1667, 0.1667, 0.1667, 0.1667, 0.1667, 0.1667]  # sums to 1.0002
    assert len(Predictions(np.array([rounded]))) == 1


def test_predictions_reject_detector_scores_of_the_wrong_length():
    with pytest.raises(ValueError, match=r"detector_scores must have shape \(2,\), got \(3,\)"):
        Predictions(np.array([UNIFORM, UNIFORM]), detector_scores=[0.1, 0.2, 0.3])


def test_predictions_reject_detector_scores_outside_zero_one():
    with pytest.raises(ValueError, match=r"detector_scores: not finite or outside \[0, 1\] in 1 of 2 rows; the first is row 1: 1.5"):
        Predictions(np.array([UNIFORM, UNIFORM]), detector_scores=[0.1, 1.5])


def test_predictions_reject_embeddings_with_a_nan_row():
    emb = np.zeros((3, 4))
    emb[2, 0] = np.inf
    with pytest.raises(ValueError, match=r"embeddings: non-finite values \(NaN or inf\) in 1 of 3 rows; the first is row 2"):
        Predictions(np.array([UNIFORM] * 3), embeddings=emb)


def test_predictions_reject_embeddings_with_another_row_count():
    with pytest.raises(ValueError, match=r"embeddings must have shape \(3, D\)"):
        Predictions(np.array([UNIFORM] * 3), embeddings=np.zeros((2, 4)))


def test_predictions_reject_tta_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"tta_probabilities must have shape \(2, T, 6\)"):
        Predictions(np.array([UNIFORM] * 2), tta_probabilities=np.full((2, 3, 5), 0.2))


def test_predictions_reject_a_single_augmentation():
    with pytest.raises(ValueError, match="at least 2 augmentations"):
        Predictions(np.array([UNIFORM] * 2), tta_probabilities=np.full((2, 1, 6), 1 / 6))


def test_predictions_name_row_and_augmentation_of_a_bad_tta_distribution():
    tta = np.full((2, 3, 6), 1 / 6)
    tta[1, 2, 0] = 0.5
    with pytest.raises(ValueError, match="the first is row 1, augmentation 2"):
        Predictions(np.array([UNIFORM] * 2), tta_probabilities=tta)


def test_predictions_are_read_only_but_leave_the_callers_array_writable():
    probs = np.array([UNIFORM, one_hot("LSIL")])
    pred = Predictions(probs)
    with pytest.raises(ValueError, match="read-only"):
        pred.probabilities[0, 0] = 1.0
    probs[0, 0] = 0.5  # the caller's own array is untouched by the read-only view
    assert probs[0, 0] == 0.5


def test_predictions_keep_float32_embeddings_as_float32():
    pred = Predictions(np.array([UNIFORM]), embeddings=np.ones((1, 3), dtype=np.float32))
    assert pred.embeddings.dtype == np.float32



# --- select --------------------------------------------------------------------------------


def test_select_returns_the_top_k_highest_first():
    assert select([0.1, 0.9, 0.5, 0.7], 2).tolist() == [1, 3]


def test_select_ascending_returns_the_lowest_first():
    assert select([0.1, 0.9, 0.5, 0.7], 2, descending=False).tolist() == [0, 2]


def test_select_breaks_ties_by_lower_index():
    assert select([0.5, 0.9, 0.5, 0.5, 0.1], 3).tolist() == [1, 0, 2]
    assert select([0.5, 0.9, 0.5, 0.5, 0.1], 3, descending=False).tolist() == [4, 0, 2]


def test_select_treats_floating_point_noise_as_a_tie():
    assert 0.1 + 0.2 > 0.3
    assert select([0.3, 0.1 + 0.2], 2).tolist() == [0, 1]
    assert select([0.3, 0.1 + 0.2], 2, tie_decimals=None).tolist() == [1, 0]


def test_select_random_tie_break_is_seeded_and_keeps_score_order():
    scores = [0.9] + [0.5] * 10 + [0.1]
    a = select(scores, 12, tie_break="random", rng=1)
    assert np.array_equal(a, select(scores, 12, tie_break="random", rng=1))
    assert np.array_equal(a, select(scores, 12, tie_break="random", rng=np.random.default_rng(1)))
    assert not np.array_equal(a, select(scores, 12, tie_break="random", rng=2))
    assert a[0] == 0 and a[-1] == 11
    assert sorted(a[1:-1].tolist()) == list(range(1, 11))
    assert a[1:-1].tolist() != list(range(1, 11))


def test_select_with_k_above_the_pool_returns_everything_ranked():
    assert select([0.2, 0.8, 0.5], 10).tolist() == [1, 2, 0]


@pytest.mark.parametrize("k", [0, -1])
def test_select_rejects_k_below_one(k):
    with pytest.raises(ValueError, match="k must be at least 1"):
        select([0.1, 0.2], k)


def test_select_rejects_a_fractional_k():
    with pytest.raises(TypeError, match="k must be an integer"):
        select([0.1, 0.2], 1.5)


def test_select_names_how_many_scores_are_not_finite_and_the_first():
    with pytest.raises(ValueError, match=r"non-finite scores \(NaN or inf\): 2 of 4; the first at index 1"):
        select([0.1, np.nan, 0.3, np.inf], 1)


def test_select_refuses_infinity():
    with pytest.raises(ValueError, match="the first at index 0"):
        select([-np.inf, 0.3], 1)


def test_select_refuses_an_empty_pool():
    with pytest.raises(ValueError, match="the pool is empty"):
        select([], 1)


def test_select_refuses_two_dimensional_scores():
    with pytest.raises(ValueError, match="one-dimensional"):
        select([[0.1, 0.2]], 1)


def test_select_rejects_an_unknown_tie_break():
    with pytest.raises(ValueError, match="tie_break must be one of index, random"):
        select([0.1], 1, tie_break="first")


# --- k-center greedy -----------------------------------------------------------------------


def brute_force_k_center(x, k, *, scores=None, already=()):
    """Reference: recompute every distance to every centre at every step."""
    x = np.asarray(x, dtype=np.float64)
    centres = list(already)
    picks = []
    for _ in range(min(k, len(x) - len(centres))):
        if not centres:
            if scores is not None:
                pick = int(np.argmax(scores))
            else:
                pick = int(np.argmax(np.linalg.norm(x - x.mean(axis=0), axis=1)))
        else:
            best, pick = -1.0, -1
            for i in range(len(x)):
                if i in centres:
                    continue
                d = min(math.dist(x[i], x[c]) for c in centres)
                if d > best:
                    best, pick = d, i
        picks.append(pick)
        centres.append(pick)
    return picks


@pytest.mark.parametrize("seed", range(6))
def test_k_center_greedy_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((40, 3)) * rng.uniform(0.5, 5) + rng.uniform(-20, 20)
    scores = rng.random(40) if seed % 2 else None
    already = [int(i) for i in rng.choice(40, size=seed % 3, replace=False)]
    got = k_center_greedy(x, 8, candidates_scores=scores, already_selected=already)
    assert got.tolist() == brute_force_k_center(x, 8, scores=scores, already=already)


@pytest.mark.parametrize("seed", range(4))
def test_k_center_greedy_skipping_far_points_gives_the_brute_force_picks(seed):
    # Tight, well-separated clusters and many picks: most points are skipped by the
    # triangle-inequality bound once every cluster has a centre; the picks must not change.
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((12, 6)) * 50
    x = np.concatenate([c + rng.standard_normal((25, 6)) * rng.uniform(0.2, 2) for c in centres])
    scores = rng.random(len(x)) if seed % 2 else None
    already = [int(i) for i in rng.choice(len(x), size=seed, replace=False)]
    got = k_center_greedy(x.astype(np.float32) if seed == 3 else x, 60, candidates_scores=scores,
                          already_selected=already)
    assert got.tolist() == brute_force_k_center(x, 60, scores=scores, already=already)


def planted(n_clusters=5, per=20, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim)) * 100
    x = np.concatenate([c + rng.standard_normal((per, dim)) for c in centres])
    return x, np.repeat(np.arange(n_clusters), per)


@pytest.mark.parametrize("with_scores", [False, True])
def test_k_center_greedy_picks_one_point_per_planted_cluster(with_scores):
    x, cluster = planted()
    scores = np.random.default_rng(1).random(len(x)) if with_scores else None
    picks = k_center_greedy(x, 5, candidates_scores=scores)
    assert sorted(cluster[picks].tolist()) == [0, 1, 2, 3, 4]


def test_k_center_greedy_starts_from_the_best_scored_candidate():
    x, _ = planted()
    scores = np.zeros(len(x))
    scores[37] = 1.0
    assert k_center_greedy(x, 1, candidates_scores=scores).tolist() == [37]
    assert k_center_greedy(x, 1, candidates_scores=-scores, descending=False).tolist() == [37]


def test_k_center_greedy_without_scores_starts_farthest_from_the_mean():
    x = np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 9.0]])
    assert k_center_greedy(x, 1).tolist() == [3]


def test_k_center_greedy_keeps_away_from_already_selected_clusters():
    x, cluster = planted()
    already = [0, 20, 40]  # one point in each of clusters 0, 1, 2
    picks = k_center_greedy(x, 2, already_selected=already)
    assert sorted(cluster[picks].tolist()) == [3, 4]
    assert not set(picks.tolist()) & set(already)


def test_k_center_greedy_with_k_above_the_pool_returns_every_point_once():
    x = np.zeros((4, 2))  # all duplicates: distance ties everywhere
    assert k_center_greedy(x, 10, already_selected=[1]).tolist() == [0, 2, 3]


def test_k_center_greedy_breaks_distance_ties_by_score():
    x = np.zeros((4, 2))
    assert k_center_greedy(x, 4, candidates_scores=[0.1, 0.4, 0.3, 0.2]).tolist() == [1, 2, 3, 0]


def test_k_center_greedy_float32_matches_float64_on_planted_clusters():
    x, _ = planted(n_clusters=8, per=50, dim=64, seed=3)
    assert np.array_equal(
        k_center_greedy(x.astype(np.float32), 12), k_center_greedy(x, 12)
    )


def test_k_center_greedy_refuses_an_empty_pool():
    with pytest.raises(ValueError, match="the pool is empty"):
        k_center_greedy(np.empty((0, 4)), 1)


def test_k_center_greedy_names_the_first_non_finite_embedding():
    x = np.zeros((5, 2))
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"embeddings: non-finite values \(NaN or inf\) in 1 of 5 rows; the first is row 3"):
        k_center_greedy(x, 1)


def test_k_center_greedy_rejects_already_selected_out_of_range():
    with pytest.raises(ValueError, match=r"already_selected holds indices outside 0..2: \[5\]"):
        k_center_greedy(np.zeros((3, 2)), 1, already_selected=[5])


def test_k_center_greedy_rejects_scores_of_another_length():
    with pytest.raises(ValueError, match="one score per embedding"):
        k_center_greedy(np.zeros((3, 2)), 1, candidates_scores=[0.1, 0.2])


# --- select_diverse ------------------------------------------------------------------------


def pool_led_by_one_cluster():
    """Cluster 0 holds the 20 highest scores; the others score a little lower."""
    x, cluster = planted()
    scores = np.where(cluster == 0, 0.9, 0.5) + np.random.default_rng(2).random(len(x)) * 0.01
    return scores, x, cluster


def test_select_diverse_picks_from_different_clusters_where_top_k_does_not():
    scores, x, cluster = pool_led_by_one_cluster()
    assert set(cluster[select(scores, 3)].tolist()) == {0}
    picks = select_diverse(scores, x, 3, pool_factor=100)
    assert len(set(cluster[picks].tolist())) == 3
    assert picks[0] == select(scores, 1)[0]  # starts from the most uncertain


def test_select_diverse_with_pool_factor_one_is_plain_top_k():
    scores, x, _ = pool_led_by_one_cluster()
    assert sorted(select_diverse(scores, x, 4, pool_factor=1).tolist()) == sorted(
        select(scores, 4).tolist()
    )


def test_select_diverse_follows_an_ascending_strategy():
    scores, x, cluster = pool_led_by_one_cluster()
    picks = select_diverse(-scores, x, 3, descending=False, pool_factor=100)
    assert picks[0] == select(scores, 1)[0]
    assert len(set(cluster[picks].tolist())) == 3


def test_select_diverse_leaves_out_and_keeps_away_from_already_selected():
    scores, x, cluster = pool_led_by_one_cluster()
    already = np.flatnonzero(cluster <= 2)
    picks = select_diverse(scores, x, 2, pool_factor=100, already_selected=already)
    assert sorted(cluster[picks].tolist()) == [3, 4]


def test_select_diverse_rejects_a_pool_factor_below_one():
    scores, x, _ = pool_led_by_one_cluster()
    with pytest.raises(ValueError, match="pool_factor must be a finite number >= 1"):
        select_diverse(scores, x, 2, pool_factor=0.5)


def test_select_diverse_rejects_embeddings_of_another_length():
    with pytest.raises(ValueError, match="embeddings has 2 rows for 3 scores"):
        select_diverse([0.1, 0.2, 0.3], np.zeros((2, 4)), 1)


def test_select_diverse_refuses_nan_scores():
    with pytest.raises(ValueError, match=r"non-finite scores \(NaN or inf\): 1 of 2"):
        select_diverse([0.1, np.nan], np.zeros((2, 4)), 1)


# --- image aggregation ---------------------------------------------------------------------

CLUSTER_SCORES = [0.2, 0.9, 0.4, 0.1, 0.6, 0.3, 0.5]
CLUSTER_IMAGES = ["b", "a", "b", "c", "b", "a", "b"]


def test_aggregate_max_takes_each_images_most_uncertain_cluster():
    ids, scores = aggregate_to_images(CLUSTER_SCORES, CLUSTER_IMAGES)
    assert ids.tolist() == ["a", "b", "c"]
    assert scores.tolist() == pytest.approx([0.9, 0.6, 0.1])


def test_aggregate_mean():
    _, scores = aggregate_to_images(CLUSTER_SCORES, CLUSTER_IMAGES, how="mean")
    assert scores.tolist() == pytest.approx([0.6, 1.7 / 4, 0.1])


def test_aggregate_top_m_sum():
    _, scores = aggregate_to_images(CLUSTER_SCORES, CLUSTER_IMAGES, how="top_m_sum", top_m=2)
    assert scores.tolist() == pytest.approx([1.2, 1.1, 0.1])


def test_aggregate_follows_an_ascending_strategy():
    _, scores = aggregate_to_images(CLUSTER_SCORES, CLUSTER_IMAGES, descending=False)
    assert scores.tolist() == pytest.approx([0.3, 0.2, 0.1])
    _, sums = aggregate_to_images(
        CLUSTER_SCORES, CLUSTER_IMAGES, how="top_m_sum", top_m=2, descending=False
    )
    assert sums.tolist() == pytest.approx([1.2, 0.6, 0.1])


def test_aggregate_rejects_image_ids_of_another_length():
    with pytest.raises(ValueError, match="one id per score"):
        aggregate_to_images([0.1, 0.2], ["a"])


def test_aggregate_rejects_an_unknown_method():
    with pytest.raises(ValueError, match="how must be one of max, mean, top_m_sum"):
        aggregate_to_images([0.1], ["a"], how="median")


# --- purity --------------------------------------------------------------------------------


def test_uncertainty_module_imports_neither_django_nor_tensorflow():
    code = (
        "import sys, inference.uncertainty; "
        "sys.exit(any(m.split('.')[0] in ('django', 'tensorflow', 'keras') for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
