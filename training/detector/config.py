"""The detector's run configuration: frozen dataclasses combined into one, saved as JSON on the run
so any model version can be rebuilt exactly (pure; no Django, no TensorFlow import).

``DetectorRunConfig().to_json()`` gives plain JSON data; ``DetectorRunConfig.from_json(data)``
rebuilds it (fields missing from ``data`` take their defaults, unknown ones are ignored, so a
config saved by an older version still loads).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from training.detection.augment import MIN_BOX_SIZE, MIN_VISIBLE, MOSAIC_CENTRE_RANGE
from training.run_config import dataclass_from_json

#: Anchor sources: k-means (IoU distance) on the training boxes, or the preset's own anchors.
ANCHOR_SOURCES = ("kmeans", "preset")
#: Every YOLOv4 input side is a multiple of the coarsest stride.
MAX_STRIDE = 32


@dataclass(frozen=True)
class DetectorAugmentConfig:
    """Training-image augmentation, each part switchable (``training/detection/augment.py``).

    oversample: the paper's deterministic 36x (4 orientations x 9 filters), boxes moved along.
    mosaic / mosaic_prob: with this probability a training example is a mosaic of itself and
    three other (oversampled) training examples; mosaic_centre_range: where the split point
    falls, as a fraction of the canvas side; min_box_size / min_box_visible: a box cut by the
    mosaic is dropped below this many pixels a side or this share of its area left.
    """

    oversample: bool = True
    mosaic: bool = True
    mosaic_prob: float = 0.5
    mosaic_centre_range: tuple[float, float] = MOSAIC_CENTRE_RANGE
    min_box_size: float = MIN_BOX_SIZE
    min_box_visible: float = MIN_VISIBLE

    def __post_init__(self) -> None:
        object.__setattr__(self, "mosaic_centre_range", tuple(float(v) for v in self.mosaic_centre_range))
        if not 0.0 <= self.mosaic_prob <= 1.0:
            raise ValueError(f"mosaic_prob must be in [0, 1], got {self.mosaic_prob}")
        lo_hi = self.mosaic_centre_range
        if len(lo_hi) != 2 or not 0.0 <= lo_hi[0] <= lo_hi[1] <= 1.0:
            raise ValueError(f"mosaic_centre_range must be (lo, hi) within [0, 1], got {lo_hi}")
        if self.min_box_size < 0:
            raise ValueError(f"min_box_size must be >= 0, got {self.min_box_size}")
        if not 0.0 <= self.min_box_visible <= 1.0:
            raise ValueError(f"min_box_visible must be in [0, 1], got {self.min_box_visible}")


@dataclass(frozen=True)
class DetectorOptimConfig:
    """Optimisation: AdamW (Adam when weight_decay is 0; batch-norm scales and offsets and
    biases never decay) under a cosine schedule with linear warm-up
    (``training.detection.schedule.WarmupCosineDecay``).

    learning_rate: the peak, reached after warmup_epochs (may be fractional); the cosine then
    falls to learning_rate x final_lr_ratio at the last step of the last epoch. patience:
    epochs without a better validation mAP@0.5 before stopping. steps_per_epoch: None is one
    pass over the (oversampled) training set (examples // batch_size). time_limit_s: checked
    after every batch; the epoch under way stops there, is evaluated and kept, and the run ends.
    """

    epochs: int = 50
    batch_size: int = 8
    learning_rate: float = 1e-3
    warmup_epochs: float = 1.0
    final_lr_ratio: float = 0.01
    weight_decay: float = 5e-4  # decoupled, per step times the learning rate (AdamW)
    patience: int = 10
    time_limit_s: int | None = None
    steps_per_epoch: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "patience"):
            if int(getattr(self, name)) != getattr(self, name) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if not 0.0 <= self.final_lr_ratio <= 1.0:
            raise ValueError(f"final_lr_ratio must be in [0, 1], got {self.final_lr_ratio}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be None or >= 1, got {self.steps_per_epoch}")
        if self.time_limit_s is not None and self.time_limit_s < 0:
            raise ValueError(f"time_limit_s must be None or >= 0, got {self.time_limit_s}")


@dataclass(frozen=True)
class DetectorRunConfig:
    """One detector training run.

    preset: a ``training.networks.yolov4`` preset ("yolov4", "yolov4_tiny", "yolov4_test").
    num_classes: detector classes (5: the ATYPICAL grades). input_size: the network's side in
    pixels, a multiple of 32 (None: the preset's). anchors: "kmeans" (IoU k-means on the
    training boxes at the input size; the preset's when there are too few boxes) or "preset"
    (the preset's, scaled to the input size). bn_momentum: the batch-norm moving averages'
    momentum (Keras' convention; 0.99 is Darknet's and Keras' default; a lower one lets
    inference statistics catch up within a short run). target_recall: the image-level
    ">= ASC-US" recall the operating threshold must keep on the validation images.
    """

    preset: str = "yolov4"
    num_classes: int = 5
    input_size: int | None = None
    anchors: str = "kmeans"
    bn_momentum: float = 0.99
    target_recall: float = 1.0
    augment: DetectorAugmentConfig = field(default_factory=DetectorAugmentConfig)
    optim: DetectorOptimConfig = field(default_factory=DetectorOptimConfig)

    def __post_init__(self) -> None:
        if int(self.num_classes) != self.num_classes or self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {self.num_classes}")
        if self.input_size is not None and (
            int(self.input_size) != self.input_size
            or self.input_size < MAX_STRIDE
            or self.input_size % MAX_STRIDE
        ):
            raise ValueError(f"input_size must be None or a positive multiple of {MAX_STRIDE}, "
                             f"got {self.input_size}")
        if self.anchors not in ANCHOR_SOURCES:
            raise ValueError(f"anchors must be one of {ANCHOR_SOURCES}, got {self.anchors!r}")
        if not 0.0 <= self.bn_momentum < 1.0:
            raise ValueError(f"bn_momentum must be in [0, 1), got {self.bn_momentum}")
        if not 0.0 < self.target_recall <= 1.0:
            raise ValueError(f"target_recall must be in (0, 1], got {self.target_recall}")

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["augment"]["mosaic_centre_range"] = list(self.augment.mosaic_centre_range)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DetectorRunConfig:
        return dataclass_from_json(cls, data, {"augment": DetectorAugmentConfig, "optim": DetectorOptimConfig})
