"""Promotion checks: a candidate version beside the promoted one on the same test figures.

Promoting (or rolling back to) a version changes what every later prediction, ranking round and
pre-annotation is built on, so it asks first when the figures argue against it. The figures are
the test split's (never used for training, model selection or the threshold):

- classifier: macro-F1 and accuracy over the test clusters;
- detector: mAP@0.5, and image-level recall and precision for ">= ASC-US" at the version's
  operating threshold, over the test images.

A promotion needs an explicit confirmation when the candidate has no test figures, when its
headline figure is below the floor (settings ``PROMOTION_MIN_MACRO_F1``, ``PROMOTION_MIN_MAP``),
or when any figure shown is lower than the promoted version's. ``training.services.promote``
refuses without it and records the figures and the concerns on the ``Promotion`` row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from django.conf import settings

from training.models import ModelKind, ModelVersion
from training.selectors import promoted_version

#: per kind: (key, label, floor setting or None), the headline figure first
FIGURES: dict[str, tuple[tuple[str, str, str | None], ...]] = {
    ModelKind.CLASSIFIER: (("macro_f1", "test macro-F1", "PROMOTION_MIN_MACRO_F1"),
                           ("accuracy", "test accuracy", None)),
    ModelKind.DETECTOR: (("map", "test mAP@0.5", "PROMOTION_MIN_MAP"),
                         ("image_recall", "test image recall (≥ ASC-US)", None),
                         ("image_precision", "test image precision (≥ ASC-US)", None)),
}


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def figures_of(version: ModelVersion) -> dict[str, float | None]:
    """The version's test figures by key (None where the report lacks one), and "n"."""
    test = (version.metrics or {}).get("test") or {}
    if version.kind == ModelKind.DETECTOR:
        atypical = test.get("atypical") or {}
        return {"map": _number(test.get("map")), "image_recall": _number(atypical.get("recall")),
                "image_precision": _number(atypical.get("precision")), "n": test.get("n")}
    return {"macro_f1": _number((test.get("average") or {}).get("f1")),
            "accuracy": _number(test.get("overall_accuracy")), "n": test.get("n")}


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    candidate: float | None
    current: float | None
    floor: float | None
    floor_setting: str | None

    @property
    def below_floor(self) -> bool:
        return self.floor is not None and (self.candidate is None or self.candidate < self.floor)

    @property
    def worse(self) -> bool:
        return self.candidate is not None and self.current is not None and self.candidate < self.current

    @property
    def better(self) -> bool:
        return self.candidate is not None and self.current is not None and self.candidate > self.current


@dataclass(frozen=True)
class PromotionCheck:
    version: ModelVersion
    current: ModelVersion | None
    figures: list[Figure]
    concerns: list[str] = field(default_factory=list)

    @property
    def needs_confirmation(self) -> bool:
        return bool(self.concerns)

    def record(self) -> dict:
        """What the Promotion row keeps: both versions' figures and the floors."""
        return {
            "candidate": {"name": self.version.name, **{f.key: f.candidate for f in self.figures}},
            "previous": ({"name": self.current.name, **{f.key: f.current for f in self.figures}}
                         if self.current is not None else None),
            "floors": {f.floor_setting: f.floor for f in self.figures if f.floor_setting},
        }


def _fmt(value: float | None) -> str:
    return "none" if value is None else f"{value:.3f}"


def check_promotion(version: ModelVersion, current: ModelVersion | None = None, *,
                    lookup_current: bool = True) -> PromotionCheck:
    """``version`` beside ``current`` (default: the promoted version of its kind, other than it)."""
    if current is None and lookup_current:
        current = promoted_version(version.kind, excluding=version.pk)
    if current is not None and current.pk == version.pk:
        current = None
    mine = figures_of(version)
    theirs = figures_of(current) if current is not None else {}
    figures = []
    for key, label, setting in FIGURES[version.kind]:
        floor = _number(getattr(settings, setting, None)) if setting else None
        figures.append(Figure(key, label, mine.get(key), theirs.get(key), floor, setting))
    concerns = []
    if all(f.candidate is None for f in figures):
        concerns.append(f"{version.name} has no test figures: nothing shows how it does on unseen images")
    for f in figures:
        if f.below_floor and f.candidate is not None:
            concerns.append(f"{f.label} {_fmt(f.candidate)} is below the floor {_fmt(f.floor)} ({f.floor_setting})")
        if f.worse:
            concerns.append(f"{f.label} {_fmt(f.candidate)} is lower than {current.name}'s {_fmt(f.current)}")
    return PromotionCheck(version=version, current=current, figures=figures, concerns=concerns)
