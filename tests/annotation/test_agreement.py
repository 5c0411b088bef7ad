"""Agreement statistics (annotation/agreement.py) against the reference implementations.

Each statistic is compared on random data (several seeds, sizes and missing patterns) with the
library the field cites: statsmodels (Fleiss), krippendorff (alpha), scikit-learn (Cohen) and
crowd-kit (Dawid-Skene), to 1e-9; plus hand-worked examples, the degenerate cases and
behaviour tests (ordinal credit for adjacent grades, recovery of known rater quality).
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import krippendorff
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa

from annotation.agreement import (
    DS_EPS,
    agreement_with_consensus,
    category_counts,
    confusion_against,
    dawid_skene,
    fleiss_kappa,
    krippendorff_alpha,
    pairwise_cohen,
    reliability_data,
    weighted_cohen_kappa,
)

ROOT = Path(__file__).resolve().parents[2]
TOL = 1e-9
K = 6
SEEDS = range(8)


def noisy_labels(seed: int, n_items: int, n_raters: int, *, accuracy=0.7, missing=0.0, k=K):
    """items x raters: each rater gives the true grade with ``accuracy``, else a random one."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, n_items)
    labels = np.where(
        rng.random((n_items, n_raters)) < accuracy,
        truth[:, None],
        rng.integers(0, k, (n_items, n_raters)),
    )
    labels[rng.random(labels.shape) < missing] = -1
    return labels


