"""Active-learning selection: k-center greedy on classifier embeddings, on one core.

Embeddings: a mixture of 64 Gaussian clusters in D = 512 dimensions (float32, as the
classifier's pooled features come), cluster centres spread wider than the clusters.
Two figures, each against a baseline measured in the same run on the same data:

* ``uncertainty_kcenter_10k_ms``: N = 10,000, k = 32. Baseline: the naive greedy that
  recomputes the distance of every point to every centre at every step (O(N k^2 D)).
* ``uncertainty_kcenter_100k_s``: N = 100,000, k = 100, the size the platform must handle
  in well under a few seconds. Baseline: the same incremental O(N k D) greedy but with
  distances from explicit differences ((x - c)^2 summed, an N x D temporary per pick) instead
  of one matrix-vector product per pick.

Before timing, all three implementations must give identical picks on a float64 set; on the
float32 timing sets the agreement is printed (float32 rounding may reorder near-ties).
The scoring, ``select`` and ``select_diverse`` times at N = 100,000 are printed beside them.
Pinned to CPU 0 with one BLAS/OpenMP thread; wall time, best of a few runs.
Run: .venv/bin/python -m bench.bench_uncertainty
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {0})

import numpy as np  # noqa: E402  (after the thread settings above)

from bench.common import best_time, report  # noqa: E402
from inference.uncertainty import (  # noqa: E402
    STRATEGIES,
    Predictions,
    k_center_greedy,
    select,
    select_diverse,
)

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


def check_same_picks() -> None:
    x = make_embeddings(3000, dim=64, seed=1, dtype=np.float64)
    fast = k_center_greedy(x, 40).tolist()
    for baseline in (naive_recompute_k_center, incremental_difference_k_center):
        if baseline(x, 40) != fast:
            raise SystemExit(f"k_center_greedy and {baseline.__name__} disagree on float64 data")


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
