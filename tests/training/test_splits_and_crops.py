"""Splits by image (no leakage, stratified, deterministic) and cluster crops."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from annotation.crops import crop_box, crops_for_image
from annotation.geometry import Box
from training.splits import image_grade, stratified_split


@given(st.lists(st.integers(0, 5), min_size=1, max_size=300), st.integers(0, 10_000))
@settings(max_examples=60, deadline=None)
def test_every_image_lands_in_exactly_one_split(grades, seed):
    ids = list(range(1000, 1000 + len(grades)))
    splits = stratified_split(ids, grades, seed=seed)
    seen = splits["train"] + splits["val"] + splits["test"]
    assert sorted(seen) == ids  # no image twice, none lost: no crop of one image in two splits


def test_split_is_70_15_15_and_stratified_by_grade():
    rng = np.random.default_rng(1)
    grades = list(rng.integers(0, 6, size=1000))
    ids = list(range(1000))
    splits = stratified_split(ids, grades, seed=3)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [700, 150, 150]
    by_id = dict(zip(ids, grades, strict=True))
    for grade in range(6):
        total = grades.count(grade)
        share = sum(by_id[i] == grade for i in splits["train"]) / total
        assert share == pytest.approx(0.7, abs=0.03)


def test_split_is_fixed_for_a_seed_and_changes_with_it():
    grades = [i % 6 for i in range(60)]
    ids = list(range(60))
    assert stratified_split(ids, grades, seed=5) == stratified_split(ids, grades, seed=5)
    assert stratified_split(ids, grades, seed=5) != stratified_split(ids, grades, seed=6)


def test_split_refuses_bad_input():
    with pytest.raises(ValueError):
        stratified_split([1, 1], [0, 0])
    with pytest.raises(ValueError):
        stratified_split([1, 2], [0])
    with pytest.raises(ValueError):
        stratified_split([1, 2], [0, 0], ratios=(0.5, 0.5, 0.5))


def test_image_grade_is_the_most_severe_label():
    assert image_grade([0, 4, 2]) == 4 and image_grade([]) == 0


def test_crop_is_square_with_margin_and_padded_at_the_border():
    image = np.zeros((100, 200, 3), dtype=np.uint8)
    image[40:60, 90:110] = 255
    crop = crop_box(image, Box(90.0, 40.0, 20.0, 20.0, "HSIL"), size=32, margin=0.5)
    assert crop.shape == (32, 32, 3) and crop.dtype == np.uint8
    assert crop[16, 16].tolist() == [255, 255, 255] and crop[1, 1].tolist() == [0, 0, 0]
    edge = crop_box(image, Box(0.0, 0.0, 10.0, 30.0, "NILM"), size=16)
    assert edge.shape == (16, 16, 3)
    assert crops_for_image(image, [], size=8).shape == (0, 8, 8, 3)