def quietly(fn, *args, **kwargs):
    """Call a reference that warns on its degenerate cases (0/0)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def test_module_does_not_import_django():
    code = (
        "import sys, annotation.agreement; "
        "sys.exit(any(m == 'django' or m.startswith('django.') for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


# --- Fleiss -----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n_items,n_raters", [(5, 2), (30, 3), (200, 7)])
def test_fleiss_kappa_equals_statsmodels(seed, n_items, n_raters):
    counts = category_counts(noisy_labels(seed, n_items, n_raters, accuracy=0.5))
    assert fleiss_kappa(counts) == pytest.approx(sm_fleiss_kappa(counts, method="fleiss"), abs=TOL)


def test_fleiss_kappa_of_fleiss_1971_worked_example():
    # the 10 subjects x 5 categories, 14 raters each, example (kappa = 0.2099...)
    table = np.array(
        [
            [0, 0, 0, 0, 14],
            [0, 2, 6, 4, 2],
            [0, 0, 3, 5, 6],
            [0, 3, 9, 2, 0],
            [2, 2, 8, 1, 1],
            [7, 7, 0, 0, 0],
            [3, 2, 6, 3, 0],
            [2, 5, 3, 2, 2],
            [6, 5, 2, 1, 0],
            [0, 2, 2, 3, 7],
        ]
    )
    p_bar = (((table**2).sum(axis=1) - 14) / (14 * 13)).mean()
    p_e = ((table.sum(axis=0) / 140) ** 2).sum()
    assert fleiss_kappa(table) == pytest.approx((p_bar - p_e) / (1 - p_e), abs=TOL)
    assert fleiss_kappa(table) == pytest.approx(0.20993, abs=1e-5)


def test_fleiss_kappa_is_one_on_perfect_agreement():
    labels = np.repeat(np.array([[0], [2], [5], [2]]), 4, axis=1)
    assert fleiss_kappa(category_counts(labels)) == pytest.approx(1.0, abs=TOL)


def test_fleiss_kappa_is_nan_like_statsmodels_when_everyone_uses_one_category():
    counts = category_counts(np.zeros((5, 3), dtype=int))
    assert np.isnan(fleiss_kappa(counts))
    assert np.isnan(quietly(sm_fleiss_kappa, counts, method="fleiss"))


def test_fleiss_kappa_refuses_missing_ratings():
    labels = noisy_labels(0, 10, 3)
    labels[0, 0] = -1
    with pytest.raises(ValueError, match="same number of raters"):
        fleiss_kappa(category_counts(labels))


# --- Krippendorff -----------------------------------------------------------------------------


def random_reliability(seed: int, n_raters: int, n_items: int, missing: float, k=K) -> np.ndarray:
    data = reliability_data(
        noisy_labels(seed, n_items, n_raters, accuracy=0.6, missing=missing, k=k)
    )
    if seed % 3 == 1 and n_raters > 2:
        data[0, :] = np.nan  # a rater with no items
    if seed % 3 == 2 and n_raters > 2:
        data[:, : n_items // 4] = np.nan  # items nobody rated
        data[1:, n_items // 4 : n_items // 3] = np.nan  # items only one rater rated (unpairable)
    return data


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval"])
@pytest.mark.parametrize("n_raters,n_items,missing", [(2, 10, 0.0), (3, 40, 0.3), (6, 150, 0.5)])
def test_krippendorff_alpha_equals_reference_with_and_without_domain(
    seed, level, n_raters, n_items, missing
):
    data = random_reliability(seed, n_raters, n_items, missing)
    expected = krippendorff.alpha(reliability_data=data, level_of_measurement=level)
    with_domain = krippendorff.alpha(
        reliability_data=data, level_of_measurement=level, value_domain=range(K)
    )
    assert krippendorff_alpha(data, level) == pytest.approx(expected, abs=TOL)
    assert krippendorff_alpha(data, level, n_categories=K) == pytest.approx(with_domain, abs=TOL)


@pytest.mark.parametrize("seed", SEEDS)
def test_unused_grades_in_the_domain_do_not_change_ordinal_alpha(seed):
    # only grades 1, 2 and 4 used: the reference gives the same ordinal alpha for the present
    # values and for range(6), because an unused grade has no pairable values
    rng = np.random.default_rng(seed)
    data = rng.choice([1.0, 2.0, 4.0], size=(4, 30))
    data[rng.random(data.shape) < 0.3] = np.nan
    present = krippendorff_alpha(data, "ordinal")
    assert krippendorff_alpha(data, "ordinal", n_categories=K) == pytest.approx(present, abs=TOL)
    assert present == pytest.approx(
        krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal"), abs=TOL
    )


def test_krippendorff_alpha_hand_worked_two_raters_three_items():
    # units (0,0), (0,1), (1,1): o = [[2,1],[1,2]], n = (3,3), e = [[6,9],[9,6]]/5
    # alpha = 1 - D_o / D_e = 1 - 2 / (18/5) = 4/9 at every level (one distance only)
    data = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    for level in ("nominal", "ordinal", "interval"):
        assert krippendorff_alpha(data, level) == pytest.approx(4 / 9, abs=TOL)


def test_krippendorff_alpha_matches_the_references_documented_example():
    data = [
        [np.nan, np.nan, np.nan, np.nan, np.nan, 3, 4, 1, 2, 1, 1, 3, 3, np.nan, 3],
        [1, np.nan, 2, 1, 3, 3, 4, 3, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan],
        [np.nan, np.nan, 2, 1, 3, 4, 4, np.nan, 2, 1, 1, 3, 3, np.nan, 4],
    ]
    assert krippendorff_alpha(data, "nominal") == pytest.approx(0.691358, abs=1e-6)
    assert krippendorff_alpha(data, "interval") == pytest.approx(0.810845, abs=1e-6)


def test_ordinal_alpha_exceeds_nominal_when_raters_disagree_by_one_grade():
    rng = np.random.default_rng(7)
    truth = rng.integers(0, K, 80)
    shift = rng.choice([-1, 0, 0, 0, 1], size=(3, 80))
    data = np.clip(truth[None, :] + shift, 0, K - 1).astype(float)
    ordinal = krippendorff_alpha(data, "ordinal", n_categories=K)
    nominal = krippendorff_alpha(data, "nominal", n_categories=K)
    assert ordinal > nominal + 0.2


def test_krippendorff_alpha_is_one_on_perfect_agreement():
    data = np.array([[0, 1, 3, 5, 2], [0, 1, 3, 5, 2], [0, np.nan, 3, 5, 2]], dtype=float)
    for level in ("nominal", "ordinal", "interval"):
        assert krippendorff_alpha(data, level) == pytest.approx(1.0, abs=TOL)


def test_alpha_with_one_category_everywhere_is_nan_over_the_bethesda_domain_like_the_reference():
    data = np.full((3, 5), 2.0)
    assert np.isnan(krippendorff_alpha(data, "ordinal", n_categories=K))
    assert np.isnan(
        quietly(
            krippendorff.alpha,
            reliability_data=data,
            level_of_measurement="ordinal",
            value_domain=range(K),
        )
    )


def test_alpha_with_one_category_everywhere_and_no_domain_raises_like_the_reference():
    data = np.full((3, 5), 2.0)
    with pytest.raises(ValueError, match="more than one value"):
        krippendorff_alpha(data, "ordinal")
    with pytest.raises(ValueError, match="more than one value"):
        krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal")


def test_alpha_needs_an_item_rated_twice():
    data = np.array([[0, np.nan, 2], [np.nan, 1, np.nan]])
    with pytest.raises(ValueError, match="at least two coders"):
        krippendorff_alpha(data, "nominal", n_categories=K)


def test_a_rater_with_no_items_does_not_change_alpha():
    data = random_reliability(0, 3, 40, 0.2)
    padded = np.vstack([data, np.full((1, 40), np.nan)])
    assert krippendorff_alpha(padded) == pytest.approx(krippendorff_alpha(data), abs=TOL)


def test_alpha_refuses_values_outside_the_domain():
    with pytest.raises(ValueError, match="outside"):
        krippendorff_alpha(np.array([[0.0, 6.0], [0.0, 6.0]]), n_categories=K)


# --- Cohen ------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("weights", ["quadratic", "linear", None])
@pytest.mark.parametrize("n_items,missing", [(6, 0.0), (50, 0.2), (400, 0.4)])
def test_weighted_cohen_kappa_equals_sklearn(seed, weights, n_items, missing):
    labels = noisy_labels(seed, n_items, 2, accuracy=0.6, missing=missing)
    a, b = labels[:, 0], labels[:, 1]
    expected = quietly(cohen_kappa_score, a, b, weights=weights, labels=range(K))
    ours = weighted_cohen_kappa(a, b, weights=weights, n_categories=K)
    assert ours == pytest.approx(expected, abs=TOL, nan_ok=True)


def test_unweighted_kappa_hand_worked():
    # p_o = 3/4; marginals (1/2, 1/2) and (1/4, 3/4) -> p_e = 1/2; kappa = (3/4 - 1/2) / (1/2)
    assert weighted_cohen_kappa([0, 0, 1, 1], [0, 1, 1, 1], weights=None) == pytest.approx(
        0.5, abs=TOL
    )


def test_quadratic_kappa_gives_partial_credit_for_adjacent_grades():
    a = [0, 1, 2, 3, 4, 5] * 5
    near = [1, 2, 3, 4, 5, 4] * 5
    assert weighted_cohen_kappa(a, near, "quadratic") > 0.5 > weighted_cohen_kappa(a, near, None)


def test_cohen_kappa_is_one_on_perfect_agreement():
    assert weighted_cohen_kappa([0, 3, 5, 2], [0, 3, 5, 2]) == pytest.approx(1.0, abs=TOL)


def test_cohen_kappa_is_nan_like_sklearn_when_both_use_one_category():
    assert np.isnan(weighted_cohen_kappa([2, 2, 2], [2, 2, 2]))
    assert np.isnan(
        quietly(cohen_kappa_score, [2, 2, 2], [2, 2, 2], weights="quadratic", labels=range(K))
    )


def test_cohen_kappa_without_shared_items_is_nan():
    assert np.isnan(weighted_cohen_kappa([0, -1], [-1, 3]))


# --- Dawid-Skene against crowd-kit ------------------------------------------------------------


def to_crowdkit(labels: np.ndarray) -> pd.DataFrame:
    items, raters = np.nonzero(labels != -1)
    return pd.DataFrame({"task": items, "worker": raters, "label": labels[items, raters]})


def fit_crowdkit(labels: np.ndarray, n_iter: int):
    """crowd-kit's DawidSkene fitted on the same labels (skips only these tests if absent)."""
    aggregation = pytest.importorskip("crowdkit.aggregation")
    return quietly(aggregation.DawidSkene(n_iter=n_iter).fit, to_crowdkit(labels))


