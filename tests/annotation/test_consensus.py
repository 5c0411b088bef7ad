"""Consensus merge of several experts' boxes (annotation/consensus.py).

Hand-built cases run against both implementations (the vectorised ``merge`` and the plain
``naive_merge``); property tests check the invariants on random boxes and that the two
implementations agree on well-separated inputs (see test_naive_merge_agrees_with_merge...).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from annotation.bethesda import BETHESDA, UnknownLabel
from annotation.consensus import (
    AGREED,
    DISPUTED,
    LABEL_SPLIT,
    TOO_FEW_EXPERTS,
    WEAK_OVERLAP,
    ConsensusConfig,
    merge,
    naive_merge,
)
from annotation.geometry import Box, iou

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=[merge, naive_merge], ids=["merge", "naive_merge"])
def merge_fn(request):
    return request.param


def one_hot(label: str) -> tuple[float, ...]:
    return tuple(1.0 if name == label else 0.0 for name in BETHESDA)


def box(x, y, w=100, h=100, label="LSIL"):
    return Box(float(x), float(y), float(w), float(h), label)


# --- agreement and quorum -------------------------------------------------------------------


def test_perfect_agreement_gives_agreed_clusters_with_one_hot_votes(merge_fn):
    boxes = [box(10, 10, label="LSIL"), box(400, 300, label="HSIL")]
    result = merge_fn({"ann": boxes, "bea": boxes, "cid": boxes})
    assert len(result) == 2
    for cluster, expected in zip(result, boxes, strict=True):
        assert cluster.status == AGREED and cluster.reasons == ()
        assert cluster.n_experts_found == 3
        assert cluster.votes == one_hot(expected.label)
        assert cluster.label == expected.label and cluster.vote_share == 1.0
        assert cluster.mean_iou == 1.0
        assert cluster.box == expected
    assert result[0].members == (("ann", 0), ("bea", 0), ("cid", 0))


def test_cluster_found_by_two_of_three_experts_is_agreed_at_quorum_two(merge_fn):
    result = merge_fn({"a": [box(0, 0), box(500, 500)], "b": [box(2, 1)], "c": [box(501, 499)]})
    assert [c.n_experts_found for c in result] == [2, 2]
    assert all(c.status == AGREED for c in result)


def test_cluster_found_by_two_of_four_experts_is_too_few_experts(merge_fn):
    (cluster,) = merge_fn({"a": [box(0, 0)], "b": [box(2, 1)], "c": [], "d": []})
    assert cluster.n_experts_found == 2
    assert cluster.status == DISPUTED and cluster.reasons == (TOO_FEW_EXPERTS,)


def test_explicit_quorum_overrides_majority(merge_fn):
    annotations = {"a": [box(0, 0)], "b": [box(2, 1)], "c": [], "d": []}
    (cluster,) = merge_fn(annotations, config=ConsensusConfig(quorum=2))
    assert cluster.status == AGREED


def test_experts_counted_by_n_experts_but_absent_raise_the_quorum(merge_fn):
    (cluster,) = merge_fn({"a": [box(0, 0)], "b": [box(2, 1)]}, n_experts=4)
    assert cluster.reasons == (TOO_FEW_EXPERTS,)


def test_experts_with_no_boxes_still_count_toward_the_quorum(merge_fn):
    result = merge_fn({"a": [box(0, 0), box(300, 0)], "b": [], "c": []})
    assert [c.members for c in result] == [(("a", 0),), (("a", 1),)]
    assert all(c.reasons == (TOO_FEW_EXPERTS,) for c in result)


def test_single_expert_image_agrees_with_itself(merge_fn):
    (cluster,) = merge_fn({"a": [box(0, 0, label="ASC-H")]})
    assert cluster.status == AGREED and cluster.label == "ASC-H" and cluster.mean_iou == 1.0


def test_empty_input_gives_no_clusters(merge_fn):
    assert merge_fn({}) == []


def test_experts_who_drew_nothing_give_no_clusters(merge_fn):
    assert merge_fn({"a": [], "b": [], "c": []}) == []


# --- labels ---------------------------------------------------------------------------------


def test_label_split_two_to_one_is_agreed_with_two_thirds_share(merge_fn):
    (cluster,) = merge_fn(
        {"a": [box(0, 0, label="LSIL")], "b": [box(0, 0, label="LSIL")],
         "c": [box(0, 0, label="HSIL")]}
    )
    assert cluster.status == AGREED
    assert cluster.label == "LSIL"
    assert cluster.vote_share == pytest.approx(2 / 3)
    assert cluster.votes == pytest.approx((0, 0, 2 / 3, 0, 1 / 3, 0))


def test_label_split_one_one_one_is_disputed(merge_fn):
    (cluster,) = merge_fn(
        {"a": [box(0, 0, label="ASC-US")], "b": [box(0, 0, label="LSIL")],
         "c": [box(0, 0, label="HSIL")]}
    )
    assert cluster.status == DISPUTED and cluster.reasons == (LABEL_SPLIT,)
    assert cluster.votes == pytest.approx((0, 1 / 3, 1 / 3, 0, 1 / 3, 0))


def test_exact_tie_goes_to_the_more_severe_label_and_is_label_split(merge_fn):
    annotations = {"a": [box(0, 0, label="HSIL")], "b": [box(0, 0, label="ASC-US")]}
    (cluster,) = merge_fn(annotations, config=ConsensusConfig(quorum=1))
    assert cluster.label == "HSIL" and cluster.box.label == "HSIL"
    assert cluster.vote_share == 0.5
    assert cluster.reasons == (LABEL_SPLIT,)


def test_two_to_one_below_quorum_lists_label_split(merge_fn):
    # five experts, quorum 3: three found it, labels 2-1 -> the winner has only two
    annotations = {
        "a": [box(0, 0, label="LSIL")], "b": [box(0, 0, label="LSIL")],
        "c": [box(0, 0, label="SCC")], "d": [], "e": [],
    }
    (cluster,) = merge_fn(annotations)
    assert cluster.label == "LSIL" and cluster.reasons == (LABEL_SPLIT,)


def test_every_applicable_reason_is_listed(merge_fn):
    # four experts (quorum 3); two found it, with different labels and a marginal overlap
    annotations = {"a": [box(0, 0, label="LSIL")], "b": [box(0, 0, 51, label="HSIL")],
                   "c": [], "d": []}
    (cluster,) = merge_fn(annotations)
    assert cluster.reasons == (LABEL_SPLIT, TOO_FEW_EXPERTS, WEAK_OVERLAP)


def test_label_aliases_are_normalised(merge_fn):
    (cluster,) = merge_fn({"a": [box(0, 0, label="ascus")], "b": [box(0, 0, label="asc-us")]})
    assert cluster.label == "ASC-US" and cluster.status == AGREED


def test_unknown_label_is_rejected(merge_fn):
    with pytest.raises(UnknownLabel):
        merge_fn({"a": [box(0, 0, label="CIN2")]})


# --- weights --------------------------------------------------------------------------------


def test_weights_change_the_winner(merge_fn):
    annotations = {"a": [box(0, 0, label="LSIL")], "b": [box(0, 0, label="LSIL")],
                   "c": [box(0, 0, label="HSIL")]}
    assert merge_fn(annotations)[0].label == "LSIL"
    (cluster,) = merge_fn(annotations, weights={"a": 1.0, "b": 1.0, "c": 3.0})
    assert cluster.label == "HSIL"
    assert cluster.votes == pytest.approx((0, 0, 0.4, 0, 0.6, 0))
    # 0.6 of the panel's weight is short of the 2/3 a quorum of 2 out of 3 needs
    assert cluster.reasons == (LABEL_SPLIT,)


def test_weighted_winner_reaching_quorum_share_is_agreed(merge_fn):
    annotations = {"a": [box(0, 0, label="LSIL")], "b": [box(0, 0, label="LSIL")],
                   "c": [box(0, 0, label="HSIL")]}
    (cluster,) = merge_fn(annotations, weights={"a": 0.1, "b": 0.1, "c": 0.4})
    assert cluster.label == "HSIL"
    assert cluster.vote_share == pytest.approx(2 / 3)
    assert cluster.status == AGREED


def test_scaling_all_weights_changes_nothing(merge_fn):
    annotations = {"a": [box(0, 0, label="LSIL")], "b": [box(3, 0, label="HSIL")],
                   "c": [box(0, 2, label="HSIL")]}
    plain = merge_fn(annotations)
    scaled = merge_fn(annotations, weights={"a": 0.1, "b": 0.1, "c": 0.1, "other": 9.0})
    assert [(c.members, c.label, c.status) for c in plain] == [
        (c.members, c.label, c.status) for c in scaled
    ]
    assert scaled[0].votes == pytest.approx(plain[0].votes)


def test_missing_weight_is_rejected(merge_fn):
    with pytest.raises(ValueError, match="no weight given for expert 'b'"):
        merge_fn({"a": [box(0, 0)], "b": []}, weights={"a": 1.0})


def test_non_positive_weight_is_rejected(merge_fn):
    with pytest.raises(ValueError, match="must be positive"):
        merge_fn({"a": [box(0, 0)]}, weights={"a": 0.0})


def test_n_experts_below_the_annotators_is_rejected(merge_fn):
    with pytest.raises(ValueError, match="fewer than the 2 experts"):
        merge_fn({"a": [box(0, 0)], "b": []}, n_experts=1)


# --- matching -------------------------------------------------------------------------------


def test_nearby_distinct_clusters_do_not_merge(merge_fn):
    # two cell clusters side by side, overlapping by a third: IoU 0.2 < 0.5
    left, right = box(0, 0, label="LSIL"), box(66, 0, label="HSIL")
    assert iou(left, right) < 0.5
    result = merge_fn({"a": [left, right], "b": [right, left], "c": [left, right]})
    assert [c.members for c in result] == [
        (("a", 0), ("b", 1), ("c", 0)),
        (("a", 1), ("b", 0), ("c", 1)),
    ]
    assert [c.label for c in result] == ["LSIL", "HSIL"]
    assert all(c.status == AGREED for c in result)


def test_box_just_under_the_threshold_does_not_match(merge_fn):
    a, b = box(0, 0, 100, 100), box(0, 0, 49, 100)
    assert iou(a, b) == pytest.approx(0.49)
    result = merge_fn({"a": [a], "b": [b]})
    assert [c.members for c in result] == [(("a", 0),), (("b", 0),)]


def test_box_just_over_the_threshold_matches(merge_fn):
    a, b = box(0, 0, 100, 100), box(0, 0, 51, 100)
    assert iou(a, b) == pytest.approx(0.51)
    (cluster,) = merge_fn({"a": [a], "b": [b]})
    assert cluster.members == (("a", 0), ("b", 0))
    assert cluster.mean_iou == pytest.approx(0.51)


def test_box_exactly_at_the_threshold_matches(merge_fn):
    (cluster,) = merge_fn({"a": [box(0, 0, 100, 100)], "b": [box(0, 0, 50, 100)]})
    assert cluster.n_experts_found == 2


def test_marginal_overlap_is_weak_overlap(merge_fn):
    (cluster,) = merge_fn({"a": [box(0, 0, 100, 100)], "b": [box(0, 0, 51, 100)]})
    assert cluster.status == DISPUTED and cluster.reasons == (WEAK_OVERLAP,)
    (relaxed,) = merge_fn(
        {"a": [box(0, 0, 100, 100)], "b": [box(0, 0, 51, 100)]},
        config=ConsensusConfig(weak_iou=0.5),
    )
    assert relaxed.status == AGREED


def test_expert_with_two_overlapping_boxes_never_has_both_in_one_cluster(merge_fn):
    first, second = box(0, 0), box(10, 0)  # IoU 0.82 with each other
    result = merge_fn({"a": [first, second], "b": [box(5, 0)], "c": [box(5, 0)]})
    assert len(result) == 2
    for cluster in result:
        experts = [e for e, _ in cluster.members]
        assert len(experts) == len(set(experts))
    assert sorted(m for c in result for m in c.members) == [
        ("a", 0), ("a", 1), ("b", 0), ("c", 0)
    ]


def test_later_box_joins_the_cluster_it_overlaps_best(merge_fn):
    # b's box overlaps both of a's boxes above the threshold (0.52 and 0.56): it joins the second
    result = merge_fn({"a": [box(0, 0), box(60, 0)], "b": [box(32, 0)]})
    assert [c.members for c in result] == [(("a", 0),), (("a", 1), ("b", 0))]


def test_hungarian_assignment_matches_more_boxes_than_greedy_under_contention():
    # b0 overlaps a0 (IoU 0.90) and a1 (0.60); b1 overlaps only a0 (0.71). Greedy takes the
    # single best pair b0-a0 and strands b1; the optimal assignment pairs b0-a1 and b1-a0.
    annotations = {"a": [box(50, 0), box(80, 0)], "b": [box(55, 0), box(33, 0)]}
    assert [c.members for c in merge(annotations)] == [
        (("a", 0), ("b", 1)), (("a", 1), ("b", 0))
    ]
    assert [c.members for c in naive_merge(annotations)] == [
        (("a", 0), ("b", 0)), (("a", 1),), (("b", 1),)
    ]


def test_dict_order_does_not_change_the_result(merge_fn):
    annotations = {
        "zoe": [box(0, 0, label="LSIL"), box(200, 0, label="HSIL")],
        "amy": [box(4, 2, label="HSIL")],
        "max": [box(203, 1, label="HSIL"), box(600, 0, label="SCC")],
    }
    reordered = dict(reversed(list(annotations.items())))
    assert merge_fn(annotations) == merge_fn(reordered)


# --- consensus box --------------------------------------------------------------------------


def test_medoid_box_is_the_member_nearest_the_mean(merge_fn):
    (cluster,) = merge_fn({"a": [box(0, 0)], "b": [box(6, 0)], "c": [box(9, 0)]})
    assert cluster.box == box(6, 0)  # mean x is 5


def test_weighted_mean_box_averages_the_members_corners(merge_fn):
    annotations = {"a": [box(0, 0, 100, 100)], "b": [box(6, 0, 100, 100)],
                   "c": [box(9, 3, 100, 94)]}
    config = ConsensusConfig(box_method="weighted_mean")
    (cluster,) = merge_fn(annotations, config=config)
    assert (cluster.box.x, cluster.box.y) == pytest.approx((5.0, 1.0))
    assert (cluster.box.x2, cluster.box.y2) == pytest.approx((105.0, 99.0))
    (weighted,) = merge_fn(annotations, config=config, weights={"a": 2, "b": 1, "c": 1})
    assert weighted.box.x == pytest.approx(15 / 4)


def test_medoid_tie_prefers_a_box_with_the_winning_label(merge_fn):
    # two members are always equidistant from their mean; the HSIL box wins the tie
    annotations = {"a": [box(0, 0, label="LSIL")], "b": [box(8, 0, label="HSIL")]}
    (cluster,) = merge_fn(annotations, config=ConsensusConfig(quorum=1))
    assert cluster.label == "HSIL" and cluster.box == box(8, 0, label="HSIL")


def test_consensus_box_carries_the_winning_label_and_no_score(merge_fn):
    annotations = {"a": [Box(0, 0, 50, 50, "LSIL", 0.9)], "b": [Box(0, 0, 50, 50, "LSIL")],
                   "c": [Box(1, 0, 50, 50, "HSIL")]}
    (cluster,) = merge_fn(annotations)
    assert cluster.box.label == "LSIL" and cluster.box.score is None


# --- configuration and purity ---------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{"iou_threshold": 0.0}, {"iou_threshold": 1.5}, {"weak_iou": -0.1}, {"quorum": 0},
     {"quorum": True}, {"box_method": "median"}],
)
def test_bad_config_is_rejected(kwargs):
    with pytest.raises(ValueError):
        ConsensusConfig(**kwargs)


def test_default_quorum_is_a_strict_majority():
    assert [ConsensusConfig().quorum_for(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 2, 3, 3]


def test_consensus_module_imports_no_django():
    code = (
        "import sys, annotation.consensus; "
        "sys.exit(any(m == 'django' or m.startswith('django.') for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


# --- properties on random data --------------------------------------------------------------

EXPERT_IDS = ("ana", "ben", "cai", "dee")
coordinate = st.integers(0, 60).map(float)
size = st.integers(1, 40).map(float)
random_box = st.builds(Box, coordinate, coordinate, size, size, st.sampled_from(BETHESDA))
random_annotations = st.dictionaries(
    st.sampled_from(EXPERT_IDS), st.lists(random_box, max_size=6), max_size=4
)
random_weights = st.fixed_dictionaries({e: st.sampled_from([0.5, 1.0, 2.0]) for e in EXPERT_IDS})


def check_invariants(annotations, result):
    every_box = sorted((e, i) for e, boxes in annotations.items() for i in range(len(boxes)))
    assert sorted(m for c in result for m in c.members) == every_box
    for cluster in result:
        experts = [e for e, _ in cluster.members]
        assert len(experts) == len(set(experts)) == cluster.n_experts_found
        assert len(cluster.votes) == len(BETHESDA)
        assert sum(cluster.votes) == pytest.approx(1.0)
        assert min(cluster.votes) >= 0.0
        assert cluster.vote_share == cluster.votes[BETHESDA.index(cluster.label)]
        assert cluster.vote_share == pytest.approx(max(cluster.votes))
        assert cluster.box.label == cluster.label
        assert 0.0 <= cluster.mean_iou <= 1.0
        assert (cluster.status == AGREED) == (cluster.reasons == ())


@settings(max_examples=150, deadline=None)
@given(annotations=random_annotations, weights=random_weights, data=st.data())
def test_merge_invariants_hold_on_random_boxes(annotations, weights, data):
    use_weights = data.draw(st.booleans())
    config = ConsensusConfig(box_method=data.draw(st.sampled_from(["medoid", "weighted_mean"])))
    kwargs = {"weights": weights if use_weights else None, "config": config}
    result = merge(annotations, **kwargs)
    check_invariants(annotations, result)
    order = data.draw(st.permutations(list(annotations)))
    assert merge({e: annotations[e] for e in order}, **kwargs) == result


@settings(max_examples=60, deadline=None)
@given(annotations=random_annotations)
def test_naive_merge_invariants_hold_on_random_boxes(annotations):
    check_invariants(annotations, naive_merge(annotations))


# Well separated: cell k of a grid holds one true cluster; each expert draws it at most once,
# jittered by a few pixels (IoU with any other expert's box in that cell stays above 0.5, and
# boxes of different cells never touch). No box can then be matched to two clusters, the only
# situation where Hungarian and greedy assignment may legitimately part ways.
jitter = st.integers(-3, 3).map(float)  # worst pair in a cell: IoU 0.56
cell_drawing = st.one_of(
    st.none(), st.tuples(jitter, jitter, jitter, jitter, st.sampled_from(BETHESDA))
)
separated_annotations = st.dictionaries(
    st.sampled_from(EXPERT_IDS), st.lists(cell_drawing, min_size=0, max_size=8), max_size=4
)


def grid_boxes(drawings):
    boxes = []
    for cell, drawing in enumerate(drawings):
        if drawing is not None:
            dx, dy, dw, dh, label = drawing
            boxes.append(Box(200.0 * cell + 20 + dx, 20 + dy, 60 + dw, 60 + dh, label))
    # experts list their boxes in any order
    return boxes[::2] + boxes[1::2]


@settings(max_examples=150, deadline=None)
@given(drawn=separated_annotations, weights=random_weights, data=st.data())
def test_naive_merge_agrees_with_merge_on_well_separated_boxes(drawn, weights, data):
    annotations = {e: grid_boxes(d) for e, d in drawn.items()}
    config = ConsensusConfig(
        box_method=data.draw(st.sampled_from(["medoid", "weighted_mean"])),
        quorum=data.draw(st.sampled_from([None, 1, 2])),
    )
    kwargs = {"weights": weights if data.draw(st.booleans()) else None, "config": config}
    fast, slow = merge(annotations, **kwargs), naive_merge(annotations, **kwargs)
    assert [c.members for c in fast] == [c.members for c in slow]
    for f, s in zip(fast, slow, strict=True):
        assert (f.label, f.status, f.reasons, f.n_experts_found) == (
            s.label, s.status, s.reasons, s.n_experts_found
        )
        assert f.votes == pytest.approx(s.votes)
        assert f.vote_share == pytest.approx(s.vote_share)
        assert f.mean_iou == pytest.approx(s.mean_iou)
        assert f.box.label == s.box.label
        assert (f.box.x, f.box.y, f.box.width, f.box.height) == pytest.approx(
            (s.box.x, s.box.y, s.box.width, s.box.height)
        )
