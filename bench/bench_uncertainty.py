"""Active-learning selection: ranking by uncertainty and k-center greedy, on one core.

Embeddings: a mixture of 64 Gaussian clusters in D = 512 dimensions (float32, as the
classifier's pooled features come), cluster centres spread wider than the clusters.
Two figures, each against a baseline measured in the same run on the same data:

* ``uncertainty_kcenter_10k_ms``: N = 10,000, k = 32. Baseline: the naive greedy that
  recomputes the distance of every point to every centre at every step (O(N k^2 D)).
* ``uncertainty_kcenter_100k_s``: N = 100,000, k = 100, the size the platform must handle
  in well under a few seconds. Baseline: the same incremental O(N k D) greedy but with
  distances from explicit differences ((x - c)^2 summed, an N x D temporary per pick) instead
  of one matrix-vector product per pick.
* ``uncertainty_kcenter_1000_of_100k_s``: k = 1,000 of N = 100,000 embeddings of D = 256
  (issue 8's target: under 10 s). Baseline: the incremental greedy with one matrix-vector
  product over every point per pick (k_center_greedy before the triangle-inequality bound).
  The same pick on data with no cluster structure at all (i.i.d. Gaussian, where the bound
  skips almost nothing) is printed too: the worst case.
* ``uncertainty_rank_1m_s``: ranking 1,000,000 clusters (issue 8's target: under 2 s): for
  every strategy, validating the predictions, scoring and ranking all of them (``select``
  with k = N, ties by index); the figure is the slowest strategy (TTA strategies with T = 8
  augmentations). Baseline: the same entropy ranking written as a Python loop over clusters
  and ``sorted``.

Before timing, all three implementations must give identical picks on a float64 set; on the
float32 timing sets the agreement is printed (float32 rounding may reorder near-ties).
The scoring, ``select`` and ``select_diverse`` times at N = 100,000 are printed beside them.
Pinned to CPU 0 with one BLAS/OpenMP thread; wall time, best of a few runs.
Run: .venv/bin/python -m bench.bench_uncertainty
"""

from __future__ import annotations

import math
import os
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {0})

import numpy as np  # noqa: E402  (after the thread settings above)

from bench.common import best_time, report  # noqa: E402
from inference.strategies import STRATEGIES  # noqa: E402
from inference.uncertainty import Predictions, k_center_greedy, select, select_diverse  # noqa: E402

DIM = 512
N_CLUSTERS = 64