DS_CASES = [
    # (n_items, n_raters, missing, accuracy)
    (8, 2, 0.0, 0.7),
    (60, 3, 0.3, 0.6),
    (150, 5, 0.5, 0.5),
    (300, 4, 0.2, 0.8),
]


def ds_labels(seed, n_items, n_raters, missing, accuracy):
    labels = noisy_labels(seed, n_items, n_raters, accuracy=accuracy, missing=missing)
    if seed % 2:
        labels[labels == 4] = 3  # a grade nobody uses (crowd-kit then models 5 classes)
    return labels


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("case", DS_CASES)
@pytest.mark.parametrize("n_iter", [0, 1, 5, 100])
def test_dawid_skene_equals_crowdkit(seed, case, n_iter):
    labels = ds_labels(seed, *case)
    ours = dawid_skene(labels, n_iter=n_iter)
    ref = fit_crowdkit(labels, n_iter)

    tasks = ref.probas_.index.to_numpy(dtype=int)
    classes = ref.probas_.columns.to_numpy(dtype=int)
    np.testing.assert_allclose(
        ours.posteriors[np.ix_(tasks, classes)], ref.probas_.to_numpy(), rtol=0, atol=TOL
    )
    # the only difference: crowd-kit's loss computation floors its returned probas at 1e-10
    floored = ours.posteriors if n_iter == 0 else np.maximum(ours.posteriors, DS_EPS)
    np.testing.assert_allclose(
        floored[np.ix_(tasks, classes)], ref.probas_.to_numpy(), rtol=0, atol=1e-13
    )
    priors_index = ref.priors_.index.to_numpy(dtype=int)
    np.testing.assert_allclose(ours.priors[priors_index], ref.priors_.to_numpy(), rtol=0, atol=TOL)
    for (worker, observed), row in ref.errors_.iterrows():
        for true_class, value in row.items():
            assert ours.confusion[worker, true_class, observed] == pytest.approx(value, abs=TOL)
    assert ours.n_iter == len(ref.loss_history_)
    np.testing.assert_allclose(ours.loss_history, ref.loss_history_, rtol=0, atol=TOL)


