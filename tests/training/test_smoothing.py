"""Training targets: the paper's ordinal label smoothing, one-hot, and vote shares."""

from __future__ import annotations

import numpy as np
import pytest

from training.smoothing import (
    TargetConfig,
    make_targets,
    ordinal_smoothing,
    smooth_targets,
    soft_cross_entropy,
    vote_targets,
)

# Hand-computed y_i = n^-|k-i|, written as integer numerators over one denominator per row.
RAW_N2 = {  # (numerators, denominator): raw weight = numerator / denominator
    0: ([32, 16, 8, 4, 2, 1], 32),
    1: ([8, 16, 8, 4, 2, 1], 16),
    2: ([2, 4, 8, 4, 2, 1], 8),
    3: ([1, 2, 4, 8, 4, 2], 8),
    4: ([1, 2, 4, 8, 16, 8], 16),
    5: ([1, 2, 4, 8, 16, 32], 32),
}
RAW_N3 = {
    0: ([243, 81, 27, 9, 3, 1], 243),
    1: ([27, 81, 27, 9, 3, 1], 81),
    2: ([3, 9, 27, 9, 3, 1], 27),
    3: ([1, 3, 9, 27, 9, 3], 27),
    4: ([1, 3, 9, 27, 81, 27], 81),
    5: ([1, 3, 9, 27, 81, 243], 243),
}
# Normalised: the same numerators over their sum.
NORM_SUMS = {
    2: {0: 63, 1: 39, 2: 21, 3: 21, 4: 39, 5: 63},
    3: {0: 364, 1: 148, 2: 52, 3: 52, 4: 148, 5: 364},
}


@pytest.mark.parametrize("k", range(6))
def test_raw_weights_base_2_are_powers_of_one_half(k):
    nums, den = RAW_N2[k]
    np.testing.assert_array_equal(ordinal_smoothing(k, 2, normalize=False), np.array(nums) / den)


@pytest.mark.parametrize("k", range(6))
def test_raw_weights_base_3_are_powers_of_one_third(k):
    nums, den = RAW_N3[k]
    np.testing.assert_allclose(
        ordinal_smoothing(k, 3, normalize=False), np.array(nums) / den, rtol=1e-15, atol=0
    )


@pytest.mark.parametrize("n,table", [(2, RAW_N2), (3, RAW_N3)])
@pytest.mark.parametrize("k", range(6))
def test_normalised_weights_are_numerators_over_their_sum(n, table, k):
    nums, _ = table[k]
    assert sum(nums) == NORM_SUMS[n][k]
    got = ordinal_smoothing(k, n)
    np.testing.assert_allclose(got, np.array(nums) / NORM_SUMS[n][k], rtol=1e-15, atol=0)
    assert got.sum() == pytest.approx(1.0, abs=1e-15)
    assert int(np.argmax(got)) == k


def test_raw_weight_of_true_class_is_one():
    for n in (2, 3):
        for k in range(6):
            assert ordinal_smoothing(k, n, normalize=False)[k] == 1.0


def test_smoothing_rejects_bad_class_and_base():
    with pytest.raises(ValueError, match="class index"):
        ordinal_smoothing(6)
    with pytest.raises(ValueError, match="class index"):
        ordinal_smoothing(-1)
    with pytest.raises(ValueError, match="n must be"):
        ordinal_smoothing(0, n=0.5)


def test_smooth_targets_stacks_rows_per_label():
    labels = np.array([0, 5, 2, 2])
    got = smooth_targets(labels, n=3, normalize=False)
    assert got.shape == (4, 6)
    for row, k in zip(got, labels, strict=True):
        np.testing.assert_array_equal(row, ordinal_smoothing(int(k), 3, normalize=False))


def test_smooth_targets_rejects_out_of_range_label_naming_row():
    with pytest.raises(ValueError, match="row 1"):
        smooth_targets([0, 7])


def test_vote_targets_accepts_valid_shares():
    votes = [[0, 1 / 3, 2 / 3, 0, 0, 0], [1, 0, 0, 0, 0, 0]]
    got = vote_targets(votes)
    assert got.shape == (2, 6)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-15)
    np.testing.assert_allclose(got, votes, atol=1e-15)


def test_vote_targets_rejects_negative_share_naming_row():
    with pytest.raises(ValueError, match="row 1 has a negative"):
        vote_targets([[1, 0, 0, 0, 0, 0], [1.5, -0.5, 0, 0, 0, 0]])


def test_vote_targets_rejects_rows_not_summing_to_one_naming_row():
    with pytest.raises(ValueError, match="row 2 sums to"):
        vote_targets([[1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1], [0.5, 0.4, 0, 0, 0, 0]])


def test_vote_targets_tolerates_one_in_a_million():
    got = vote_targets([[0.5, 0.5 + 5e-7, 0, 0, 0, 0]])
    assert got.sum() == pytest.approx(1.0, abs=1e-15)


def test_vote_targets_rejects_wrong_width_and_nan():
    with pytest.raises(ValueError, match="shape"):
        vote_targets([[0.5, 0.5]])
    with pytest.raises(ValueError, match="row 0 has a non-finite"):
        vote_targets([[np.nan, 1, 0, 0, 0, 0]])


def test_make_targets_follows_config():
    labels = np.array([1, 4])
    np.testing.assert_array_equal(
        make_targets(labels, None, TargetConfig(kind="onehot")), np.eye(6)[labels]
    )
    np.testing.assert_array_equal(
        make_targets(labels, None, TargetConfig(n=3, normalize=False)),
        smooth_targets(labels, 3, normalize=False),
    )
    votes = [[0, 0.5, 0.5, 0, 0, 0], [0, 0, 0, 0.25, 0.75, 0]]
    np.testing.assert_allclose(make_targets(labels, votes, TargetConfig(kind="votes")), votes)


def test_target_config_rejects_unknown_kind_and_missing_inputs():
    with pytest.raises(ValueError, match="target kind"):
        TargetConfig(kind="mixup")
    with pytest.raises(ValueError, match="needs vote"):
        make_targets([0], None, TargetConfig(kind="votes"))
    with pytest.raises(ValueError, match="needs integer labels"):
        make_targets(None, None, TargetConfig())
    with pytest.raises(ValueError, match="2 labels but 1"):
        make_targets([0, 1], [[1, 0, 0, 0, 0, 0]], TargetConfig(kind="votes"))


def test_soft_cross_entropy_of_one_hot_is_minus_log_true_class():
    pred = np.array([[0.1, 0.6, 0.1, 0.1, 0.05, 0.05]])
    assert soft_cross_entropy(np.eye(6)[[1]], pred)[0] == pytest.approx(-np.log(0.6), rel=1e-12)


def test_soft_cross_entropy_is_paper_weighted_sum():
    pred = np.full((1, 6), 1 / 6)
    y = ordinal_smoothing(2, 2, normalize=False)[None]
    assert soft_cross_entropy(y, pred)[0] == pytest.approx(y.sum() * np.log(6), rel=1e-12)


def test_keras_categorical_crossentropy_matches_numpy_on_soft_targets():
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(8, 6))
    pred = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    for normalize in (True, False):
        y = smooth_targets(rng.integers(0, 6, 8), n=2, normalize=normalize)
        ours = soft_cross_entropy(y, pred).mean()
        theirs = float(
            keras.losses.CategoricalCrossentropy()(y.astype("float32"), pred.astype("float32"))
        )
        assert theirs == pytest.approx(ours, rel=1e-5)
