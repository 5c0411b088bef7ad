"""Simulated experts: deterministic, valid boxes, and disagreement that matches their profiles."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from annotation.bethesda import BETHESDA
from annotation.geometry import Box, iou
from annotation.simulation import (
    DEFAULT_MISS_FACTORS,
    ExpertProfile,
    default_panel,
    expert_rng,
    measured_rates,
    miss_probability,
    simulate_expert,
    simulate_expert_detailed,
    simulate_panel,
)

WIDTH, HEIGHT = 1000, 800
REPO = Path(__file__).resolve().parents[2]


def make_truth(
    n_images: int, seed: int, grades: tuple[int, ...] = tuple(range(6))
) -> list[list[Box]]:
    """Random non-overlapping true boxes: at most one per cell of a 4 x 3 grid, with gaps."""
    rng = np.random.default_rng(seed)
    cell_w, cell_h = WIDTH / 4, HEIGHT / 3
    images = []
    for _ in range(n_images):
        cells = rng.choice(12, size=int(rng.integers(3, 7)), replace=False)
        boxes = []
        for cell in cells:
            col, row = divmod(int(cell), 3)
            w, h = rng.uniform(60, 150), rng.uniform(60, 150)
            x = col * cell_w + rng.uniform(25, cell_w - 25 - w)
            y = row * cell_h + rng.uniform(25, cell_h - 25 - h)
            boxes.append(
                Box(float(x), float(y), float(w), float(h), BETHESDA[int(rng.choice(grades))])
            )
        images.append(boxes)
    return images


@pytest.fixture(scope="module")
def truth() -> list[list[Box]]:
    return make_truth(1000, seed=11)


def run_expert(truth_images, profile, seed=5):
    return [
        simulate_expert(boxes, WIDTH, HEIGHT, profile, expert_rng(seed, key, profile.name))
        for key, boxes in enumerate(truth_images)
    ]


def within(measured: float, expected: float, n: int, sigmas: float = 4.5) -> bool:
    """Binomial-proportion tolerance: |measured - expected| within ``sigmas`` standard errors."""
    return abs(measured - expected) <= sigmas * math.sqrt(expected * (1 - expected) / n) + 1e-9


def test_same_seed_and_image_give_the_same_boxes(truth):
    panel = default_panel(4, seed=3)
    first = simulate_panel(truth[0], WIDTH, HEIGHT, panel, seed=9, image_key="img-1")
    again = simulate_panel(truth[0], WIDTH, HEIGHT, panel, seed=9, image_key="img-1")
    assert first == again


def test_an_experts_boxes_do_not_depend_on_the_rest_of_the_panel(truth):
    panel = default_panel(4, seed=3)
    whole = simulate_panel(truth[0], WIDTH, HEIGHT, panel, seed=9, image_key=7)
    alone = simulate_panel(truth[0], WIDTH, HEIGHT, panel[2:3], seed=9, image_key=7)
    assert alone["expert3"] == whole["expert3"]


def test_experts_with_the_same_skills_but_different_names_draw_differently(truth):
    twins = [ExpertProfile(name, miss_rate=0.2, jitter=0.05, spurious_rate=0.5) for name in "ab"]
    drawn = [
        simulate_panel(boxes, WIDTH, HEIGHT, twins, seed=1, image_key=key)
        for key, boxes in enumerate(truth[:20])
    ]
    assert [d["a"] for d in drawn] != [d["b"] for d in drawn]


def test_different_image_keys_or_seeds_draw_differently(truth):
    panel = [ExpertProfile("e", jitter=0.05)]
    base = simulate_panel(truth[0], WIDTH, HEIGHT, panel, seed=1, image_key=1)
    assert simulate_panel(truth[0], WIDTH, HEIGHT, panel, seed=1, image_key=2) != base
    assert simulate_panel(truth[0], WIDTH, HEIGHT, panel, seed=2, image_key=1) != base


def test_the_generator_is_the_same_in_another_process():
    code = (
        "from annotation.simulation import expert_rng;"
        "print(expert_rng(4, 'slide-9', 'expert2').integers(0, 2**62, size=3).tolist())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == str(
        expert_rng(4, "slide-9", "expert2").integers(0, 2**62, size=3).tolist()
    )


def test_boxes_are_valid_and_inside_the_image_even_with_large_noise():
    rng = np.random.default_rng(0)
    # boxes hugging the image's edges and corners, a noisy expert with many false boxes
    truth = [
        Box(0.0, 0.0, 120.0, 90.0, "HSIL"),
        Box(WIDTH - 80.0, HEIGHT - 100.0, 80.0, 100.0, "NILM"),
        Box(0.0, HEIGHT - 50.0, 300.0, 50.0, "LSIL"),
        Box(450.0, 350.0, 100.0, 100.0, "SCC"),
    ]
    noisy = ExpertProfile(
        "noisy", miss_rate=0.1, spurious_rate=4.0, jitter=0.4, label_change_rate=0.5, bias=0.3
    )
    for _ in range(300):
        for box in simulate_expert(truth, WIDTH, HEIGHT, noisy, rng):
            assert box.validated(WIDTH, HEIGHT) == box
            assert box.width > 0 and box.height > 0
            assert box.label in BETHESDA
            assert box.score is None


def test_a_perfect_expert_reproduces_the_truth(truth):
    perfect = ExpertProfile("perfect")
    drawn = run_expert(truth[:50], perfect)
    assert drawn == truth[:50]


def test_measured_rates_of_the_truth_against_itself_are_zero(truth):
    rates = measured_rates(truth[:50], truth[:50])
    assert rates.miss_rate == 0 and rates.spurious_per_image == 0
    assert rates.label_change_rate == 0 and rates.mean_iou == pytest.approx(1.0)
    assert math.isnan(rates.adjacent_share)


def test_provenance_says_where_each_box_came_from(truth):
    profile = ExpertProfile(
        "e", miss_rate=0.3, spurious_rate=1.0, jitter=0.05, label_change_rate=0.4
    )
    rng = np.random.default_rng(2)
    for boxes in truth[:100]:
        result = simulate_expert_detailed(boxes, WIDTH, HEIGHT, profile, rng)
        assert len(result.boxes) == len(result.origin) == len(result.label_changed)
        derived = [o for o in result.origin if o is not None]
        assert derived == sorted(derived)  # truth order, then the false boxes
        assert result.origin[: len(derived)] == tuple(derived)
        assert sorted(derived + list(result.missed)) == list(range(len(boxes)))
        for box, origin, changed in zip(
            result.boxes, result.origin, result.label_changed, strict=True
        ):
            if origin is None:
                assert not changed
                assert all(iou(box, t) < 0.1 for t in boxes)
            else:
                assert changed == (box.label != boxes[origin].label)
                assert iou(box, boxes[origin]) > 0.5


def test_measured_miss_rate_matches_the_setting(truth):
    profile = ExpertProfile("e", miss_rate=0.15, jitter=0.03)
    rates = measured_rates(truth, run_expert(truth, profile))
    expected = np.mean([miss_probability(profile, b.label) for boxes in truth for b in boxes])
    assert within(rates.miss_rate, float(expected), rates.truth_boxes)
    assert within(rates.miss_rate, 0.15, rates.truth_boxes)


def test_miss_rate_is_the_mean_over_grades_and_low_grades_are_missed_more():
    profile = ExpertProfile("e", miss_rate=0.2)
    per_grade = [miss_probability(profile, g) for g in range(6)]
    assert np.mean(per_grade) == pytest.approx(0.2)
    assert per_grade[0] > 0.2 and per_grade[1] > 0.2
    assert per_grade[4] < 0.2 and per_grade[5] < 0.2
    assert miss_probability(profile, "ASC-US") == pytest.approx(0.2 * DEFAULT_MISS_FACTORS[1])


def test_nilm_is_measured_missed_more_often_than_hsil():
    profile = ExpertProfile("e", miss_rate=0.2)
    low = make_truth(300, seed=1, grades=(0,))
    high = make_truth(300, seed=1, grades=(4,))
    low_rate = measured_rates(low, run_expert(low, profile)).miss_rate
    high_rate = measured_rates(high, run_expert(high, profile)).miss_rate
    assert within(low_rate, miss_probability(profile, "NILM"), 1300)
    assert within(high_rate, miss_probability(profile, "HSIL"), 1300)
    assert low_rate > high_rate


def test_measured_spurious_boxes_per_image_match_the_setting(truth):
    profile = ExpertProfile("e", spurious_rate=0.6, jitter=0.03)
    rates = measured_rates(truth, run_expert(truth, profile))
    # Poisson: the mean of n counts has standard error sqrt(rate / n)
    assert abs(rates.spurious_per_image - 0.6) <= 4.5 * math.sqrt(0.6 / rates.images)
    assert rates.miss_rate == 0


def test_spurious_labels_are_mostly_nilm_or_asc_us():
    profile = ExpertProfile("e", spurious_rate=5.0)
    rng = np.random.default_rng(4)
    labels = [b.label for _ in range(200) for b in simulate_expert([], WIDTH, HEIGHT, profile, rng)]
    assert len(labels) > 900
    benign = sum(label in ("NILM", "ASC-US") for label in labels) / len(labels)
    assert within(benign, 0.75, len(labels))


def test_spurious_boxes_on_an_empty_image_have_a_plausible_size():
    profile = ExpertProfile("e", spurious_rate=3.0)
    boxes = simulate_expert([], WIDTH, HEIGHT, profile, np.random.default_rng(8))
    assert boxes
    for box in boxes:
        assert (
            0.02 * HEIGHT < box.width < 0.3 * HEIGHT and 0.02 * HEIGHT < box.height < 0.3 * HEIGHT
        )


def test_measured_label_change_rate_matches_the_setting(truth):
    profile = ExpertProfile("e", label_change_rate=0.2, jitter=0.03)
    rates = measured_rates(truth, run_expert(truth, profile))
    assert within(rates.label_change_rate, 0.2, rates.matched)


def test_measured_adjacent_share_matches_the_setting(truth):
    profile = ExpertProfile("e", label_change_rate=0.4, adjacent_fraction=0.7)
    rates = measured_rates(truth, run_expert(truth, profile))
    assert within(rates.adjacent_share, 0.7, rates.changed)


def test_positive_bias_changes_labels_upwards_and_negative_downwards():
    middle = make_truth(400, seed=3, grades=(2, 3))  # both directions open at every distance
    for bias in (0.6, -0.6):
        profile = ExpertProfile("e", label_change_rate=0.5, bias=bias)
        rates = measured_rates(middle, run_expert(middle, profile))
        assert within(rates.upward_share, (1 + bias) / 2, rates.changed)
        if bias > 0:
            assert rates.upward_changes > rates.downward_changes
        else:
            assert rates.upward_changes < rates.downward_changes


def test_no_bias_changes_labels_both_ways_equally(truth):
    profile = ExpertProfile("e", label_change_rate=0.5)
    rates = measured_rates(truth, run_expert(truth, profile))
    assert within(rates.upward_share, 0.5, rates.changed)


@pytest.mark.parametrize(("grade", "bias"), [(0, -1.0), (5, 1.0), (1, -1.0)])
def test_a_change_blocked_at_the_end_of_the_scale_goes_the_other_way(grade, bias):
    ends = make_truth(50, seed=2, grades=(grade,))
    profile = ExpertProfile("e", label_change_rate=1.0, adjacent_fraction=0.5, bias=bias)
    rates = measured_rates(ends, run_expert(ends, profile))
    assert rates.label_change_rate == 1.0
    assert within(rates.adjacent_share, 0.5, rates.changed)
    if grade == 0:
        assert rates.upward_share == 1.0
    elif grade == 5:
        assert rates.upward_share == 0.0
    else:  # ASC-US under-called: one step down to NILM, or two or more steps up
        assert 0.0 < rates.upward_share < 1.0


def test_jitter_of_five_percent_keeps_boxes_close_to_the_truth(truth):
    rates = {
        jitter: measured_rates(truth, run_expert(truth, ExpertProfile("e", jitter=jitter)))
        for jitter in (0.05, 0.1)
    }
    # each edge moves ~4% of the side on average: IoU about 0.85
    assert 0.8 < rates[0.05].mean_iou < 0.92
    assert rates[0.05].miss_rate < 0.002
    assert rates[0.1].mean_iou < rates[0.05].mean_iou


def test_default_panel_is_deterministic_and_its_experts_differ():
    panel = default_panel(5, seed=1)
    assert panel == default_panel(5, seed=1)
    assert panel != default_panel(5, seed=2)
    assert [p.name for p in panel] == [f"expert{i}" for i in range(1, 6)]
    assert panel[0].role == "senior"
    assert len({p.role for p in panel}) == 5
    senior = panel[0]
    assert all(senior.label_change_rate < p.label_change_rate for p in panel[1:])
    assert any(p.bias > 0.3 for p in panel) and any(p.bias < -0.3 for p in panel)
    assert any(p.miss_rate > 2 * senior.miss_rate for p in panel)


def test_default_panel_grows_past_its_archetypes():
    panel = default_panel(8, seed=0)
    assert len(panel) == len({p.name for p in panel}) == 8
    assert len(set(panel)) == 8


@pytest.mark.parametrize(
    "bad",
    [
        {"miss_rate": 1.5},
        {"label_change_rate": -0.1},
        {"adjacent_fraction": 2},
        {"bias": 1.2},
        {"spurious_rate": -1},
        {"jitter": float("nan")},
        {"miss_factors": (1, 1, 1)},
        {"spurious_label_weights": (0, 0, 0, 0, 0, 0)},
    ],
)
def test_profile_rejects_impossible_settings(bad):
    with pytest.raises(ValueError):
        ExpertProfile("e", **bad)


def test_panel_refuses_two_experts_with_one_name():
    with pytest.raises(ValueError, match="unique"):
        simulate_panel([], WIDTH, HEIGHT, [ExpertProfile("a"), ExpertProfile("a")], 0, 0)


def test_measured_rates_refuses_lists_of_different_lengths(truth):
    with pytest.raises(ValueError):
        measured_rates(truth[:3], truth[:2])