@pytest.mark.parametrize("seed", range(4))
def test_dawid_skene_leaves_what_crowdkit_never_sees_out_of_the_model(seed):
    labels = ds_labels(seed, 40, 4, 0.3, 0.7)
    labels[:5] = -1  # items nobody labelled
    labels[:, 2] = -1  # a rater with no items
    ours = dawid_skene(labels, n_iter=100)
    ref = fit_crowdkit(labels, 100)
    tasks = ref.probas_.index.to_numpy(dtype=int)
    classes = ref.probas_.columns.to_numpy(dtype=int)
    np.testing.assert_allclose(
        ours.posteriors[np.ix_(tasks, classes)], ref.probas_.to_numpy(), rtol=0, atol=TOL
    )
    np.testing.assert_allclose(ours.posteriors[:5], np.tile(ours.priors, (5, 1)), atol=TOL)
    assert np.isnan(ours.confusion[2]).all() and np.isnan(ours.reliability[2])
    assert np.isfinite(np.delete(ours.reliability, 2)).all()


def test_dawid_skene_gives_unused_grades_zero_probability_and_no_confusion_row():
    labels = ds_labels(1, 60, 3, 0.2, 0.7)  # odd seed: grade 4 unused
    result = dawid_skene(labels)
    assert result.priors[4] == 0.0 and (result.posteriors[:, 4] == 0.0).all()
    assert np.isnan(result.confusion[:, 4, :]).all()
    assert (result.confusion[:, [0, 1, 2, 3, 5], 4] == 0.0).all()


def test_dawid_skene_outputs_are_distributions():
    result = dawid_skene(ds_labels(0, 80, 4, 0.3, 0.6))
    np.testing.assert_allclose(result.posteriors.sum(axis=1), 1.0, atol=1e-12)
    assert result.priors.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(result.confusion.sum(axis=2), 1.0, atol=1e-12)
    expected = (result.priors * np.diagonal(result.confusion, axis1=1, axis2=2)).sum(axis=1)
    np.testing.assert_allclose(result.reliability, expected, atol=1e-12)


def test_dawid_skene_with_no_iterations_is_the_majority_vote_start():
    labels = np.array([[0, 0], [0, 1], [1, 1]])
    result = dawid_skene(labels, n_categories=2, n_iter=0)
    np.testing.assert_allclose(result.posteriors, [[1, 0], [0.5, 0.5], [0, 1]])
    np.testing.assert_allclose(result.priors, [0.5, 0.5])
    # rater 0 said 0 on items 1 and 2 (soft truth 1 + 0.5 for class 0), 1 on item 3
    expected_rater0 = np.array([[1.5, DS_EPS], [0.5, 1.0]])
    expected_rater0 /= expected_rater0.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(result.confusion[0], expected_rater0, atol=1e-15)
    assert result.n_iter == 0 and result.loss_history == ()


def test_dawid_skene_on_perfect_agreement_is_certain():
    labels = np.repeat(np.array([[0], [1], [2], [3], [4], [5], [1], [2]]), 3, axis=1)
    result = dawid_skene(labels)
    np.testing.assert_allclose(result.posteriors, np.eye(K)[labels[:, 0]], atol=1e-8)
    np.testing.assert_allclose(result.reliability, 1.0, atol=1e-8)


def simulate(seed, confusions, priors, n_items):
    rng = np.random.default_rng(seed)
    truth = rng.choice(len(priors), size=n_items, p=priors)
    labels = np.stack(
        [[rng.choice(len(priors), p=conf[t]) for t in truth] for conf in confusions], axis=1
    )
    return truth, labels


