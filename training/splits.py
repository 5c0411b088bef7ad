"""Train/validation/test split by image, stratified by grade (pure; no Django import).

An image's grade is the most severe label among its ground-truth boxes (NILM when it has
none). Within each grade the images are shuffled with the seed and cut 70/15/15 (rounding so
that every split gets its share over the whole set); no image is in two splits, so no crop of
one image can leak between training and evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SPLITS = ("train", "val", "test")


def image_grade(labels: Sequence[int]) -> int:
    return max(labels) if len(labels) else 0


def stratified_split(
    image_ids: Sequence[int],
    grades: Sequence[int],
    *,
    ratios: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
) -> dict[str, list[int]]:
    """{"train": [...], "val": [...], "test": [...]} of image ids, deterministic for a seed."""
    if len(image_ids) != len(grades):
        raise ValueError("one grade per image is needed")
    if len(set(image_ids)) != len(image_ids):
        raise ValueError("image ids must be unique")
    if any(r < 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-9:
        raise ValueError(f"ratios must be non-negative and sum to 1, got {ratios}")
    rng = np.random.default_rng(seed)
    out: dict[str, list[int]] = {name: [] for name in SPLITS}
    carry = np.zeros(3)  # fractional shares carried between grades keep the totals on target
    for grade in sorted(set(grades)):
        members = sorted(i for i, g in zip(image_ids, grades, strict=True) if g == grade)
        members = [members[k] for k in rng.permutation(len(members))]
        want = np.array(ratios) * len(members) + carry
        counts = np.floor(want).astype(int)
        # hand out the remainder to the largest fractional parts, train first on ties
        for k in np.argsort(-(want - counts), kind="stable")[: len(members) - counts.sum()]:
            counts[k] += 1
        carry = want - counts
        start = 0
        for name, n in zip(SPLITS, counts, strict=True):
            out[name].extend(members[start:start + n])
            start += n
    return {name: sorted(ids) for name, ids in out.items()}
