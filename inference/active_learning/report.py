"""Simulated active learning: the summary over seeds, the label efficiency against random, and
the tables and lines the command prints."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from annotation.bethesda import BETHESDA
from inference.active_learning.loop import BASELINE, SimulationResult

#: The issue's goal: the best strategy reaches random's final macro-F1 with at most this share
#: of random's labels.
GOAL_RATIO = 0.5


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for one value)."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def summarize(result: SimulationResult) -> dict[str, dict[str, list[float]]]:
    """{strategy: {"labels": [...], "mean": [...], "sd": [...]}}, macro-F1 over seeds per round."""
    out: dict[str, dict[str, list]] = {}
    for name, curves in result.curves.items():
        labels = curves[0].labels
        if any(c.labels != labels for c in curves):
            raise ValueError(f"{name}: the seeds' curves have different label counts")
        stats = [mean_sd([c.macro_f1[r] for c in curves]) for r in range(len(labels))]
        out[name] = {"labels": list(labels), "mean": [m for m, _ in stats], "sd": [s for _, s in stats]}
    return out


def labels_to_reach(labels: Sequence[float], values: Sequence[float], target: float) -> float | None:
    """Labels at which the curve first reaches ``target`` (linear between the point before and
    the first point at or above it; the first point's labels when it starts there); None when
    it never does."""
    if len(labels) != len(values) or not labels:
        raise ValueError("one value per label count, and at least one point")
    for i, value in enumerate(values):
        if value >= target:
            if i == 0:
                return float(labels[0])
            x0, x1, y0, y1 = labels[i - 1], labels[i], values[i - 1], values[i]
            return float(x0 + (x1 - x0) * (target - y0) / (y1 - y0))
    return None


@dataclass(frozen=True)
class Efficiency:
    target: float  # random's final mean macro-F1
    baseline_labels: int  # random's final label count
    start: float  # random's first mean macro-F1 (round 0, shared by every strategy)
    needed: dict[str, float | None]  # labels each other strategy needs (None: not reached)
    best: str | None  # the strategy that needs fewest; None when none reaches it or undefined
    ratio: float | None  # best's labels / baseline_labels
    # The same ratio seed by seed (best's curve against its own seed's random curve), when the
    # result was given: None where that seed's random curve does not rise or best never reaches it.
    per_seed: list[float | None] | None = None

    @property
    def seeds_meeting_goal(self) -> int | None:
        """In how many seeds the best strategy needed at most GOAL_RATIO of random's labels."""
        if self.per_seed is None:
            return None
        return sum(1 for r in self.per_seed if r is not None and r <= GOAL_RATIO + 1e-12)

    @property
    def defined(self) -> bool:
        """Random's curve rose: its final mean is above the shared starting point. Otherwise
        every strategy "reaches" the target at the start and the ratio says nothing."""
        return self.target > self.start

    @property
    def goal_met(self) -> bool:
        return self.defined and self.ratio is not None and self.ratio <= GOAL_RATIO + 1e-12

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "defined": self.defined, "goal_ratio": GOAL_RATIO,
                "goal_met": self.goal_met, "seeds_meeting_goal": self.seeds_meeting_goal}


def _per_seed_ratios(result: SimulationResult, best: str, baseline: str) -> list[float | None]:
    ratios: list[float | None] = []
    for base, other in zip(result.curves[baseline], result.curves[best], strict=True):
        target = base.macro_f1[-1]
        needed = labels_to_reach(other.labels, other.macro_f1, target) if target > base.macro_f1[0] else None
        ratios.append(None if needed is None else needed / base.labels[-1])
    return ratios


def label_efficiency(summary: dict, baseline: str = BASELINE,
                     result: SimulationResult | None = None) -> Efficiency | None:
    """Label efficiency of the best non-baseline strategy (module docstring); None when the
    baseline or every other strategy is missing. Undefined (best and ratio None, ``defined``
    False) when random's final mean is not above its first point. With ``result``, also the
    best strategy's ratio in each seed against that seed's own random curve (``per_seed``): a
    paired reading, less at the mercy of one seed's luck than the means."""
    if baseline not in summary or len(summary) < 2:
        return None
    base = summary[baseline]
    target, final_labels = float(base["mean"][-1]), int(base["labels"][-1])
    start = float(base["mean"][0])
    needed = {name: labels_to_reach(s["labels"], s["mean"], target)
              for name, s in summary.items() if name != baseline}
    reached = {n: v for n, v in needed.items() if v is not None}
    best = None
    if reached and target > start:
        best = min(reached, key=lambda n: (reached[n], list(needed).index(n)))
    ratio = reached[best] / final_labels if best is not None else None
    per_seed = _per_seed_ratios(result, best, baseline) if result is not None and best is not None else None
    return Efficiency(target=target, baseline_labels=final_labels, start=start, needed=needed,
                      best=best, ratio=ratio, per_seed=per_seed)


def format_table(summary: dict) -> str:
    """Markdown: one row per label count, one column per strategy, test macro-F1 (%) mean +- sd."""
    names = list(summary)
    labels = summary[names[0]]["labels"]
    lines = ["| labels | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for r, n in enumerate(labels):
        cells = [f"{100 * summary[s]['mean'][r]:.1f} +- {100 * summary[s]['sd'][r]:.1f}" for s in names]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_efficiency(efficiency: Efficiency | None) -> str:
    """The label-efficiency line."""
    if efficiency is None:
        return "label efficiency: not computed (needs 'random' and at least one other strategy)"
    head = (f"label efficiency: target = random's final test macro-F1 {100 * efficiency.target:.1f} "
            f"at {efficiency.baseline_labels} labels")
    if not efficiency.defined:
        return (f"{head}; undefined: that is not above the {100 * efficiency.start:.1f} every strategy "
                f"starts from, so random's curve does not rise and any strategy 'reaches' it at the "
                f"start (goal <= {GOAL_RATIO:g}: not assessable)")
    if efficiency.best is None:
        return f"{head}; not reached by any other strategy (goal <= {GOAL_RATIO:g}: not met)"
    others = ", ".join(f"{n} {'not reached' if v is None else f'{v:.0f}'}"
                       for n, v in efficiency.needed.items())
    line = (f"{head}; best {efficiency.best} reaches it at {efficiency.needed[efficiency.best]:.0f} "
            f"labels = {efficiency.ratio:.2f} of random's (goal <= {GOAL_RATIO:g}: "
            f"{'met' if efficiency.goal_met else 'not met'}); labels needed: {others}")
    if efficiency.per_seed is not None:
        seeds = ", ".join("-" if r is None else f"{r:.2f}" for r in efficiency.per_seed)
        line += (f"; seed by seed against that seed's random: {seeds} ({efficiency.seeds_meeting_goal} of "
                 f"{len(efficiency.per_seed)} seeds <= {GOAL_RATIO:g})")
    return line


def format_counts(counts: Sequence[int]) -> str:
    """"NILM 12, ASC-US 3, ..." for a per-class count list."""
    return ", ".join(f"{name} {int(c)}" for name, c in zip(BETHESDA, counts, strict=True))
