"""YOLOv4 presets: the published yolov4 (608 px) and yolov4-tiny (416 px), and a test size.

A ``YoloPreset`` is everything besides the class count needed to build a detector and to
encode/decode its outputs: input size, strides, anchors (pixels at ``input_size``, shape
``(num_scales, 3, 2)``, finest scale first), Darknet's ``scale_x_y`` per scale and the
architecture's width/depth. ``build_detector("yolov4", num_classes=5)`` builds a fresh model.

Anchors and masks are Darknet's defaults. yolov4 (``cfg/yolov4.cfg``): nine anchors
``12,16 19,36 40,28 36,75 76,55 72,146 142,110 192,243 459,401``, masks 0-2 at stride 8, 3-5
at stride 16, 6-8 at stride 32, ``scale_x_y`` 1.2, 1.1, 1.05. yolov4-tiny
(``cfg/yolov4-tiny.cfg``): six anchors ``10,14 23,27 37,58 81,82 135,169 344,319`` with
masks 1,2,3 at stride 16 and 3,4,5 at stride 32, as the cfg has them: anchor 0 (10x14) is used
by neither head and anchor 3 (81x82) by both. ``scale_x_y`` 1.05 at both scales.

"yolov4_test" is the yolov4 graph at 1/8 of the widths, one residual block per stage and
128 px, with yolov4's anchors scaled to 128 px: it builds and runs in well under a second on a
CPU, for tests.

Darknet keeps anchors in pixels when the network size changes; ``build_detector(...,
input_size=...)`` does the same. ``YoloPreset.anchors_at(size)`` gives them rescaled instead.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from training.networks.yolov4.backbone import CSP_STAGE_DEPTHS
from training.networks.yolov4.detector import ARCHITECTURES, STRIDES, YOLOV4Detector

YOLOV4_ANCHORS = ((12, 16), (19, 36), (40, 28), (36, 75), (76, 55), (72, 146), (142, 110),
                  (192, 243), (459, 401))
YOLOV4_MASKS = ((0, 1, 2), (3, 4, 5), (6, 7, 8))
TINY_ANCHORS = ((10, 14), (23, 27), (37, 58), (81, 82), (135, 169), (344, 319))
TINY_MASKS = ((1, 2, 3), (3, 4, 5))


def _masked(anchors, masks, scale: float = 1.0) -> tuple:
    return tuple(tuple((anchors[i][0] * scale, anchors[i][1] * scale) for i in mask) for mask in masks)


@dataclass(frozen=True)
class YoloPreset:
    """One named YOLOv4 configuration; see the module docstring. All tuples, JSON-friendly."""

    name: str
    architecture: str
    input_size: int
    strides: tuple[int, ...]
    anchors: tuple[tuple[tuple[float, float], ...], ...]
    scale_x_y: tuple[float, ...]
    width_multiplier: float = 1.0
    stage_depths: tuple[int, ...] = CSP_STAGE_DEPTHS

    def __post_init__(self) -> None:
        object.__setattr__(self, "strides", tuple(int(s) for s in self.strides))
        object.__setattr__(self, "scale_x_y", tuple(float(s) for s in self.scale_x_y))
        object.__setattr__(self, "stage_depths", tuple(int(n) for n in self.stage_depths))
        object.__setattr__(
            self, "anchors", tuple(tuple((float(w), float(h)) for w, h in s) for s in self.anchors)
        )
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        if self.strides != tuple(STRIDES[self.architecture]):
            raise ValueError(f"{self.architecture} has strides {STRIDES[self.architecture]}, "
                             f"got {self.strides}")
        n = len(self.strides)
        if len(self.anchors) != n or len(self.scale_x_y) != n:
            raise ValueError(f"anchors and scale_x_y need one entry per scale ({n})")
        if len({len(s) for s in self.anchors}) != 1:
            raise ValueError("every scale needs the same number of anchors")
        if self.input_size % max(self.strides):
            raise ValueError(f"input_size must be a multiple of {max(self.strides)}, got {self.input_size}")

    @property
    def num_scales(self) -> int:
        return len(self.strides)

    @property
    def num_anchors(self) -> int:
        """Anchors per scale (3 in every preset)."""
        return len(self.anchors[0])

    @property
    def anchor_array(self) -> np.ndarray:
        """Anchors as float32 ``(num_scales, num_anchors, 2)``: (width, height) in pixels."""
        return np.asarray(self.anchors, dtype=np.float32)

    def anchors_at(self, input_size: int) -> np.ndarray:
        """``anchor_array`` scaled from ``self.input_size`` to ``input_size`` pixels."""
        return self.anchor_array * np.float32(input_size / self.input_size)

    def grid_sizes(self, input_size: int | None = None) -> tuple[int, ...]:
        """Cells per side at each scale: ``input_size / stride``."""
        size = self.input_size if input_size is None else int(input_size)
        return tuple(size // s for s in self.strides)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["strides"] = list(self.strides)
        data["anchors"] = [[list(a) for a in s] for s in self.anchors]
        data["scale_x_y"] = list(self.scale_x_y)
        data["stage_depths"] = list(self.stage_depths)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> YoloPreset:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown YoloPreset fields: {', '.join(unknown)}")
        return cls(**data)


PRESETS: dict[str, YoloPreset] = {
    "yolov4": YoloPreset(
        name="yolov4", architecture="yolov4", input_size=608, strides=(8, 16, 32),
        anchors=_masked(YOLOV4_ANCHORS, YOLOV4_MASKS), scale_x_y=(1.2, 1.1, 1.05),
    ),
    "yolov4_tiny": YoloPreset(
        name="yolov4_tiny", architecture="yolov4_tiny", input_size=416, strides=(16, 32),
        anchors=_masked(TINY_ANCHORS, TINY_MASKS), scale_x_y=(1.05, 1.05),
    ),
    "yolov4_test": YoloPreset(
        name="yolov4_test", architecture="yolov4", input_size=128, strides=(8, 16, 32),
        anchors=_masked(YOLOV4_ANCHORS, YOLOV4_MASKS, 128 / 608), scale_x_y=(1.2, 1.1, 1.05),
        width_multiplier=0.125, stage_depths=(1, 1, 1, 1, 1),
    ),
}


def get_preset(name: str) -> YoloPreset:
    """The named preset; "yolov4-tiny" (Darknet's spelling) is accepted for "yolov4_tiny"."""
    try:
        return PRESETS[name.replace("-", "_")]
    except KeyError:
        raise KeyError(f"unknown YOLOv4 preset {name!r}; have: {', '.join(PRESETS)}") from None


def build_detector(preset: str, num_classes: int, input_size: int | None = None) -> YOLOV4Detector:
    """A freshly initialised detector of a preset (no pretrained weights).

    ``input_size`` overrides the preset's (a multiple of 32); the anchors stay in pixels, as in
    Darknet. The preset's anchors and ``scale_x_y`` are kept in the model's config.
    """
    config = get_preset(preset)
    return YOLOV4Detector(
        architecture=config.architecture,
        num_classes=num_classes,
        input_size=config.input_size if input_size is None else input_size,
        width_multiplier=config.width_multiplier,
        stage_depths=config.stage_depths,
        num_anchors=config.num_anchors,
        anchors=config.anchors,
        scale_x_y=config.scale_x_y,
        name=config.name,
    )