def test_dawid_skene_recovers_known_confusion_matrices_and_finds_the_weak_rater():
    k = 4
    good = 0.85 * np.eye(k) + 0.05 * (1 - np.eye(k))
    weak = 0.4 * np.eye(k) + 0.2 * (1 - np.eye(k))
    # an over-caller: tends to grade one step too high
    over = 0.6 * np.eye(k) + 0.3 * np.eye(k, k=1) + 0.1 * (1 - np.eye(k) - np.eye(k, k=1))
    over[-1] = [0.05, 0.05, 0.05, 0.85]
    over /= over.sum(axis=1, keepdims=True)
    confusions = [good, good, good, weak, over]
    priors = np.array([0.4, 0.3, 0.2, 0.1])
    truth, labels = simulate(11, confusions, priors, 3000)
    result = dawid_skene(labels, n_categories=k)

    assert np.argmin(result.reliability) == 3
    np.testing.assert_allclose(result.priors, priors, atol=0.03)
    for estimated, true in zip(result.confusion, confusions, strict=True):
        np.testing.assert_allclose(estimated, true, atol=0.06)
    assert (result.posteriors.argmax(axis=1) == truth).mean() > 0.95


def test_dawid_skene_beats_majority_vote_when_the_majority_is_unreliable():
    k = 3
    good = 0.9 * np.eye(k) + 0.05 * (1 - np.eye(k))
    poor = 0.45 * np.eye(k) + 0.275 * (1 - np.eye(k))
    truth, labels = simulate(5, [good, poor, poor, poor, poor], [0.5, 0.3, 0.2], 2000)
    result = dawid_skene(labels, n_categories=k)
    majority = np.array([np.bincount(row, minlength=k).argmax() for row in labels])
    ds_accuracy = (result.posteriors.argmax(axis=1) == truth).mean()
    assert ds_accuracy > (majority == truth).mean()
    assert result.reliability[0] > result.reliability[1:].max()


def test_dawid_skene_accepts_an_explicit_start():
    labels = ds_labels(2, 50, 4, 0.3, 0.6)
    counts = category_counts(labels).astype(float)
    shares = counts / counts.sum(axis=1, keepdims=True)
    explicit = dawid_skene(labels, init=shares)
    default = dawid_skene(labels)
    np.testing.assert_allclose(explicit.posteriors, default.posteriors, atol=1e-12)
    assert explicit.n_iter == default.n_iter


def test_dawid_skene_refuses_empty_and_out_of_range_labels():
    with pytest.raises(ValueError, match="at least one label"):
        dawid_skene(np.full((3, 2), -1))
    with pytest.raises(ValueError, match="0..5"):
        dawid_skene(np.array([[0, 6]]))


# --- summaries --------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_pairwise_cohen_equals_sklearn_over_items_both_rated(seed):
    labels = noisy_labels(seed, 60, 4, accuracy=0.6, missing=0.3)
    kappas = pairwise_cohen(labels)
    assert sorted(kappas) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    for (i, j), value in kappas.items():
        both = (labels[:, i] != -1) & (labels[:, j] != -1)
        expected = cohen_kappa_score(
            labels[both, i], labels[both, j], weights="quadratic", labels=range(K)
        )
        assert value == pytest.approx(expected, abs=TOL)


def test_pairwise_cohen_of_raters_who_share_no_item_is_nan():
    labels = np.array([[0, -1, 1], [-1, 2, 3], [4, -1, 4]])
    assert np.isnan(pairwise_cohen(labels)[(0, 1)])


def test_agreement_with_consensus_counts_only_items_each_rater_labelled():
    labels = np.array([[0, 0, -1, -1], [1, 2, -1, -1], [3, 3, 3, -1], [5, -1, 4, -1]])
    consensus = np.array([0, 1, 3, -1])  # no consensus on the last item
    np.testing.assert_allclose(
        agreement_with_consensus(labels, consensus), [1.0, 2 / 3, 1.0, np.nan], equal_nan=True
    )


def test_confusion_against_counts_consensus_rows_and_rater_columns():
    counts = confusion_against([0, 1, 1, -1, 2], [0, 0, 1, 2, -1], n_categories=3)
    np.testing.assert_array_equal(counts, [[1, 1, 0], [0, 1, 0], [0, 0, 0]])
    assert confusion_against([-1, -1], [0, 1]).sum() == 0


def test_category_counts_and_reliability_data_are_the_references_layouts():
    labels = np.array([[0, 2, -1], [5, 5, 5]])
    np.testing.assert_array_equal(category_counts(labels), [[1, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 3]])
    np.testing.assert_array_equal(reliability_data(labels), [[0, 5], [2, 5], [np.nan, 5]])
