"""The pages' charts: SVG geometry computed here, drawn by the templates.

The learning curve (training run page), the share agreed over time (agreement dashboard) and the
score histogram (ranking round) share one plot frame (size, margins, value -> pixel), one line
path and the axis ticks. Plain Python, no Django: the views turn their figures into points and
hand the dict to the template. (The confusion-matrix PNG and the active-learning curves are
matplotlib figures written by training.metrics and inference.active_learning.plots.)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Frame:
    """A plot area of ``width`` x ``height`` pixels with margins for the axis labels."""

    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int

    @property
    def inner_w(self) -> float:
        return self.width - self.left - self.right

    @property
    def inner_h(self) -> float:
        return self.height - self.top - self.bottom

    def x(self, share: float) -> float:
        """The pixel column of ``share`` (0: the left edge of the plot area, 1: its right edge)."""
        return self.left + share * self.inner_w

    def y(self, share: float) -> float:
        """The pixel row of ``share`` (0: the bottom of the plot area, 1: its top)."""
        return self.top + (1.0 - share) * self.inner_h

    def box(self) -> dict:
        """What every chart template reads: the size and the plot area's edges."""
        return {"width": self.width, "height": self.height, "left": self.left, "right": self.width - self.right,
                "top": self.top, "bottom": self.top + self.inner_h, "center_x": self.left + self.inner_w / 2}


def line_path(points: Iterable[tuple[float, float]]) -> str:
    """An SVG path through the points (pixels), one decimal: "M x,y L x,y ..."."""
    return " ".join(f"{'L' if i else 'M'}{x:.1f},{y:.1f}" for i, (x, y) in enumerate(points))


def nice_max(value: float, ticks: int = 4) -> float:
    """A round axis maximum at or above ``value`` whose ``ticks`` equal steps are round too
    (a step of 1, 2, 2.5 or 5 x 10^k)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    raw = value / ticks
    exponent = math.floor(math.log10(raw))
    for step in (1, 2, 2.5, 5, 10):
        if step * 10**exponent * ticks >= value - 1e-12:
            return step * 10**exponent * ticks
    return 10 ** (exponent + 1) * ticks


def int_ticks(top: int) -> list[int]:
    """About four whole-number ticks from 0 to at least ``top`` (counts)."""
    step = max(1, math.ceil(top / 4))
    return list(range(0, top + step, step)) if top else [0, 1]


def y_ticks(frame: Frame, shares: Iterable[float]) -> list[dict]:
    """Horizontal grid lines at ``shares`` of the plot's height (``text_y``: the baseline of a
    label centred on the line); the caller adds each label's text."""
    return [{"share": s, "y": frame.y(s), "text_y": frame.y(s) + 4} for s in shares]
