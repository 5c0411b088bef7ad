"""Active-learning uncertainty: the predictions strategies score, and the one shared selection.

Pure module (no Django, no TensorFlow): NumPy arrays in, NumPy arrays out. The inference
service builds a ``Predictions`` from the model's outputs, a strategy of the registry
(``inference.strategies``) scores every cluster, and the one shared ``select`` (or
``select_diverse``, which adds k-center diversity on the classifier's embeddings) picks the
clusters to review. ``aggregate_to_images`` turns cluster scores into image scores when whole
images are reviewed. Classes are the six Bethesda classes in their ordinal order
(``annotation.bethesda``), index 0 = NILM ... 5 = SCC.

Selection
    ``select(scores, k)`` ranks by score in the given direction and returns the first k
    indices. Scores are compared after rounding to ``tie_decimals`` (12) decimal places, so
    values that differ only by floating-point noise (the same distribution with its classes in
    another order) are ties. Ties go to the lower index (``tie_break="index"``, stable) or are
    shuffled by a seeded generator (``tie_break="random"``; ``rng`` a Generator or a seed,
    seed 0 when None), so a selection is always reproducible. ``k`` larger than the pool
    returns the whole pool, ranked; ``k < 1`` is an error. A NaN or infinite score, or an
    empty pool, is an error, never silently skipped.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from annotation.bethesda import NUM_CLASSES

#: Probabilities of one distribution must sum to 1 within this (float32 softmax outputs and
#: values rounded to four decimals both pass).
SUM_ATOL = 1e-3
#: Default number of candidates per pick that ``select_diverse`` keeps before k-center greedy.
DEFAULT_POOL_FACTOR = 10
#: Rows processed at a time when squared norms are computed (bounds the temporary memory).
_CHUNK_ROWS = 2048

TIE_BREAKS = ("index", "random")
AGGREGATIONS = ("max", "mean", "top_m_sum")


# --- predictions ---------------------------------------------------------------------------


def _as_readonly(values, name: str, *, keep_float_dtype: bool = False) -> np.ndarray:
    try:
        array = np.asarray(values)
        if not (keep_float_dtype and array.dtype in (np.float32, np.float64)):
            array = array.astype(np.float64, copy=False)  # float64 input is not copied
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from None
    view = array.view()  # read-only view: the caller's own array stays writable
    view.flags.writeable = False
    return view


def _first_row(mask: np.ndarray | np.bool_) -> int:
    return int(np.flatnonzero(mask)[0])


def _check_distributions(array: np.ndarray, name: str, where: Callable[[int], str]) -> None:
    """Each row of the 2-D ``array`` is finite, in [0, 1] and sums to 1 within SUM_ATOL."""
    if array.size:
        # Fast path, three passes over the data: NaN fails both comparisons, inf the range;
        # only a failing array goes through the row-by-row checks that name the bad rows.
        low, high = array.min(), array.max()
        if low >= 0.0 and high <= 1.0:
            sums = array @ np.ones(array.shape[1])
            if np.abs(sums - 1.0).max() <= SUM_ATOL:
                return
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        i = _first_row(bad)
        raise ValueError(
            f"{name}: non-finite values (NaN or inf) in {int(bad.sum())} of {bad.size} rows; "
            f"the first is {where(i)}: {array[i].tolist()}"
        )
    bad = ((array < 0.0) | (array > 1.0)).any(axis=1)
    if bad.any():
        i = _first_row(bad)
        raise ValueError(
            f"{name}: values outside [0, 1] in {int(bad.sum())} of {bad.size} rows; the first "
            f"is {where(i)}: {array[i].tolist()}"
        )
    sums = array.sum(axis=1)
    bad = np.abs(sums - 1.0) > SUM_ATOL
    if bad.any():
        i = _first_row(bad)
        raise ValueError(
            f"{name}: rows not summing to 1 (tolerance {SUM_ATOL}): {int(bad.sum())} of "
            f"{bad.size}; the first is {where(i)}, summing to {sums[i]:.6g}: {array[i].tolist()}"
        )


@dataclass(frozen=True)
class Predictions:
    """What the model said about N clusters, validated on construction.

    probabilities      (N, 6) one distribution over the Bethesda classes per cluster.
    detector_scores    (N,) optional: the detector's confidence in [0, 1] that the cluster is
                       atypical (any of ASC-US..SCC).
    embeddings         (N, D) optional: pooled classifier features (float32 kept as float32).
    tta_probabilities  (N, T, 6) optional: the distributions under T >= 2 test-time
                       augmentations.

    Arrays are stored as read-only views (float64, except float32 embeddings); an input that
    already has that dtype is not copied, so the caller should not write to it afterwards (a
    million clusters with 36 TTA variants is 1.7 GB). N may be 0 (an
    empty pool): strategies then return no scores and ``select`` refuses the empty pool.
    Invalid input raises ValueError naming the field and the first bad row.
    """

    probabilities: np.ndarray
    detector_scores: np.ndarray | None = None
    embeddings: np.ndarray | None = None
    tta_probabilities: np.ndarray | None = None

    def __post_init__(self) -> None:
        probs = _as_readonly(self.probabilities, "probabilities")
        if probs.ndim != 2 or probs.shape[1] != NUM_CLASSES:
            raise ValueError(
                f"probabilities must have shape (N, {NUM_CLASSES}), got {probs.shape}"
            )
        _check_distributions(probs, "probabilities", lambda i: f"row {i}")
        object.__setattr__(self, "probabilities", probs)
        n = probs.shape[0]

        if self.detector_scores is not None:
            det = _as_readonly(self.detector_scores, "detector_scores")
            if det.shape != (n,):
                raise ValueError(f"detector_scores must have shape ({n},), got {det.shape}")
            bad = ~np.isfinite(det) | (det < 0.0) | (det > 1.0)
            if bad.any():
                i = _first_row(bad)
                raise ValueError(
                    f"detector_scores: not finite or outside [0, 1] in {int(bad.sum())} of {n} "
                    f"rows; the first is row {i}: {float(det[i])}"
                )
            object.__setattr__(self, "detector_scores", det)

        if self.embeddings is not None:
            emb = _as_readonly(self.embeddings, "embeddings", keep_float_dtype=True)
            if emb.ndim != 2 or emb.shape[0] != n or emb.shape[1] < 1:
                raise ValueError(f"embeddings must have shape ({n}, D) with D >= 1, got {emb.shape}")
            bad = ~np.isfinite(emb).all(axis=1)
            if bad.any():
                raise ValueError(
                    f"embeddings: non-finite values (NaN or inf) in {int(bad.sum())} of {n} "
                    f"rows; the first is row {_first_row(bad)}"
                )
            object.__setattr__(self, "embeddings", emb)

        if self.tta_probabilities is not None:
            tta = _as_readonly(self.tta_probabilities, "tta_probabilities")
            if tta.ndim != 3 or tta.shape[0] != n or tta.shape[2] != NUM_CLASSES:
                raise ValueError(
                    f"tta_probabilities must have shape ({n}, T, {NUM_CLASSES}), got {tta.shape}"
                )
            t = tta.shape[1]
            if t < 2:
                raise ValueError(
                    f"tta_probabilities needs at least 2 augmentations per cluster, got T={t}"
                )
            _check_distributions(
                tta.reshape(n * t, NUM_CLASSES),
                "tta_probabilities",
                lambda j: f"row {j // t}, augmentation {j % t}",
            )
            object.__setattr__(self, "tta_probabilities", tta)

    def __len__(self) -> int:
        return int(self.probabilities.shape[0])


# --- selection -----------------------------------------------------------------------------


def _check_scores(scores, name: str = "scores") -> np.ndarray:
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (one per cluster), got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"the pool is empty: no {name} to select from")
    bad = ~np.isfinite(array)
    if bad.any():
        raise ValueError(
            f"non-finite {name} (NaN or inf): {int(bad.sum())} of {array.size}; the first at "
            f"index {_first_row(bad)}"
        )
    return array


def _check_k(k) -> int:
    try:
        k = operator.index(k)
    except TypeError:
        raise TypeError(f"k must be an integer, got {type(k).__name__}") from None
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return k


def _ranking(
    scores: np.ndarray, *, descending: bool, tie_break: str, rng, tie_decimals: int | None
) -> np.ndarray:
    """All indices, most uncertain first, ties resolved as documented in ``select``."""
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"tie_break must be one of {', '.join(TIE_BREAKS)}, got {tie_break!r}")
    key = scores if tie_decimals is None else np.round(scores, tie_decimals)
    key = -key if descending else key
    if tie_break == "index":
        return np.argsort(key, kind="stable")
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(
        0 if rng is None else rng
    )
    shuffled = generator.permutation(scores.size)
    return shuffled[np.argsort(key[shuffled], kind="stable")]


def select(
    scores,
    k: int,
    *,
    descending: bool = True,
    rng: np.random.Generator | int | None = None,
    tie_break: str = "index",
    tie_decimals: int | None = 12,
) -> np.ndarray:
    """Indices of the k most uncertain items, most uncertain first.

    ``descending`` True: higher scores win (use the strategy's ``descending``). Scores equal
    after rounding to ``tie_decimals`` decimals (None: exact equality) are ties, resolved by
    ``tie_break``: "index" (lower index first; stable) or "random" (a shuffle drawn from
    ``rng``, a Generator or a seed; seed 0 when None, so still reproducible).
    ``k`` above the pool size returns every index, ranked. Raises ValueError for an empty
    pool, k < 1, non-1-D scores, or NaN/inf scores (naming how many and the first index).
    """
    array = _check_scores(scores)
    k = _check_k(k)
    order = _ranking(
        array, descending=descending, tie_break=tie_break, rng=rng, tie_decimals=tie_decimals
    )
    return order[:k]


# --- diversity -----------------------------------------------------------------------------


def _check_embeddings(embeddings) -> np.ndarray:
    array = np.asarray(embeddings)
    if array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float64)
    if array.ndim != 2 or array.shape[1] < 1:
        raise ValueError(f"embeddings must have shape (N, D) with D >= 1, got {array.shape}")
    if array.shape[0] == 0:
        raise ValueError("the pool is empty: no embeddings to select from")
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        raise ValueError(
            f"embeddings: non-finite values (NaN or inf) in {int(bad.sum())} of {bad.size} rows; "
            f"the first is row {_first_row(bad)}"
        )
    return array


def _check_indices(indices, n: int, name: str) -> np.ndarray:
    array = np.asarray(indices if indices is not None else [], dtype=np.int64).ravel()
    outside = (array < 0) | (array >= n)
    if outside.any():
        raise ValueError(f"{name} holds indices outside 0..{n - 1}: {array[outside][:5].tolist()}")
    return np.unique(array)


def _centered_sq_norms(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """||x_i - mean||^2, in the embeddings' precision, row chunk by row chunk (no N x D
    temporary)."""
    out = np.empty(x.shape[0], dtype=np.float64)
    shift = mean.astype(x.dtype)
    for lo in range(0, x.shape[0], _CHUNK_ROWS):
        block = x[lo:lo + _CHUNK_ROWS] - shift
        out[lo:lo + _CHUNK_ROWS] = np.einsum("ij,ij->i", block, block)
    return out


def k_center_greedy(
    embeddings,
    k: int,
    *,
    already_selected: Sequence[int] | np.ndarray | None = None,
    candidates_scores=None,
    descending: bool = True,
) -> np.ndarray:
    """Greedy k-center on Euclidean distances: indices of k points, in the order picked.

    Each step picks the point farthest from everything picked so far (and from
    ``already_selected``, indices of points that count as centres but are never returned),
    the greedy 2-approximation of the k-center problem (Gonzalez 1985; the "core-set"
    active-learning selection of Sener & Savarese 2018). The first pick, when nothing is
    already selected, is the best-ranked candidate by ``candidates_scores`` (in the
    ``descending`` direction, ties as ``select``) or, without scores, the point farthest from
    the mean of all embeddings. Exact distance ties go to the better-ranked candidate when
    scores are given, else to the lower index. ``k`` above the number of points not already
    selected returns them all. Deterministic: no randomness.

    Cost: at most O(N D) per pick, with one matrix-vector product using
    ||x - c||^2 = ||x||^2 + ||c||^2 - 2 x.c on mean-centred vectors (centring keeps the
    cancellation small); float32 embeddings stay float32 (no float64 copy of the matrix), so
    two distances closer than about 1e-6 relative may rank either way. A new centre c only
    needs the points it can come nearer to: by the triangle inequality a point x whose
    nearest centre a has ||a - c|| >= 2 ||x - a|| cannot be nearer to c, so those points are
    skipped (the bound of Elkan's accelerated k-means); once the centres cover the data, a pick
    touches only its own neighbourhood. The picks are the same as without the bound. Memory
    O(N + k D) beyond the embeddings.
    """
    x = _check_embeddings(embeddings)
    k = _check_k(k)
    n = x.shape[0]
    chosen_before = _check_indices(already_selected, n, "already_selected")
    if candidates_scores is not None:
        scores = _check_scores(candidates_scores, "candidates_scores")
        if scores.shape != (n,):
            raise ValueError(
                f"candidates_scores must have one score per embedding ({n}), got {scores.size}"
            )
        # priority[i] = position of i in the ranking: lower is better.
        priority = np.empty(n, dtype=np.int64)
        priority[_ranking(scores, descending=descending, tie_break="index", rng=None,
                          tie_decimals=12)] = np.arange(n)
    else:
        priority = None

    available = n - chosen_before.size
    k = min(k, available)
    if k <= 0:
        return np.empty(0, dtype=np.int64)

    mean = x.mean(axis=0, dtype=np.float64)
    sq_norms = _centered_sq_norms(x, mean)
    # min squared distance to the picked centres; -1 marks a picked point (never picked again)
    min_sq = np.full(n, np.inf)
    # which centre (position in `centres`) is nearest to each point so far
    nearest = np.zeros(n, dtype=np.int32)
    centres = np.empty((k + chosen_before.size, x.shape[1]), dtype=np.float64)  # mean-centred
    n_centres = 0

    def add_centre(c: int) -> None:
        nonlocal n_centres
        centred = x[c].astype(np.float64) - mean
        if n_centres:
            # points whose nearest centre a is at least 2 * their distance from the new one
            # cannot come nearer (triangle inequality); a little slack keeps rounding out.
            gap = centres[:n_centres] - centred
            between = np.einsum("ij,ij->i", gap, gap)
            rows = np.flatnonzero(between[nearest] < 4.0 * (1.0 + 1e-6) * min_sq)
        else:
            rows = None
        if rows is None or rows.size > n // 2:
            rows, dots = None, x @ centred.astype(x.dtype, copy=False)  # one pass over x
        else:
            dots = x[rows] @ centred.astype(x.dtype, copy=False)
        # ||y_i - y_c||^2 = ||y_i||^2 + ||y_c||^2 - 2 y_i.y_c with y = x - mean, in place
        sq = np.multiply(dots, -2.0, dtype=np.float64)
        sq += sq_norms if rows is None else sq_norms[rows]
        sq += sq_norms[c] + 2.0 * float(mean @ centred)
        np.maximum(sq, 0.0, out=sq)
        current = min_sq if rows is None else min_sq[rows]
        closer = sq < current
        where = np.flatnonzero(closer) if rows is None else rows[closer]
        min_sq[where] = sq[closer]
        nearest[where] = n_centres
        centres[n_centres] = centred
        n_centres += 1
        min_sq[c] = -1.0

    for c in chosen_before:
        add_centre(int(c))

    picks = np.empty(k, dtype=np.int64)
    for step in range(k):
        if step == 0 and chosen_before.size == 0:
            if priority is not None:
                pick = int(np.argmin(priority))
            else:
                pick = int(np.argmax(sq_norms))
        else:
            best = min_sq.max()
            pick = int(np.argmax(min_sq))  # lowest index among exact ties
            if priority is not None:
                tied = np.flatnonzero(min_sq == best)
                if tied.size > 1:
                    pick = int(tied[np.argmin(priority[tied])])
        picks[step] = pick
        if step < k - 1:
            add_centre(pick)
        else:
            min_sq[pick] = -1.0
    return picks


def select_diverse(
    scores,
    embeddings,
    k: int,
    *,
    descending: bool = True,
    pool_factor: float = DEFAULT_POOL_FACTOR,
    already_selected: Sequence[int] | np.ndarray | None = None,
    tie_break: str = "index",
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """Uncertain and diverse: the top ``ceil(pool_factor * k)`` items by score (``select``,
    same tie rules), then ``k_center_greedy`` among them, starting from the most uncertain.

    Works with any strategy's scores. ``already_selected`` (indices into ``scores``) are left
    out of the candidates but count as centres, so new picks keep away from them.
    ``pool_factor`` 1 is plain top-k; larger trades uncertainty for coverage. Returns indices
    into ``scores`` in the order picked; k above the pool returns every candidate.
    """
    array = _check_scores(scores)
    k = _check_k(k)
    x = _check_embeddings(embeddings)
    n = array.size
    if x.shape[0] != n:
        raise ValueError(f"embeddings has {x.shape[0]} rows for {n} scores")
    try:
        factor = float(pool_factor)
    except (TypeError, ValueError):
        factor = math.nan
    if not (math.isfinite(factor) and factor >= 1.0):
        raise ValueError(f"pool_factor must be a finite number >= 1, got {pool_factor!r}")
    before = _check_indices(already_selected, n, "already_selected")
    order = _ranking(array, descending=descending, tie_break=tie_break, rng=rng, tie_decimals=12)
    if before.size:
        order = order[~np.isin(order, before)]
        if order.size == 0:
            raise ValueError("the pool is empty: every item is already selected")
    pool = order[: min(order.size, math.ceil(factor * k))]
    subset = np.concatenate([pool, before])
    local = k_center_greedy(
        x[subset],
        k,
        already_selected=np.arange(pool.size, subset.size),
        candidates_scores=-np.arange(subset.size, dtype=np.float64),  # rank order
    )
    return subset[local]


# --- images --------------------------------------------------------------------------------


def aggregate_to_images(
    scores,
    image_ids,
    *,
    how: str = "max",
    top_m: int = 3,
    descending: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Image scores from cluster scores: returns (image ids, sorted; one score per image).

    ``how``: "max" -- the image's most uncertain cluster (the minimum when ``descending`` is
    False, e.g. margin); "mean" -- the mean over its clusters; "top_m_sum" -- the sum of its
    ``top_m`` most uncertain clusters (all of them when it has fewer, so an image with more
    uncertain clusters ranks higher). The image scores keep the strategy's direction: pass
    the same ``descending`` to ``select``.
    """
    array = _check_scores(scores)
    if how not in AGGREGATIONS:
        raise ValueError(f"how must be one of {', '.join(AGGREGATIONS)}, got {how!r}")
    ids = np.asarray(image_ids)
    if ids.shape != array.shape:
        raise ValueError(f"image_ids must have one id per score ({array.size}), got shape {ids.shape}")
    top_m = _check_k(top_m)
    unique, inverse = np.unique(ids, return_inverse=True)
    inverse = inverse.ravel()
    counts = np.bincount(inverse, minlength=unique.size)
    if how == "mean":
        return unique, np.bincount(inverse, weights=array, minlength=unique.size) / counts
    oriented = array if descending else -array
    # grouped by image, most uncertain first within an image
    order = np.lexsort((-oriented, inverse))
    group_start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    if how == "max":
        return unique, array[order[group_start]]
    rank_in_group = np.arange(array.size) - np.repeat(group_start, counts)
    keep = order[rank_in_group < top_m]
    return unique, np.bincount(inverse[keep], weights=array[keep], minlength=unique.size)
