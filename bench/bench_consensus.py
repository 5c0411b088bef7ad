"""Consensus merge: images per second on one core, 3 experts x 20 boxes per image.

Scenes: 20 true cell clusters per 1636x1088 image, none touching another. Each expert draws
every cluster with a few pixels of jitter, misses one with probability 0.1 (drawing instead a
spurious box on an empty spot, so every expert has 20 boxes) and gives an adjacent Bethesda
grade with probability 0.15. Baseline, measured in the same run on the same scenes:
``naive_merge`` (plain Python, all pairs, greedy assignment). The run first checks that both
give the same clusters. Pinned to CPU 0 with one BLAS/OpenMP thread. The reported figure is
wall time (best of several runs per batch of images); CPU time is printed beside it and kept
in the JSON's config, since on a shared machine other processes take turns on core 0.
Run: .venv/bin/python -m bench.bench_consensus
"""

from __future__ import annotations

import os
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {0})

import numpy as np  # noqa: E402  (after the thread settings above)

from annotation.bethesda import BETHESDA  # noqa: E402
from annotation.consensus import ConsensusConfig, merge, naive_merge  # noqa: E402
from annotation.geometry import Box  # noqa: E402
from bench.common import report  # noqa: E402

WIDTH, HEIGHT = 1636, 1088
N_IMAGES = 300
CHUNK = 25  # images per timed batch
N_CLUSTERS = 20
N_SPOTS = 40  # 20 true clusters + empty spots where spurious boxes go
EXPERTS = ("expert-a", "expert-b", "expert-c")
P_MISS, P_RELABEL, JITTER = 0.1, 0.15, 4.0


def _spots(rng: np.random.Generator) -> np.ndarray:
    """N_SPOTS non-touching boxes (x, y, w, h), 50 to 150 px a side, 10 px apart at least."""
    spots: list[tuple[float, float, float, float]] = []
    while len(spots) < N_SPOTS:
        w, h = rng.uniform(50, 150, size=2)
        x, y = rng.uniform(0, WIDTH - w), rng.uniform(0, HEIGHT - h)
        if all(
            x + w + 10 < sx or sx + sw + 10 < x or y + h + 10 < sy or sy + sh + 10 < y
            for sx, sy, sw, sh in spots
        ):
            spots.append((x, y, w, h))
    return np.array(spots)


def make_image(seed: int) -> dict[str, list[Box]]:
    rng = np.random.default_rng(seed)
    spots = _spots(rng)
    truth = rng.choice(len(BETHESDA) - 1, size=N_CLUSTERS) + 1  # an atypical class
    annotations = {}
    for expert in EXPERTS:
        spare = list(rng.permutation(np.arange(N_CLUSTERS, N_SPOTS)))
        boxes = []
        for k in range(N_CLUSTERS):
            label = int(truth[k])
            if rng.random() < P_MISS:
                k, label = int(spare.pop()), int(rng.integers(1, len(BETHESDA)))
            elif rng.random() < P_RELABEL:
                label = int(np.clip(label + rng.choice((-1, 1)), 0, len(BETHESDA) - 1))
            x, y, w, h = spots[k] + rng.uniform(-JITTER, JITTER, size=4)
            boxes.append(Box(float(x), float(y), float(w), float(h), BETHESDA[label]))
        order = rng.permutation(len(boxes))  # experts draw in no particular order
        annotations[expert] = [boxes[i] for i in order]
    return annotations


def _seconds_per_image(fn, images, config, *, repeat: int) -> tuple[float, float]:
    """(wall, CPU) seconds per image: batches of CHUNK images, each batch's best of ``repeat``
    runs (on a shared machine an interruption then spoils one try of one batch, not the
    figure). CPU time (time.process_time) leaves out time the core spent on other processes."""
    wall = cpu = 0.0
    for lo in range(0, len(images), CHUNK):
        batch = images[lo:lo + CHUNK]
        best_wall = best_cpu = float("inf")
        for _ in range(repeat):
            w0, c0 = time.perf_counter(), time.process_time()
            for image in batch:
                fn(image, config=config)
            best_wall = min(best_wall, time.perf_counter() - w0)
            best_cpu = min(best_cpu, time.process_time() - c0)
        wall += best_wall
        cpu += best_cpu
    return wall / len(images), cpu / len(images)


def main() -> None:
    config = ConsensusConfig()
    images = [make_image(seed) for seed in range(N_IMAGES)]
    for seed, image in enumerate(images):
        fast, slow = merge(image, config=config), naive_merge(image, config=config)
        if [c.members for c in fast] != [c.members for c in slow] or [
            (c.label, c.reasons) for c in fast
        ] != [(c.label, c.reasons) for c in slow]:
            raise SystemExit(f"image {seed}: merge and naive_merge disagree")
    clusters = [merge(image, config=config) for image in images]
    n_clusters = sum(len(c) for c in clusters) / N_IMAGES
    agreed = sum(c.status == "agreed" for cs in clusters for c in cs) / (n_clusters * N_IMAGES)

    fast_s, fast_cpu = _seconds_per_image(merge, images, config, repeat=7)
    slow_s, slow_cpu = _seconds_per_image(naive_merge, images, config, repeat=3)
    print(f"{'implementation':<40} {'ms/image':>9} {'images/s':>9} {'CPU images/s':>13}")
    for name, wall, cpu in (
        ("merge (numpy IoU matrix + Hungarian)", fast_s, fast_cpu),
        ("naive_merge (Python all pairs, greedy)", slow_s, slow_cpu),
    ):
        print(f"{name:<40} {wall * 1e3:>9.3f} {1 / wall:>9.0f} {1 / cpu:>13.0f}")
    print(f"{N_IMAGES} images, {len(EXPERTS)} experts x {N_CLUSTERS} boxes; "
          f"{n_clusters:.1f} clusters/image, {agreed:.0%} agreed; both give the same clusters")
    report(
        "consensus_merge_images_per_s",
        value=1 / fast_s,
        unit="images/s",
        baseline="naive_merge (pure Python, greedy)",
        baseline_value=1 / slow_s,
        config={
            "images": N_IMAGES,
            "experts": len(EXPERTS),
            "boxes_per_expert": N_CLUSTERS,
            "true_clusters": N_CLUSTERS,
            "p_miss": P_MISS,
            "p_relabel": P_RELABEL,
            "jitter_px": JITTER,
            "cores": 1,
            "clusters_per_image": n_clusters,
            "agreed_fraction": agreed,
            "target_images_per_s": 2000,
            "cpu_time_images_per_s": 1 / fast_cpu,
            "baseline_cpu_time_images_per_s": 1 / slow_cpu,
        },
    )


if __name__ == "__main__":
    main()