def make_embeddings(n: int, *, dim: int = DIM, seed: int = 0, dtype=np.float32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((N_CLUSTERS, dim), dtype=np.float32) * 4.0
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x += centres[rng.integers(N_CLUSTERS, size=n)]
    return x.astype(dtype, copy=False)


def _first_pick(x: np.ndarray) -> int:
    centred = x - x.mean(axis=0)
    return int(np.argmax((centred * centred).sum(axis=1)))


def naive_recompute_k_center(x: np.ndarray, k: int) -> list[int]:
    """Greedy k-center the naive way: every step recomputes all distances to all centres."""
    picks = [_first_pick(x)]
    while len(picks) < k:
        min_d = np.full(x.shape[0], np.inf)
        for c in picks:
            np.minimum(min_d, np.sqrt(((x - x[c]) ** 2).sum(axis=1)), out=min_d)
        min_d[picks] = -1.0
        picks.append(int(np.argmax(min_d)))
    return picks


def incremental_difference_k_center(x: np.ndarray, k: int) -> list[int]:
    """Incremental greedy k-center, distances from explicit differences (x - c)."""
    picks = [_first_pick(x)]
    min_sq = np.full(x.shape[0], np.inf)
    while len(picks) < k:
        diff = x - x[picks[-1]]
        np.minimum(min_sq, np.einsum("ij,ij->i", diff, diff), out=min_sq)
        min_sq[picks] = -1.0
        picks.append(int(np.argmax(min_sq)))
    return picks


def incremental_matvec_k_center(x: np.ndarray, k: int) -> list[int]:
    """Incremental greedy k-center, one matrix-vector product over all points per pick."""
    mean = x.mean(axis=0, dtype=np.float64)
    y_norms = np.einsum("ij,ij->i", x - mean.astype(x.dtype), x - mean.astype(x.dtype)).astype(np.float64)
    picks = [int(np.argmax(y_norms))]
    min_sq = np.full(x.shape[0], np.inf)
    while len(picks) < k:
        centred = x[picks[-1]].astype(np.float64) - mean
        sq = -2.0 * (x @ centred.astype(x.dtype)).astype(np.float64) + y_norms
        sq += y_norms[picks[-1]] + 2.0 * float(mean @ centred)
        np.minimum(min_sq, sq, out=min_sq)
        min_sq[picks] = -1.0
        picks.append(int(np.argmax(min_sq)))
    return picks


def check_same_picks() -> None:
    x = make_embeddings(3000, dim=64, seed=1, dtype=np.float64)
    fast = k_center_greedy(x, 40).tolist()
    for baseline in (naive_recompute_k_center, incremental_difference_k_center,
                     incremental_matvec_k_center):
        if baseline(x, 40) != fast:
            raise SystemExit(f"k_center_greedy and {baseline.__name__} disagree on float64 data")
    x = make_embeddings(20_000, dim=32, seed=5, dtype=np.float64)
    if k_center_greedy(x, 300).tolist() != incremental_matvec_k_center(x, 300):
        raise SystemExit("k_center_greedy and the full-pass greedy disagree on 300 picks")


def python_entropy_ranking(probs: np.ndarray) -> list[int]:
    """The baseline: score each cluster in a Python loop, then sorted()."""
    rows = probs.tolist()
    scores = [-sum(p * math.log(p) for p in row if p > 0.0) for row in rows]
    return sorted(range(len(scores)), key=lambda i: -scores[i])


def rank_all(probs, detector, tta, name: str) -> np.ndarray:
    strategy = STRATEGIES[name]
    pred = Predictions(probs, detector_scores=detector if "detector_scores" in strategy.requires else None,
                       tta_probabilities=tta if "tta_probabilities" in strategy.requires else None)
    scores = strategy.score(pred)
    return select(scores, len(scores), descending=strategy.descending)


def timed_picks(fn, *, repeat: int) -> tuple[float, list[int]]:
    result: list = []
    seconds = best_time(lambda: result.append(list(fn())), repeat=repeat)
    return seconds, result[-1]


def main() -> None:
    check_same_picks()
    print("float64 check: k_center_greedy, naive and incremental baselines give the same picks")

    x10 = make_embeddings(10_000, seed=2)
    fast10, picks_fast = timed_picks(lambda: k_center_greedy(x10, 32), repeat=5)
    slow10, picks_slow = timed_picks(lambda: naive_recompute_k_center(x10, 32), repeat=1)
    print(f"N=10,000 D={DIM} k=32: k_center_greedy {fast10 * 1e3:.1f} ms, naive recompute-all "
          f"{slow10 * 1e3:.1f} ms; same picks: {picks_fast == picks_slow}")

    x100 = make_embeddings(100_000, seed=3)
    fast100, picks_fast = timed_picks(lambda: k_center_greedy(x100, 100), repeat=3)
    slow100, picks_slow = timed_picks(
        lambda: incremental_difference_k_center(x100, 100), repeat=1
    )
    print(f"N=100,000 D={DIM} k=100: k_center_greedy {fast100:.2f} s, incremental with "
          f"explicit differences {slow100:.2f} s; same picks: {picks_fast == picks_slow}")

    rng = np.random.default_rng(4)
    probs = rng.dirichlet(np.full(6, 0.5), size=100_000)
    t_pred = best_time(lambda: Predictions(probs, embeddings=x100))
    pred = Predictions(probs, embeddings=x100)
    t_score = best_time(lambda: STRATEGIES["clinical_cost"].score(pred))
    scores = STRATEGIES["clinical_cost"].score(pred)
    t_select = best_time(lambda: select(scores, 100))
    t_diverse = best_time(lambda: select_diverse(scores, x100, 100, pool_factor=10))
    print(f"N=100,000: Predictions validation {t_pred * 1e3:.1f} ms, clinical_cost score "
          f"{t_score * 1e3:.1f} ms, select k=100 {t_select * 1e3:.1f} ms, select_diverse k=100 "
          f"pool 1000 {t_diverse * 1e3:.1f} ms")

    x256 = make_embeddings(100_000, dim=256, seed=6)
    fast1000, picks_fast = timed_picks(lambda: k_center_greedy(x256, 1000), repeat=2)
    slow1000, picks_slow = timed_picks(lambda: incremental_matvec_k_center(x256, 1000), repeat=1)
    print(f"N=100,000 D=256 k=1,000: k_center_greedy {fast1000:.2f} s, full pass per pick "
          f"{slow1000:.2f} s; same picks: {picks_fast == picks_slow}")
    plain = np.random.default_rng(7).standard_normal((100_000, 256), dtype=np.float32)
    worst = best_time(lambda: k_center_greedy(plain, 1000), repeat=1)
    print(f"  no cluster structure (i.i.d. Gaussian): k_center_greedy {worst:.2f} s")

    n_rank = 1_000_000
    rng = np.random.default_rng(8)
    probs_1m = rng.dirichlet(np.full(6, 0.5), size=n_rank)
    detector_1m = rng.random(n_rank)
    tta_1m = rng.dirichlet(np.full(6, 0.5), size=(n_rank, 8))
    rank_times = {}
    for name in STRATEGIES:
        rank_times[name] = best_time(lambda n=name: rank_all(probs_1m, detector_1m, tta_1m, n), repeat=2)
    print("N=1,000,000 ranked (validate + score + full ranking): " + ", ".join(
        f"{name} {t:.2f} s" for name, t in rank_times.items()))
    slowest = max(rank_times, key=rank_times.get)
    started = time.perf_counter()
    python_order = python_entropy_ranking(probs_1m)
    python_s = time.perf_counter() - started
    ours = rank_all(probs_1m, None, None, "entropy")
    agree = float(np.mean(np.asarray(python_order[:1000]) == ours[:1000]))
    print(f"  Python loop + sorted() entropy ranking: {python_s:.2f} s (top 1,000 agree: {agree:.3f})")

    report(
        "uncertainty_rank_1m_s",
        value=rank_times[slowest],
        unit="s",
        baseline="entropy ranking as a Python loop over clusters + sorted()",
        baseline_value=python_s,
        higher_is_better=False,
        config={"n": n_rank, "slowest_strategy": slowest, "tta_augmentations": 8,
                "per_strategy_s": rank_times, "target_s": 2.0, "cores": 1},
    )
    report(
        "uncertainty_kcenter_1000_of_100k_s",
        value=fast1000,
        unit="s",
        baseline="incremental greedy, one full matrix-vector pass per pick",
        baseline_value=slow1000,
        higher_is_better=False,
        config={"n": 100_000, "dim": 256, "k": 1000, "dtype": "float32", "clusters": N_CLUSTERS,
                "cores": 1, "target_s": 10.0, "no_structure_s": worst},
    )
    report(
        "uncertainty_kcenter_10k_ms",
        value=fast10 * 1e3,
        unit="ms",
        baseline="naive greedy recomputing all distances each step",
        baseline_value=slow10 * 1e3,
        higher_is_better=False,
        config={"n": 10_000, "dim": DIM, "k": 32, "dtype": "float32", "clusters": N_CLUSTERS,
                "cores": 1},
    )
    report(
        "uncertainty_kcenter_100k_s",
        value=fast100,
        unit="s",
        baseline="incremental greedy, explicit (x - c) differences",
        baseline_value=slow100,
        higher_is_better=False,
        config={"n": 100_000, "dim": DIM, "k": 100, "dtype": "float32",
                "clusters": N_CLUSTERS, "cores": 1, "target_s": 3.0,
                "select_diverse_ms_pool_1000": t_diverse * 1e3},
    )


if __name__ == "__main__":
    main()
