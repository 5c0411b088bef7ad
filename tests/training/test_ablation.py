"""The classifier ablation: variants, equal steps, the table, and the command's refusals."""

import numpy as np
import pytest

from training.ablation import (
    AblationResult,
    format_table,
    mean_sd,
    run_ablation,
    variant_config,
    variants,
)
from training.augment import AugmentConfig
from training.classifier.config import ClassifierRunConfig, DataConfig, OptimConfig
from training.classifier.data import ClassifierData


def base(steps=2):
    return ClassifierRunConfig(
        preset="resnest_tiny", dropout=0.0, data=DataConfig(input_size=32),
        augment=AugmentConfig(scale=False, random_erasing=False),
        optim=OptimConfig(epochs=1, batch_size=8, steps_per_epoch=steps, learning_rate=1e-3),
    )


def test_the_three_variants_are_the_papers():
    chosen = variants(n=3)
    assert [v.name for v in chosen] == ["no oversampling", "oversampling", "oversampling + label smoothing"]
    configs = [variant_config(base(), v, seed=7) for v in chosen]
    assert [c.augment.oversample for c in configs] == [False, True, True]
    assert [c.targets.kind for c in configs] == ["onehot", "onehot", "ordinal"]
    assert configs[2].targets.n == 3
    assert all(c.optim.seed == 7 and c.optim.steps_per_epoch == 2 for c in configs)  # same steps for all
    assert all(c.augment.scale is False for c in configs)  # the rest of the augmentation is the caller's


def test_mean_and_sample_sd():
    assert mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_sd([5.0]) == (5.0, 0.0)


def test_table_shows_mean_sd_change_and_the_papers_figures():
    result = AblationResult(seeds=[0, 1], variants=[v.name for v in variants()],
                            val_f1={"no oversampling": [0.40, 0.42], "oversampling": [0.50, 0.52],
                                    "oversampling + label smoothing": [0.55, 0.59]},
                            test_f1={"no oversampling": [0.3, 0.3], "oversampling": [0.4, 0.4],
                                     "oversampling + label smoothing": [0.5, 0.5]},
                            config={}, data_sizes=[])
    table = format_table(result)
    assert "| no oversampling | 41.0 +- 1.4 |  | 30.0 +- 0.0 | 44.0 +- 3.3 |" in table
    assert "| oversampling | 51.0 +- 1.4 | +10.0 |" in table
    assert "| oversampling + label smoothing | 57.0 +- 2.8 | +6.0 | 50.0 +- 0.0 | 61.1 +- 3.6 |" in table


def test_run_ablation_trains_every_variant_on_every_seed(tmp_path):
    rng = np.random.default_rng(0)

    def data_for_seed(seed):
        def part(n):
            return rng.integers(0, 255, size=(n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 6, size=n)
        (tx, ty), (vx, vy), (sx, sy) = part(12), part(6), part(6)
        return ClassifierData(tx, ty, vx, vy, sx, sy)

    lines = []
    result = run_ablation(data_for_seed, base(), [0, 1], tmp_path, progress=lines.append)
    assert all(len(result.val_f1[name]) == 2 and len(result.test_f1[name]) == 2 for name in result.variants)
    assert all(0.0 <= v <= 1.0 for values in result.val_f1.values() for v in values)
    assert len(lines) == 6 and lines[0].startswith("seed 0 | no oversampling")
    assert [s["train"] for s in result.data_sizes] == [12, 12]
    assert list(tmp_path.iterdir()) == []  # run folders are cleaned up


def test_run_ablation_refuses_unequal_budgets_and_empty_splits(tmp_path):
    unbounded = ClassifierRunConfig(preset="resnest_tiny", optim=OptimConfig(epochs=1))
    with pytest.raises(ValueError, match="steps_per_epoch"):
        run_ablation(lambda seed: None, unbounded, [0], tmp_path)
    empty = ClassifierData(*(np.zeros((0, 32, 32, 3), np.uint8), np.zeros(0, int)) * 3)
    with pytest.raises(ValueError, match="no training or validation crops"):
        run_ablation(lambda seed: empty, base(), [0], tmp_path)


@pytest.mark.django_db(transaction=True)
def test_command_refuses_bad_input_with_one_line():
    from annotation.services import ensure_dataset
    from tests.helpers import manage

    bad = manage("ablate_classifier", "nope")
    assert bad.returncode != 0 and "no dataset named 'nope'" in bad.stderr
    ensure_dataset(name="empty")
    bad = manage("ablate_classifier", "empty", "--preset", "resnest9")
    assert bad.returncode != 0 and "unknown preset" in bad.stderr and "Traceback" not in bad.stderr
    bad = manage("ablate_classifier", "empty", "--preset", "resnest_tiny")
    assert bad.returncode != 0 and "needs at least 7" in bad.stderr


COMMAND = ("ablate_classifier", "ablate-me", "--seeds", "2", "--preset", "resnest_tiny", "--input-size", "32",
           "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "8")


@pytest.fixture
def ablate_me(synthetic_dataset):
    return synthetic_dataset("ablate-me", 14, seed=4)


@pytest.mark.django_db(transaction=True)
def test_command_prints_the_table_and_writes_json_from_its_splits(ablate_me, tmp_path, monkeypatch):
    """The short version of the next test (slow: six trainings in a fresh process): the command in
    this process, every seed's split of the crops made as for training, the scores made up."""
    import io

    from django.core.management import call_command

    import training.ablation

    def scored(data_for_seed, base, seeds, workdir, **kwargs):
        names = [v.name for v in variants()]
        sizes = []
        for seed in seeds:
            data = data_for_seed(seed)
            sizes.append({"seed": seed, "train": len(data.train_labels), "val": len(data.val_labels),
                          "test": len(data.test_labels)})
            assert sizes[-1]["train"] and sizes[-1]["val"], sizes
        return AblationResult(seeds=list(seeds), variants=names, val_f1={n: [0.5, 0.6] for n in names},
                              test_f1={n: [0.4, 0.5] for n in names}, config=base.to_json(), data_sizes=sizes)

    monkeypatch.setattr(training.ablation, "run_ablation", scored)
    stdout = io.StringIO()
    call_command(*COMMAND, "--out", str(tmp_path / "res"), stdout=stdout)
    _assert_table_and_json(stdout.getvalue(), tmp_path / "res")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_command_prints_the_table_and_writes_json(ablate_me, tmp_path, settings):
    from tests.helpers import child_env, manage

    env = {**child_env(), "MEDIA_ROOT": str(settings.MEDIA_ROOT), "TEST_MEDIA_ROOT": str(settings.MEDIA_ROOT)}
    done = manage(*COMMAND, "--out", str(tmp_path / "res"), env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_table_and_json(done.stdout, tmp_path / "res")


def _assert_table_and_json(stdout, out):
    import json

    assert "| oversampling + label smoothing |" in stdout and "paper, validation" in stdout
    saved = json.loads((out / "ablation.json").read_text())
    assert saved["dataset"] == "ablate-me" and saved["seeds"] == [0, 1]
    assert all(len(v) == 2 for v in saved["val_f1"].values())
