"""Simulated active learning: the learning-curve figure (matplotlib is imported inside
``plot_curves`` only: the package imports no plotting library until a figure is drawn)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from inference.active_learning.loop import BASELINE
from inference.active_learning.report import GOAL_RATIO, Efficiency


def plot_curves(summary: dict, path, *, title: str = "Simulated active learning",
                efficiency: Efficiency | None = None) -> Path:
    """PNG: per strategy the mean test macro-F1 (%) against labels used, with a +- sd band;
    random's final level and half its labels dotted when ``efficiency`` is given."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.6), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for name, s in summary.items():
        x = np.asarray(s["labels"], dtype=float)
        mean, sd = 100 * np.asarray(s["mean"]), 100 * np.asarray(s["sd"])
        style: dict[str, Any] = {"color": "black", "linestyle": "--"} if name == BASELINE else {}
        line, = ax.plot(x, mean, marker="o", markersize=3, label=name, **style)
        ax.fill_between(x, mean - sd, mean + sd, color=line.get_color(), alpha=0.15, linewidth=0)
    if efficiency is not None:
        ax.axhline(100 * efficiency.target, color="grey", linestyle=":", linewidth=1,
                   label="random's final level")
        ax.axvline(GOAL_RATIO * efficiency.baseline_labels, color="grey", linestyle="-.", linewidth=1,
                   label=f"{GOAL_RATIO:g} x random's labels (goal)")
    ax.set_xticks(sorted({n for s in summary.values() for n in s["labels"]}))
    ax.set_xlabel("labels used (clusters)")
    ax.set_ylabel("test macro-F1 (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
