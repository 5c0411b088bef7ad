"""Run configurations: frozen dataclasses combined into one, saved as JSON on the run so any
model version can be rebuilt exactly (pure; no Django, no TensorFlow import)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from training.augment import AugmentConfig
from training.run_config import dataclass_from_json
from training.smoothing import TargetConfig


@dataclass(frozen=True)
class DataConfig:
    input_size: int = 224
    margin: float = 0.25  # context around each cluster box, as a fraction of its side
    max_train_crops: int | None = None  # cap (before oversampling) for quick runs


@dataclass(frozen=True)
class OptimConfig:
    epochs: int = 30
    batch_size: int = 16  # the paper's
    learning_rate: float = 1e-3  # Adam, Keras' default
    patience: int = 5  # early stopping on validation macro-F1
    time_limit_s: int | None = None
    steps_per_epoch: int | None = None  # None: one pass over the (oversampled) training set
    seed: int = 0


@dataclass(frozen=True)
class ClassifierRunConfig:
    preset: str = "resnest50"
    width_multiplier: float | None = None  # None: the preset's
    dropout: float = 0.2
    data: DataConfig = field(default_factory=DataConfig)
    targets: TargetConfig = field(default_factory=TargetConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClassifierRunConfig:
        return dataclass_from_json(cls, data, {"data": DataConfig, "targets": TargetConfig,
                                               "augment": AugmentConfig, "optim": OptimConfig})
