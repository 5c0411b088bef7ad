"""Synthetic Pap image generator: seconds per full-size (1636x1088) image.

Baseline, measured in the same run on the same scenes: the naive renderer (each cell composited
through a full-frame float layer instead of only into its own region of interest). Both draw the
same picture; this run checks that before timing. Run: .venv/bin/python -m bench.bench_synthetic
"""

from __future__ import annotations

import numpy as np

from annotation.synthetic import SyntheticConfig, generate_image
from bench.common import best_time, report

SEEDS = (1, 2, 3, 4)


def _render_all(config: SyntheticConfig, full_frame: bool) -> None:
    for seed in SEEDS:
        generate_image(seed, config, full_frame=full_frame)


def main() -> None:
    config = SyntheticConfig()
    worst = 0
    for seed in SEEDS[:2]:
        fast = generate_image(seed, config)
        slow = generate_image(seed, config, full_frame=True)
        if fast.boxes != slow.boxes:
            raise SystemExit(f"seed {seed}: the two renderers disagree on boxes")
        worst = max(worst, int(np.abs(fast.image.astype(int) - slow.image.astype(int)).max()))
    if worst > 1:
        raise SystemExit(f"the two renderers differ by up to {worst} grey levels")

    fast_s = best_time(lambda: _render_all(config, False), repeat=3) / len(SEEDS)
    naive_s = best_time(lambda: _render_all(config, True), repeat=2) / len(SEEDS)
    print(f"{'renderer':<34} {'s/image':>9} {'images/s':>9}")
    print(f"{'region of interest per cell':<34} {fast_s:>9.3f} {1 / fast_s:>9.2f}")
    print(f"{'naive: full-frame layer per cell':<34} {naive_s:>9.3f} {1 / naive_s:>9.2f}")
    print(f"pictures identical up to {worst} grey level(s) on seeds {SEEDS[:2]}")
    report(
        "synthetic_seconds_per_image",
        value=fast_s,
        unit="s/image",
        baseline="naive full-frame compositing",
        baseline_value=naive_s,
        higher_is_better=False,
        config={
            "width": config.width,
            "height": config.height,
            "seeds": list(SEEDS),
            "images_per_second": 1 / fast_s,
            "baseline_images_per_second": 1 / naive_s,
            "max_abs_difference": worst,
        },
    )


if __name__ == "__main__":
    main()
