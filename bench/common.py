"""Shared helpers for benchmarks: a readable line on stdout and one JSON file per figure.

Each figure is written to var/bench/NAME.json as {"name", "value", "unit", "baseline",
"baseline_value", "ratio", "device", "config"}; the baseline is measured in the same run.
"""

from __future__ import annotations

import json
import os
import platform as stdlib_platform
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = Path(os.environ.get("BENCH_OUT", ROOT / "var" / "bench"))


def device_name() -> str:
    return f"{stdlib_platform.processor() or stdlib_platform.machine()} ({os.cpu_count()} cores)"


def tf_device() -> tuple[str, bool]:
    """(the device TensorFlow will run on, in words; whether it is a GPU)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"{details.get('device_name', 'GPU')} (TensorFlow {tf.__version__})", True
    return f"{device_name()}, CPU only (TensorFlow {tf.__version__})", False


def best_time(fn: Callable[[], object], *, repeat: int = 3, number: int = 1) -> float:
    """Best wall time in seconds of ``number`` calls, over ``repeat`` tries (noise only adds time)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best


def report(
    name: str,
    *,
    value: float,
    unit: str,
    baseline: str,
    baseline_value: float,
    config: dict | None = None,
    device: str | None = None,
    higher_is_better: bool = True,
) -> dict:
    """Print one figure and write var/bench/NAME.json. ratio = how many times better than baseline."""
    if higher_is_better:
        ratio = value / baseline_value if baseline_value else float("inf")
    else:
        ratio = baseline_value / value if value else float("inf")
    record = {
        "name": name,
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "baseline_value": baseline_value,
        "ratio": ratio,
        "device": device or device_name(),
        "config": config or {},
    }
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    print(
        f"{name:<40} {value:>12.4g} {unit:<12} baseline {baseline}: {baseline_value:.4g} {unit}"
        f"  ratio x{ratio:.2f}"
    )
    return record
