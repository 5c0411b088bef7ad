"""Simulated expert annotators: blind expert boxes made from ground truth, with realistic disagreement.

Pure module (no Django import). The ``simulate_experts`` management command uses it to give every
image one annotation per simulated expert; the tests use ``measured_rates`` to show that the
disagreement they produce is the disagreement their profiles ask for.

What each expert does to one image, in this order (every draw from the expert's own generator):

1. For each true box, in truth order:
   a. it is missed with probability ``miss_probability(profile, label)``;
   b. otherwise its four edges move independently (``jitter``), the result kept inside the image;
   c. its label changes with probability ``label_change_rate`` (see ``ExpertProfile``).
2. Then ``Poisson(spurious_rate)`` false boxes are added where no true box is (IoU < 0.1 with
   every true box and with the false boxes already placed), sized like the truth's boxes, labelled
   from ``spurious_label_weights``.

The boxes come back truth-derived first (in truth order, missed ones left out), then the false ones.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from annotation.bethesda import BETHESDA, NUM_CLASSES, label_index, label_name
from annotation.geometry import Box, clip_box, iou

#: Per-grade miss factors, in Bethesda order (NILM, ASC-US, LSIL, ASC-H, HSIL, SCC). Subtle, low
#: grades are overlooked more often than florid high-grade clusters. Only their ratios matter: the
#: miss probability divides by their mean (see ``miss_probability``). These have mean 1.
DEFAULT_MISS_FACTORS: tuple[float, ...] = (1.4, 1.3, 1.0, 0.9, 0.7, 0.7)

#: Label distribution of false boxes, in Bethesda order: an expert who boxes something that is not
#: there mostly boxes a benign or borderline cluster. Only their ratios matter (they are normalised).
DEFAULT_SPURIOUS_LABEL_WEIGHTS: tuple[float, ...] = (0.45, 0.30, 0.12, 0.07, 0.04, 0.02)

#: A false box never overlaps a true box (nor another false box) by this IoU or more.
SPURIOUS_MAX_IOU = 0.1
#: Tries to place one false box before giving it up (only a crowded image runs out).
SPURIOUS_PLACEMENT_TRIES = 100
#: Spread of a false box's size around the true box it copies: size x exp(N(0, this)).
SPURIOUS_SIZE_SPREAD = 0.25
#: With no true box on the image, a false box's side is this fraction of the image's shorter side.
DEFAULT_SPURIOUS_SIZE_FRACTION = 0.08
#: A jittered box keeps at least this fraction of its true width and height (redrawn otherwise).
MIN_JITTERED_SIZE_FRACTION = 0.25
_JITTER_TRIES = 20


@dataclass(frozen=True)
class ExpertProfile:
    """How one simulated expert departs from the truth. Every rate is exactly what it says:

    - ``miss_rate``: base probability of not drawing a true box. A box of grade g is missed with
      probability ``min(1, miss_rate * miss_factors[g] / mean(miss_factors))``; so over a uniform mix
      of grades the expected miss rate is exactly ``miss_rate`` (as long as no grade's probability
      is capped at 1, i.e. ``miss_rate * max(factor) / mean(factor) <= 1``).
    - ``spurious_rate``: expected number of false boxes per image (Poisson mean). A false box that
      cannot be placed in ``SPURIOUS_PLACEMENT_TRIES`` tries (crowded image) is dropped.
    - ``jitter``: standard deviation of each edge's displacement, as a fraction of the box's width
      (left and right edges) or height (top and bottom edges); the four edges move independently.
    - ``label_change_rate``: probability that a drawn true box gets a label other than its true one
      (the change always happens when drawn, at either end of the scale too).
    - ``adjacent_fraction``: of the label changes, the share that go exactly one grade; the rest go
      two or more grades (distance d >= 2 with weight 2^-(d-2) among the reachable ones).
    - ``bias`` in [-1, 1]: a change goes up (more severe) with probability ``(1 + bias) / 2``, else
      down. Where the drawn direction has no grade at the needed distance (NILM going down,
      ASC-US going two or more down, ...), the change goes the other way; so the label is always in
      0..5 and the change and adjacent shares stay exact, while the up/down split near the ends of
      the scale is pushed towards the middle.
    - ``spurious_label_weights``: label distribution of false boxes (normalised; ratios matter).
    """

    name: str
    miss_rate: float = 0.0
    spurious_rate: float = 0.0
    jitter: float = 0.0
    label_change_rate: float = 0.0
    adjacent_fraction: float = 0.8
    bias: float = 0.0
    role: str = ""
    miss_factors: tuple[float, ...] = DEFAULT_MISS_FACTORS
    spurious_label_weights: tuple[float, ...] = DEFAULT_SPURIOUS_LABEL_WEIGHTS

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError("expert name must be non-empty text")
        for attr in ("miss_rate", "label_change_rate", "adjacent_fraction"):
            _check_range(attr, getattr(self, attr), 0.0, 1.0)
        _check_range("bias", self.bias, -1.0, 1.0)
        for attr in ("spurious_rate", "jitter"):
            _check_range(attr, getattr(self, attr), 0.0, math.inf)
        for attr in ("miss_factors", "spurious_label_weights"):
            values = tuple(float(v) for v in getattr(self, attr))
            if len(values) != NUM_CLASSES:
                raise ValueError(f"{attr} needs {NUM_CLASSES} values, got {len(values)}")
            if not all(math.isfinite(v) and v >= 0 for v in values) or sum(values) <= 0:
                raise ValueError(f"{attr} must be non-negative, finite, not all zero: {values}")
            object.__setattr__(self, attr, values)


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not (low <= value <= high) or math.isinf(value):
        raise ValueError(f"{name} must be between {low:g} and {high:g}, got {value!r}")


def miss_probability(profile: ExpertProfile, label: str | int) -> float:
    """Probability that ``profile`` misses a true box with this label (name or index 0..5)."""
    # mypy does not narrow by numbers.Integral (which, unlike int, takes NumPy integers too)
    index = label_index(label_name(label) if isinstance(label, numbers.Integral) else label)  # type: ignore[arg-type]
    factors = profile.miss_factors
    return min(1.0, profile.miss_rate * factors[index] / (sum(factors) / len(factors)))


# Archetypes of a realistic panel: (role, miss, spurious/image, jitter, label change, adjacent, bias)
_ARCHETYPES: tuple[tuple[str, float, float, float, float, float, float], ...] = (
    ("senior", 0.04, 0.10, 0.03, 0.07, 0.90, 0.0),
    ("cautious over-caller", 0.06, 0.40, 0.05, 0.18, 0.85, 0.6),
    ("junior", 0.20, 0.30, 0.08, 0.25, 0.70, -0.2),
    ("conservative under-caller", 0.12, 0.15, 0.05, 0.15, 0.85, -0.6),
    ("experienced generalist", 0.08, 0.20, 0.04, 0.12, 0.80, 0.1),
)


def default_panel(n_experts: int, seed: int) -> list[ExpertProfile]:
    """A realistic panel named expert1..expertN, the same for the same (n_experts, seed).

    expert1 is always the senior (fewest errors); the others take the remaining archetypes
    (cautious over-caller, junior who misses more, conservative under-caller, generalist) in an
    order shuffled by ``seed``, cycling when there are more than five experts. Each rate is then
    scaled by a seed-drawn factor in [0.8, 1.2] and the bias moved by up to +-0.1, so no two
    experts are alike.
    """
    if isinstance(n_experts, bool) or not isinstance(n_experts, int) or n_experts < 1:
        raise ValueError(f"n_experts must be a positive whole number, got {n_experts!r}")
    rng = np.random.default_rng(np.random.SeedSequence([_check_seed(seed), 0x9A4E1]))
    others = [int(i) for i in rng.permutation(np.arange(1, len(_ARCHETYPES)))]
    order = [0] + [others[i % len(others)] for i in range(n_experts - 1)]
    panel = []
    for number, archetype in enumerate(order, start=1):
        role, miss, spurious, jitter, change, adjacent, bias = _ARCHETYPES[archetype]
        scale = rng.uniform(0.8, 1.2, size=5)
        panel.append(
            ExpertProfile(
                name=f"expert{number}",
                role=role,
                miss_rate=float(min(1.0, miss * scale[0])),
                spurious_rate=float(spurious * scale[1]),
                jitter=float(jitter * scale[2]),
                label_change_rate=float(min(1.0, change * scale[3])),
                adjacent_fraction=float(min(1.0, adjacent * scale[4])),
                bias=float(np.clip(bias + rng.uniform(-0.1, 0.1), -1.0, 1.0)),
            )
        )
    return panel


@dataclass(frozen=True)
class SimulatedAnnotation:
    """One expert's boxes for one image, with where each came from.

    ``origin[i]`` is the index in the truth of the box ``boxes[i]`` was drawn from, or None for a
    false box; ``label_changed[i]`` says whether its label differs from that true box's (always
    False for false boxes); ``missed`` lists the truth indices the expert did not draw.
    """

    boxes: tuple[Box, ...]
    origin: tuple[int | None, ...]
    label_changed: tuple[bool, ...]
    missed: tuple[int, ...] = field(default=())


def simulate_expert_detailed(
    truth: Sequence[Box],
    image_width: float,
    image_height: float,
    profile: ExpertProfile,
    rng: np.random.Generator,
) -> SimulatedAnnotation:
    """What ``profile`` draws on an image whose true boxes are ``truth`` (see the module docstring).

    ``truth`` boxes must lie inside the image (InvalidBox otherwise). Returned labels are canonical
    Bethesda names and scores are None.
    """
    width, height = _check_image_size(image_width, image_height)
    truth = [box.validated(width, height) for box in truth]
    boxes: list[Box] = []
    origin: list[int | None] = []
    changed: list[bool] = []
    missed: list[int] = []
    for index, true_box in enumerate(truth):
        grade = BETHESDA.index(true_box.label)
        if rng.random() < miss_probability(profile, grade):
            missed.append(index)
            continue
        drawn = _jittered(true_box, width, height, profile.jitter, rng)
        new_grade = grade
        if rng.random() < profile.label_change_rate:
            new_grade = _changed_grade(grade, profile.adjacent_fraction, profile.bias, rng)
        boxes.append(Box(drawn.x, drawn.y, drawn.width, drawn.height, BETHESDA[new_grade]))
        origin.append(index)
        changed.append(new_grade != grade)

    weights = np.asarray(profile.spurious_label_weights, dtype=float)
    weights = weights / weights.sum()
    placed: list[Box] = []
    for _ in range(int(rng.poisson(profile.spurious_rate))):
        label = BETHESDA[int(rng.choice(NUM_CLASSES, p=weights))]
        box = _place_spurious(truth, placed, width, height, label, rng)
        if box is not None:
            placed.append(box)
    boxes.extend(placed)
    origin.extend([None] * len(placed))
    changed.extend([False] * len(placed))
    return SimulatedAnnotation(tuple(boxes), tuple(origin), tuple(changed), tuple(missed))


def simulate_expert(
    truth: Sequence[Box],
    image_width: float,
    image_height: float,
    profile: ExpertProfile,
    rng: np.random.Generator,
) -> list[Box]:
    """The boxes of ``simulate_expert_detailed``, without their provenance."""
    return list(simulate_expert_detailed(truth, image_width, image_height, profile, rng).boxes)


def expert_rng(seed: int, image_key: str | int, expert_name: str) -> np.random.Generator:
    """The generator one expert uses on one image: the same in every process and on every run.

    Built from a SeedSequence of ``seed`` and SHA-256 digests of ``str(image_key)`` and the expert's
    name (so the image key 7 and "7" are the same image). Python's ``hash()`` is not used: it
    changes from one process to the next.
    """
    entropy = [_check_seed(seed), _digest(str(image_key)), _digest(expert_name)]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def simulate_panel(
    truth: Sequence[Box],
    image_width: float,
    image_height: float,
    profiles: Sequence[ExpertProfile],
    seed: int,
    image_key: str | int,
) -> dict[str, list[Box]]:
    """Each expert's boxes for one image, keyed by expert name, in the profiles' order.

    Deterministic for (seed, image_key, expert name): an expert's boxes do not depend on who else
    is on the panel or in which order.
    """
    names = [profile.name for profile in profiles]
    if len(set(names)) != len(names):
        raise ValueError(f"expert names must be unique, got {names}")
    return {
        profile.name: simulate_expert(
            truth, image_width, image_height, profile, expert_rng(seed, image_key, profile.name)
        )
        for profile in profiles
    }


@dataclass(frozen=True)
class MeasuredRates:
    """Disagreement of one expert with the truth over many images, counted by ``measured_rates``.

    A true box counts as missed when no expert box matches it at the IoU threshold (so a drawn box
    jittered below the threshold counts as a miss and a false box); an unmatched expert box counts
    as spurious. Label statistics are over matched pairs. Undefined rates (no denominator) are NaN.
    """

    images: int
    truth_boxes: int
    annotated_boxes: int
    matched: int
    changed: int
    adjacent_changes: int
    upward_changes: int
    iou_sum: float

    @property
    def miss_rate(self) -> float:
        return _ratio(self.truth_boxes - self.matched, self.truth_boxes)

    @property
    def spurious_per_image(self) -> float:
        return _ratio(self.annotated_boxes - self.matched, self.images)

    @property
    def label_change_rate(self) -> float:
        return _ratio(self.changed, self.matched)

    @property
    def adjacent_share(self) -> float:
        return _ratio(self.adjacent_changes, self.changed)

    @property
    def upward_share(self) -> float:
        """Share of label changes that went to a more severe grade."""
        return _ratio(self.upward_changes, self.changed)

    @property
    def downward_changes(self) -> int:
        return self.changed - self.upward_changes

    @property
    def mean_iou(self) -> float:
        return _ratio(self.iou_sum, self.matched)


def measured_rates(
    truth_list: Sequence[Sequence[Box]],
    annotations_list: Sequence[Sequence[Box]],
    iou_threshold: float = 0.5,
) -> MeasuredRates:
    """Match one expert's boxes to the truth image by image and count how they differ.

    Matching ignores labels: on each image, a one-to-one assignment (Hungarian, cost 1 - IoU) among
    pairs with IoU >= ``iou_threshold``, as many pairs as possible, then the highest total IoU.
    """
    if len(truth_list) != len(annotations_list):
        raise ValueError(
            f"{len(truth_list)} images of truth but {len(annotations_list)} of annotations"
        )
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold!r}")
    n_truth = n_annotated = matched = changed = adjacent = upward = 0
    iou_sum = 0.0
    for truth, drawn in zip(truth_list, annotations_list, strict=True):
        n_truth += len(truth)
        n_annotated += len(drawn)
        if not truth or not drawn:
            continue
        overlaps = np.array([[iou(t, a) for a in drawn] for t in truth], dtype=float)
        allowed = overlaps >= iou_threshold
        # Disallowed pairs cost more than any set of allowed ones, so the assignment first
        # maximises the number of allowed pairs; the disallowed ones it still makes are dropped.
        cost = np.where(allowed, 1.0 - overlaps, float(len(truth) + len(drawn) + 1))
        rows, cols = linear_sum_assignment(cost)
        for row, col in zip(rows, cols, strict=True):
            if not allowed[row, col]:
                continue
            matched += 1
            iou_sum += float(overlaps[row, col])
            step = label_index(drawn[col].label) - label_index(truth[row].label)
            if step:
                changed += 1
                adjacent += abs(step) == 1
                upward += step > 0
    return MeasuredRates(
        images=len(truth_list),
        truth_boxes=n_truth,
        annotated_boxes=n_annotated,
        matched=matched,
        changed=changed,
        adjacent_changes=adjacent,
        upward_changes=upward,
        iou_sum=iou_sum,
    )


# -- internals ---------------------------------------------------------------------------------


def _jittered(
    box: Box, width: float, height: float, jitter: float, rng: np.random.Generator
) -> Box:
    """``box`` with each edge moved by N(0, jitter x its side), kept inside the image.

    A draw that shrinks a side below MIN_JITTERED_SIZE_FRACTION is drawn again; after
    _JITTER_TRIES such draws (only with very large jitter) the true box is kept. Clipping to the
    image can only fail when the box left it entirely; then the true box is kept too.
    """
    if jitter == 0:
        return box
    for _ in range(_JITTER_TRIES):
        dx1, dx2 = rng.normal(0.0, jitter * box.width, size=2)
        dy1, dy2 = rng.normal(0.0, jitter * box.height, size=2)
        x1, x2 = box.x + dx1, box.x2 + dx2
        y1, y2 = box.y + dy1, box.y2 + dy2
        if (
            x2 - x1 >= MIN_JITTERED_SIZE_FRACTION * box.width
            and y2 - y1 >= MIN_JITTERED_SIZE_FRACTION * box.height
        ):
            clipped = clip_box(
                Box(float(x1), float(y1), float(x2 - x1), float(y2 - y1), box.label), width, height
            )
            return clipped if clipped is not None else box
    return box


def _changed_grade(
    grade: int, adjacent_fraction: float, bias: float, rng: np.random.Generator
) -> int:
    """A grade other than ``grade`` (see ``ExpertProfile`` for the rules)."""
    adjacent = rng.random() < adjacent_fraction
    upward = rng.random() < (1.0 + bias) / 2.0
    if adjacent:
        up = [grade + 1] if grade + 1 < NUM_CLASSES else []
        down = [grade - 1] if grade - 1 >= 0 else []
    else:
        up = list(range(grade + 2, NUM_CLASSES))
        down = list(range(grade - 2, -1, -1))
    targets = (up or down) if upward else (down or up)
    weights = np.array([2.0 ** -(abs(t - grade) - 1) for t in targets])
    return int(targets[int(rng.choice(len(targets), p=weights / weights.sum()))])


def _place_spurious(
    truth: Sequence[Box],
    placed: Sequence[Box],
    width: float,
    height: float,
    label: str,
    rng: np.random.Generator,
) -> Box | None:
    """A false box away from every true box and every false box already placed, or None."""
    for _ in range(SPURIOUS_PLACEMENT_TRIES):
        if truth:
            model = truth[int(rng.integers(len(truth)))]
            scale = math.exp(rng.normal(0.0, SPURIOUS_SIZE_SPREAD))
            box_w, box_h = model.width * scale, model.height * scale
        else:
            side = DEFAULT_SPURIOUS_SIZE_FRACTION * min(width, height)
            side *= math.exp(rng.normal(0.0, SPURIOUS_SIZE_SPREAD))
            aspect = math.exp(rng.normal(0.0, SPURIOUS_SIZE_SPREAD / 2))
            box_w, box_h = side * aspect, side / aspect
        box_w, box_h = min(box_w, width), min(box_h, height)
        x = float(rng.uniform(0.0, width - box_w)) if box_w < width else 0.0
        y = float(rng.uniform(0.0, height - box_h)) if box_h < height else 0.0
        candidate = clip_box(Box(x, y, float(box_w), float(box_h), label), width, height)
        if candidate is None:
            continue
        if all(iou(candidate, other) < SPURIOUS_MAX_IOU for other in (*truth, *placed)):
            return candidate
    return None


def _check_image_size(image_width: float, image_height: float) -> tuple[float, float]:
    for name, value in (("image_width", image_width), ("image_height", image_height)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
    return float(image_width), float(image_height)


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative whole number, got {seed!r}")
    return int(seed)


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan
