"""The paper's classifier ablation (section 3, Table 2's validation column): the same data and
seeds trained three ways, without oversampling, with the 36x oversampling, and with
oversampling plus ordinal label smoothing; macro-F1 as mean +- sd over seeds.

Pure module (no Django): the caller hands it one ClassifierData per seed (a split by image for
that seed), so each seed is a different fold of images and every variant sees the same fold.
Every variant gets the same number of optimizer steps (``optim.steps_per_epoch`` x ``epochs``),
so oversampling is compared at equal compute, not by giving it 36x more batches.

The paper (validation F-measure, its private dataset): 44.0 +- 3.3 without oversampling,
+10.0 points with oversampling, +7.1 more with label smoothing, 61.1 +- 3.6.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.classifier.config import ClassifierRunConfig
from training.smoothing import TargetConfig

#: the paper's validation macro F-measure (%) for each variant, for the table's last column
PAPER_VALIDATION_F1 = {"no oversampling": (44.0, 3.3), "oversampling": (54.0, None),
                       "oversampling + label smoothing": (61.1, 3.6)}


@dataclass(frozen=True)
class Variant:
    name: str
    oversample: bool
    targets: TargetConfig


def variants(n: float = 2, normalize: bool = True) -> tuple[Variant, ...]:
    onehot = TargetConfig(kind="onehot")
    return (
        Variant("no oversampling", False, onehot),
        Variant("oversampling", True, onehot),
        Variant("oversampling + label smoothing", True, TargetConfig(kind="ordinal", n=n, normalize=normalize)),
    )


@dataclass
class AblationResult:
    seeds: list[int]
    variants: list[str]
    val_f1: dict[str, list[float]]  # best validation macro-F1 per seed
    test_f1: dict[str, list[float]]  # test macro-F1 of the best-validation weights per seed
    config: dict
    data_sizes: list[dict]

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def variant_config(base: ClassifierRunConfig, variant: Variant, seed: int) -> ClassifierRunConfig:
    return dataclasses.replace(
        base,
        targets=variant.targets,
        augment=dataclasses.replace(base.augment, oversample=variant.oversample),
        optim=dataclasses.replace(base.optim, seed=seed),
    )


def run_ablation(
    data_for_seed: Callable[[int], object],
    base: ClassifierRunConfig,
    seeds: Sequence[int],
    workdir: Path,
    *,
    n: float = 2,
    normalize: bool = True,
    progress: Callable[[str], None] = lambda line: None,
) -> AblationResult:
    """Train every variant on every seed's data; returns macro-F1 per variant and seed."""
    from training.classifier.trainer import train_classifier

    if not seeds:
        raise ValueError("at least one seed is needed")
    if not base.optim.steps_per_epoch:
        raise ValueError("set optim.steps_per_epoch so that every variant gets the same number of steps")
    chosen = variants(n, normalize)
    result = AblationResult(seeds=list(seeds), variants=[v.name for v in chosen],
                            val_f1={v.name: [] for v in chosen}, test_f1={v.name: [] for v in chosen},
                            config=base.to_json(), data_sizes=[])
    for seed in seeds:
        data = data_for_seed(seed)
        sizes = {"seed": seed, "train": len(data.train_labels), "val": len(data.val_labels),
                 "test": len(data.test_labels)}
        result.data_sizes.append(sizes)
        if not sizes["train"] or not sizes["val"]:
            raise ValueError(f"seed {seed}: the split has no training or validation crops ({sizes})")
        for variant in chosen:
            folder = Path(workdir) / f"seed{seed}-{variant.name.replace(' ', '_').replace('+', 'and')}"
            shutil.rmtree(folder, ignore_errors=True)  # a fresh run, never a resume
            trained = train_classifier(data, variant_config(base, variant, seed), folder)
            val = float(trained.best_val_macro_f1 or 0.0)
            test = float(trained.test_report["average"]["f1"]) if trained.test_report else float("nan")
            result.val_f1[variant.name].append(val)
            result.test_f1[variant.name].append(test)
            progress(f"seed {seed} | {variant.name}: validation macro-F1 {100 * val:.1f}, "
                     f"test {100 * test:.1f} (best epoch {trained.best_epoch}, {trained.stopped})")
            shutil.rmtree(folder, ignore_errors=True)
    return result


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for one value), in the values' unit."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def format_table(result: AblationResult) -> str:
    """Markdown table: macro-F1 (%) mean +- sd over seeds, the change from the row above, and
    the paper's validation figures beside ours."""
    lines = [
        "| variant | validation macro-F1 (%) | change | test macro-F1 (%) | paper, validation (%) |",
        "|---|---|---|---|---|",
    ]
    previous = None
    for name in result.variants:
        val_mean, val_sd = mean_sd([100 * v for v in result.val_f1[name]])
        test_mean, test_sd = mean_sd([100 * v for v in result.test_f1[name]])
        change = "" if previous is None else f"{val_mean - previous:+.1f}"
        paper_mean, paper_sd = PAPER_VALIDATION_F1[name]
        paper = f"{paper_mean:.1f}" + (f" +- {paper_sd:.1f}" if paper_sd is not None else "")
        lines.append(f"| {name} | {val_mean:.1f} +- {val_sd:.1f} | {change} | {test_mean:.1f} +- {test_sd:.1f} "
                     f"| {paper} |")
        previous = val_mean
    lines.append(f"\nseeds {result.seeds}; mean +- sample sd over seeds; each seed is its own split by image.")
    return "\n".join(lines)
