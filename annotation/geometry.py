"""Boxes in original-image pixels: the contract every part of the platform shares.

Pure module (no Django import). Label Studio's percent coordinates are converted only at the
Label Studio boundary, never here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from annotation.bethesda import normalize_label


class InvalidBox(ValueError):
    """A box that cannot describe a region of its image."""


@dataclass(frozen=True, slots=True)
class Box:
    """An axis-aligned box: top-left corner, width and height in pixels, and a Bethesda label."""

    x: float
    y: float
    width: float
    height: float
    label: str
    score: float | None = None

    def sort_key(self) -> tuple:
        """A total order for comparing sets of boxes (score None sorts first)."""
        return (self.x, self.y, self.width, self.height, self.label,
                -1.0 if self.score is None else self.score)

    @property
    def x2(self) -> float:
        return self.x + self.width

    @property
    def y2(self) -> float:
        return self.y + self.height

    @property
    def area(self) -> float:
        return self.width * self.height

    @property
    def center(self) -> tuple[float, float]:
        return (self.x + self.width / 2.0, self.y + self.height / 2.0)

    def validated(self, image_width: float | None = None, image_height: float | None = None) -> Box:
        """Return this box with its label made canonical, or raise InvalidBox saying what is wrong."""
        values = {"x": self.x, "y": self.y, "width": self.width, "height": self.height}
        for name, value in values.items():
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise InvalidBox(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise InvalidBox(f"{name} must be finite, got {value!r}")
        if self.width <= 0 or self.height <= 0:
            raise InvalidBox(f"box size must be positive, got {self.width} x {self.height}")
        if self.x < 0 or self.y < 0:
            raise InvalidBox(f"box starts outside the image at ({self.x}, {self.y})")
        if image_width is not None and self.x2 > image_width + 1e-6:
            raise InvalidBox(f"box right edge {self.x2:g} is past the image width {image_width:g}")
        if image_height is not None and self.y2 > image_height + 1e-6:
            raise InvalidBox(f"box bottom edge {self.y2:g} is past the image height {image_height:g}")
        if self.score is not None and not (
            isinstance(self.score, int | float) and 0.0 <= self.score <= 1.0
        ):
            raise InvalidBox(f"score must be between 0 and 1, got {self.score!r}")
        try:
            label = normalize_label(self.label)
        except ValueError as exc:
            raise InvalidBox(str(exc)) from None
        return Box(self.x, self.y, self.width, self.height, label, self.score)


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 when they do not touch)."""
    ix = max(0.0, min(a.x2, b.x2) - max(a.x, b.x))
    iy = max(0.0, min(a.y2, b.y2) - max(a.y, b.y))
    inter = ix * iy
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


def clip_box(box: Box, image_width: float, image_height: float) -> Box | None:
    """The part of ``box`` inside the image, or None when nothing of it is inside."""
    x1, y1 = max(0.0, box.x), max(0.0, box.y)
    x2, y2 = min(float(image_width), box.x2), min(float(image_height), box.y2)
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        return None
    return Box(x1, y1, x2 - x1, y2 - y1, box.label, box.score)


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """One image and its boxes, as files on disk describe them (import/export formats, generator)."""

    file_name: str
    width: int
    height: int
    boxes: tuple[Box, ...] = ()
