"""Procedural liquid-based cytology (Pap) images with one Bethesda-labelled box per cell cluster.

Pure module (NumPy + OpenCV, no Django import). It stands in for real slides in tests, demos and
the active-learning simulation: every image is reproducible from one integer seed.

How a picture is made
---------------------
1. A *scene* is drawn from ``numpy.random.default_rng(seed)``: scattered single normal squamous
   cells (no box), a few inflammatory cells, and clusters whose grade is drawn from
   ``SyntheticConfig.grade_mix``. Each cell's look (size, nucleus-to-cytoplasm ratio, chromatin
   density and coarseness, nuclear contour, koilocytic halo, cytoplasm kind and shape) is drawn
   from distributions keyed on the cluster's grade (``_LOOKS``). The distributions of adjacent
   grades overlap, and a per-cluster latent "severity tilt" shifts all cells of a cluster
   together, so some clusters look like the next grade up or down.
2. Each cell is a mix of stains (hematoxylin in nuclei; light green, eosin and orange G in
   cytoplasm) whose per-image optical-density matrix ``M`` wanders a little (stain variation).
   Cells add their optical density ``C @ M`` into a float canvas, each one only inside its own
   bounding box (region of interest). Edges are soft (anti-aliased ramps) and densities add, so
   overlapping cytoplasm darkens as on a slide.
3. The canvas becomes light by Beer-Lambert, ``I = I0 * exp(-OD)``, with a smooth illumination
   ``I0`` (tinted background, faint haze, vignetting).
4. Per-image acquisition effects: hue/saturation shift, brightness/contrast, focus blur, sensor
   noise, gamma; 8-bit RGB.

The grade looks follow the Bethesda descriptions: nuclear enlargement and N:C ratio rise from
NILM to HSIL; hyperchromasia and coarse chromatin rise with grade; nuclear membranes become
irregular; LSIL shows koilocytes (sharp perinuclear cavity with a dense rim, bi-nucleation);
ASC-US sits between NILM and LSIL; ASC-H shows few small metaplastic-sized cells with high N:C;
HSIL crowded sheets of small cells with very high N:C; SCC pleomorphic keratinised cells (orange
cytoplasm, tadpole and spindle shapes, ink-dark nuclei) with a granular diathesis.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from annotation.bethesda import BETHESDA, NUM_CLASSES, normalize_label
from annotation.geometry import Box, ImageRecord

__all__ = [
    "SyntheticConfig",
    "SyntheticImage",
    "generate_image",
    "generate_dataset",
    "image_seed",
    "cluster_crops",
]

#: Size of the image the default counts are given for (scattered and inflammatory cells scale
#: with image area from here).
_REFERENCE_AREA = 1636 * 1088

# Rows of the stain matrix.
_H, _GREEN, _EOSIN, _ORANGE = 0, 1, 2, 3


# --------------------------------------------------------------------------------------------
# Configuration and result
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticConfig:
    """Everything that shapes a synthetic image; the seed picks one image out of this family.

    Ranges are ``(low, high)`` tuples, inclusive, drawn uniformly per image unless noted.
    """

    #: Image width in pixels.
    width: int = 1636
    #: Image height in pixels.
    height: int = 1088
    #: Scattered single normal superficial/intermediate cells (no box) at the 1636x1088 size;
    #: other sizes get the same density (the count scales with image area).
    scattered_cells: tuple[int, int] = (45, 90)
    #: Neutrophils scattered over the field (no box), at the 1636x1088 size, scaled by area.
    inflammatory_cells: tuple[int, int] = (10, 50)
    #: Cell clusters per image; each gets one box labelled with its Bethesda grade. Fewer are
    #: drawn when the image is too small to place them without piling them on each other.
    clusters_per_image: tuple[int, int] = (3, 7)
    #: Probability of each grade for a cluster, in BETHESDA order (NILM, ASC-US, LSIL, ASC-H,
    #: HSIL, SCC); normalised, so weights work too.
    grade_mix: tuple[float, ...] = (0.2, 0.16, 0.16, 0.16, 0.16, 0.16)
    #: Cells per cluster before the grade's own tendency (ASC-H groups are small, HSIL sheets
    #: large) is applied; the result is kept inside this range.
    cells_per_cluster: tuple[int, int] = (4, 22)
    #: Multiplies every length (cell and nucleus sizes, spacing): 0.5 draws cells at half size,
    #: as a lower magnification would.
    cell_scale: float = 1.0
    #: Multiplies the spread of every per-grade distribution: 0 makes each grade a caricature,
    #: 1 is the default overlap between adjacent grades, above 1 makes grades harder to tell.
    grade_overlap: float = 1.0
    #: Share (0..1) of a cell's variation that is common to its whole cluster (severity tilt).
    cluster_coherence: float = 0.6
    #: Gaussian focus-blur sigma in pixels, drawn per image.
    blur_sigma: tuple[float, float] = (0.2, 1.4)
    #: Strength of stain variation (stain colour, intensity, background tint); 0 turns it off.
    stain_variation: float = 1.0
    #: Strength of exposure variation (brightness, contrast, gamma, hue, saturation,
    #: vignetting); 0 turns it off.
    exposure_variation: float = 1.0
    #: Sensor-noise standard deviation in 8-bit grey levels, drawn per image.
    noise_sigma: tuple[float, float] = (0.5, 2.5)
    #: Probability that an SCC cluster comes with a granular tumour diathesis around it.
    diathesis: float = 0.7

    def __post_init__(self) -> None:
        if not (isinstance(self.width, int) and isinstance(self.height, int)):
            raise ValueError("width and height must be integers")
        if self.width < 32 or self.height < 32:
            raise ValueError(f"image must be at least 32x32, got {self.width}x{self.height}")
        for name in (
            "scattered_cells",
            "inflammatory_cells",
            "clusters_per_image",
            "cells_per_cluster",
            "blur_sigma",
            "noise_sigma",
        ):
            low, high = getattr(self, name)
            if not (0 <= low <= high):
                raise ValueError(f"{name} must be a range 0 <= low <= high, got {(low, high)}")
        if self.cells_per_cluster[0] < 1:
            raise ValueError("cells_per_cluster must start at 1 or more")
        mix = self.grade_mix
        if len(mix) != NUM_CLASSES or any(not (w >= 0) for w in mix) or sum(mix) <= 0:
            raise ValueError(
                f"grade_mix needs {NUM_CLASSES} non-negative weights (order {', '.join(BETHESDA)})"
                f" with a positive sum, got {mix!r}"
            )
        if not self.cell_scale > 0:
            raise ValueError(f"cell_scale must be positive, got {self.cell_scale!r}")
        if not self.grade_overlap >= 0:
            raise ValueError(f"grade_overlap must be >= 0, got {self.grade_overlap!r}")
        if not 0 <= self.cluster_coherence <= 1:
            raise ValueError(f"cluster_coherence must be in 0..1, got {self.cluster_coherence!r}")
        for name in ("stain_variation", "exposure_variation", "diathesis"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0")

    @classmethod
    def small(
        cls,
        size: int | tuple[int, int] = 256,
        *,
        grades: str | Iterable[str] | None = None,
        **overrides,
    ) -> SyntheticConfig:
        """A config for small images (tests, classifier crops): 1-3 clusters of 3-10 cells.

        ``size`` is an int (square) or ``(width, height)``; ``grades`` restricts clusters to
        these Bethesda labels (equal weights). Any field can be overridden by keyword.
        """
        width, height = (size, size) if isinstance(size, int) else size
        values: dict = {
            "width": int(width),
            "height": int(height),
            "clusters_per_image": (1, 3),
            "cells_per_cluster": (3, 10),
        }
        if grades is not None:
            wanted = {normalize_label(g) for g in ([grades] if isinstance(grades, str) else grades)}
            values["grade_mix"] = tuple(1.0 if name in wanted else 0.0 for name in BETHESDA)
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes) -> SyntheticConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, eq=False)
class SyntheticImage:
    """One generated picture: ``image`` is H x W x 3 uint8 RGB; one box per cell cluster."""

    image: np.ndarray = field(repr=False)
    boxes: tuple[Box, ...]
    seed: int

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    def to_record(self, file_name: str) -> ImageRecord:
        return ImageRecord(file_name=file_name, width=self.width, height=self.height,
                           boxes=self.boxes)


# --------------------------------------------------------------------------------------------
# Grade looks: per-grade distributions of per-cell features
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Look:
    """How cells of one grade tend to look. (mean, sd) pairs; sd is scaled by grade_overlap."""

    radius: tuple[float, float]  # cytoplasm radius in pixels (equivalent circle)
    nc: tuple[float, float]  # nucleus radius / cell radius
    chroma: tuple[float, float]  # hematoxylin concentration (hyperchromasia)
    texture: tuple[float, float]  # chromatin texture amplitude (coarseness)
    coarse: float  # share of the clumped (coarse) chromatin pattern vs fine
    membrane: tuple[float, float]  # nuclear contour irregularity (harmonic amplitude)
    halo: float  # probability of a koilocytic cavity
    halo_clear: tuple[float, float]  # how empty the cavity is (0..1)
    multinucleate: float  # probability of two (rarely three) nuclei
    crowding: float  # centre distance / (r_i + r_j) inside the cluster: lower = more crowded
    count_factor: float  # multiplies the drawn cells-per-cluster
    kinds: dict[str, float]  # cytoplasm kind weights: mature, superficial, metaplastic, ...
    cells: tuple[int, int] = (1, 1000)  # the grade's own bounds on cells per cluster


_LOOKS: dict[str, _Look] = {
    # Sheets of normal intermediate/superficial cells: big polygonal cytoplasm, small nuclei.
    "NILM": _Look(
        radius=(40, 6), nc=(0.125, 0.022), chroma=(0.75, 0.12), texture=(0.12, 0.04), coarse=0.2,
        membrane=(0.03, 0.012), halo=0.0, halo_clear=(0.0, 0.0), multinucleate=0.01,
        crowding=0.82, count_factor=1.0, kinds={"mature": 0.65, "superficial": 0.35},
    ),
    # Normal squamous metaplasia (a mimic of ASC-H): NILM too, drawn for 25% of NILM clusters.
    "NILM-metaplastic": _Look(
        radius=(23, 4), nc=(0.27, 0.04), chroma=(0.8, 0.12), texture=(0.14, 0.05), coarse=0.25,
        membrane=(0.035, 0.015), halo=0.0, halo_clear=(0.0, 0.0), multinucleate=0.01,
        crowding=0.95, count_factor=0.6, kinds={"metaplastic": 1.0},
    ),
    # Mature cells, nucleus 2.5-3x an intermediate nucleus, slight hyperchromasia.
    "ASC-US": _Look(
        radius=(40, 7), nc=(0.19, 0.035), chroma=(0.92, 0.14), texture=(0.2, 0.06), coarse=0.35,
        membrane=(0.05, 0.02), halo=0.15, halo_clear=(0.45, 0.12), multinucleate=0.06,
        crowding=0.88, count_factor=0.6, kinds={"mature": 0.7, "superficial": 0.2,
                                                  "metaplastic": 0.1},
    ),
    # Koilocytes: mature cells, enlarged dark smudgy nuclei, sharp perinuclear cavity.
    "LSIL": _Look(
        radius=(42, 7), nc=(0.24, 0.045), chroma=(1.12, 0.16), texture=(0.3, 0.08), coarse=0.5,
        membrane=(0.09, 0.03), halo=0.7, halo_clear=(0.9, 0.06), multinucleate=0.22,
        crowding=0.88, count_factor=0.8, kinds={"mature": 0.6, "superficial": 0.4},
    ),
    # Few small metaplastic-sized cells with high N:C: not enough for HSIL.
    "ASC-H": _Look(
        radius=(21, 3.5), nc=(0.45, 0.07), chroma=(1.15, 0.16), texture=(0.32, 0.08), coarse=0.55,
        membrane=(0.09, 0.03), halo=0.03, halo_clear=(0.5, 0.15), multinucleate=0.03,
        crowding=1.0, count_factor=0.35, kinds={"metaplastic": 0.75, "basaloid": 0.25},
        cells=(1, 8),
    ),
    # Crowded sheets of small basaloid cells, very high N:C, coarse dark chromatin.
    "HSIL": _Look(
        radius=(16.5, 3), nc=(0.6, 0.08), chroma=(1.35, 0.18), texture=(0.42, 0.09), coarse=0.7,
        membrane=(0.13, 0.04), halo=0.04, halo_clear=(0.5, 0.15), multinucleate=0.05,
        crowding=0.62, count_factor=1.5, kinds={"basaloid": 0.75, "metaplastic": 0.25},
        cells=(8, 1000),
    ),
    # Pleomorphic keratinised cells, ink-dark nuclei, bizarre shapes.
    "SCC": _Look(
        radius=(27, 9), nc=(0.42, 0.12), chroma=(1.7, 0.25), texture=(0.48, 0.1), coarse=0.8,
        membrane=(0.17, 0.05), halo=0.0, halo_clear=(0.0, 0.0), multinucleate=0.06,
        crowding=0.8, count_factor=0.9, kinds={"keratin": 0.65, "basaloid": 0.2,
                                                "metaplastic": 0.15},
    ),
}


# --------------------------------------------------------------------------------------------
# Scene description
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Blob:
    """A soft-edged shape: polar radius function around a centre, stretched and rotated.

    The outline is ``radius * f(theta)`` in a frame rotated by ``angle`` and squeezed by
    ``aspect``; f mixes a polygon, smooth harmonics, local notches/bulges and tails. Everything
    is evaluated from cos/sin of theta obtained by division (no arctan2, no trigonometry on
    arrays), which is what keeps per-cell rendering cheap.
    """

    cx: float
    cy: float
    radius: float
    aspect: float = 1.0  # >= 1, stretch along the rotated x axis
    angle: float = 0.0
    poly_sides: int = 0  # 0 = no polygon component
    poly_weight: float = 0.0
    poly_phase: float = 0.0
    poly_jitter: tuple[tuple[float, float], ...] = ()  # per edge: (angle offset, distance factor)
    harmonics: tuple[tuple[int, float, float], ...] = ()  # (k, amplitude, phase)
    bumps: tuple[tuple[float, float, float], ...] = ()  # (angle, amplitude, width): notches
    tail: float = 0.0  # tadpole/spindle protrusion length, in radii
    tail_power: int = 6  # higher: thinner tail
    two_tails: bool = False
    soft: float = 1.2  # edge ramp width in pixels

    def extent(self) -> float:
        """A radius (pixels) that surely contains the blob and its soft edge."""
        grow = 1.0 + sum(abs(a) for _, a, _ in self.harmonics)
        if self.poly_sides:  # an irregular polygon's corners can reach past the radius
            grow *= 2.0 if self.poly_jitter else 1.0
        grow *= 1.0 + sum(max(0.0, a) for _, a, _ in self.bumps)
        return self.radius * grow * (1.0 + self.tail) * self.aspect + self.soft + 2.0

    def field(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Coverage (0..1) and signed inside-distance (pixels) on the grid ys x xs."""
        one = np.float32(1.0)
        dx = xs[None, :] - np.float32(self.cx)
        dy = ys[:, None] - np.float32(self.cy)
        ca, sa = np.float32(math.cos(self.angle)), np.float32(math.sin(self.angle))
        u = (dx * ca + dy * sa) * np.float32(1.0 / self.aspect)
        v = dy * ca - dx * sa
        rho = np.sqrt(u * u + v * v)
        inv = one / (rho + np.float32(1e-6))
        cos1, sin1 = u * inv, v * inv  # cos and sin of the polar angle
        r = self._relative_radius(u, v, inv, cos1, sin1)
        inside = r * np.float32(self.radius) - rho
        alpha = inside * np.float32(1.0 / self.soft) + np.float32(0.5)
        np.maximum(alpha, 0.0, out=alpha)
        np.minimum(alpha, one, out=alpha)
        return alpha, inside

    def _relative_radius(self, u, v, inv, cos1, sin1) -> np.ndarray:
        one = np.float32(1.0)
        r = np.ones_like(u)
        if self.poly_sides:
            # regular polygon: radius = cos(pi/n) / cos(angle to the nearest edge normal)
            # (irregular) polygon: edge k has normal angle phi_k at distance d_k; the outline
            # radius is 1 / max_k(cos(theta - phi_k) / d_k)
            n = self.poly_sides
            half = math.cos(math.pi / n)
            jitter = self.poly_jitter or ((0.0, 1.0),) * n
            proj = None
            for k, (offset, scale) in enumerate(jitter):
                phi = self.poly_phase + 2.0 * math.pi * (k + 0.5) / n + offset
                d = half * scale
                p = u * np.float32(math.cos(phi) / d) + v * np.float32(math.sin(phi) / d)
                proj = p if proj is None else np.maximum(proj, p, out=proj)
            reach = np.maximum(proj * inv, np.float32(0.5))
            r = np.float32(1.0 - self.poly_weight) + np.float32(self.poly_weight) / reach
        if self.harmonics:
            wanted = {k: (a, ph) for k, a, ph in self.harmonics}
            ck, sk = cos1, sin1
            for k in range(2, max(wanted) + 1):
                ck, sk = ck * cos1 - sk * sin1, sk * cos1 + ck * sin1
                if k in wanted:
                    amp, phase = wanted[k]
                    r = r + (ck * np.float32(amp * math.cos(phase))
                             - sk * np.float32(amp * math.sin(phase)))
        if self.bumps:
            bump = np.zeros_like(u)
            for center, amp, width in self.bumps:
                cos_d = cos1 * np.float32(math.cos(center)) + sin1 * np.float32(math.sin(center))
                kappa = np.float32(1.0 / (width * width))
                bump += np.float32(amp) * np.exp((cos_d - one) * kappa)
            r = r * (one + bump)
        if self.tail:
            c = np.abs(cos1) if self.two_tails else np.maximum(cos1, 0.0)
            r = r * (one + np.float32(self.tail) * _int_power(c, self.tail_power))
        return r


def _int_power(x: np.ndarray, p: int) -> np.ndarray:
    """x ** p for a small positive integer p by repeated squaring (np.power is slow)."""
    result = None
    base = x
    while p:
        if p & 1:
            result = base if result is None else result * base
        p >>= 1
        if p:
            base = base * base
    return result if result is not None else np.ones_like(x)


@dataclass(slots=True)
class _Nucleus:
    blob: _Blob
    chroma: float  # hematoxylin concentration
    texture: float  # chromatin texture amplitude
    coarse: float  # share of the coarse noise field
    membrane_accent: float  # extra density along the nuclear membrane


@dataclass(slots=True)
class _Halo:
    blob: _Blob
    clear: float  # 0..1, how much cytoplasm is removed inside
    rim: float  # density added just outside the cavity (peripheral condensation)


@dataclass(slots=True)
class _Cell:
    body: _Blob
    density: float  # cytoplasm stain concentration
    mix: tuple[float, float, float]  # share of light green, eosin, orange G
    nuclei: tuple[_Nucleus, ...] = ()
    halo: _Halo | None = None
    fold: tuple[float, float, float, float, float] | None = None  # nx, ny, offset, gain, width
    slope: tuple[float, float] = (0.0, 0.0)  # thickness gradient across the cell, per radius
    edge: float = 0.35  # denser cytoplasm rim
    cluster: int = -1  # index of the cluster it belongs to, -1 for none


@dataclass(slots=True)
class _Scene:
    width: int
    height: int
    cells: list[_Cell]
    cluster_labels: list[str]


# --------------------------------------------------------------------------------------------
# Drawing the scene
# --------------------------------------------------------------------------------------------


def _gauss(rng: np.random.Generator, mean_sd: tuple[float, float], spread: float,
           shared: float = 0.0, coherence: float = 0.0) -> float:
    """mean + sd * spread * (coherence * shared + sqrt(1 - coherence^2) * own noise)."""
    mean, sd = mean_sd
    own = rng.standard_normal()
    z = coherence * shared + math.sqrt(max(0.0, 1.0 - coherence * coherence)) * own
    return mean + sd * spread * z


def _harmonics(rng: np.random.Generator, amplitude: float, ks: Sequence[int]):
    """Smooth outline wobble: total amplitude shared over the harmonics, less for high k."""
    amplitude = max(0.0, amplitude)
    weights = rng.exponential(size=len(ks)) * np.array([ks[0] / k for k in ks])
    weights = weights / weights.sum()
    return tuple(
        (int(k), float(amplitude * w), float(rng.uniform(0, 2 * math.pi)))
        for k, w in zip(ks, weights, strict=True)
    )


def _notches(rng: np.random.Generator, irregularity: float):
    """Irregular nuclear membrane: a few local notches, grooves and bulges."""
    count = int(rng.poisson(min(6.0, irregularity * 30.0)))
    return tuple(
        (float(rng.uniform(0, 2 * math.pi)),
         float(rng.choice((-1.0, 1.0), p=(0.6, 0.4)) * rng.uniform(0.5, 1.4) * irregularity),
         float(rng.uniform(0.2, 0.55)))
        for _ in range(count)
    )


def _cytoplasm_mix(rng: np.random.Generator, kind: str) -> tuple[float, float, float]:
    if kind == "superficial":  # eosinophilic, pink to orange-pink
        mix = (rng.uniform(0.0, 0.2), rng.uniform(0.7, 1.0), rng.uniform(0.0, 0.25))
    elif kind == "mature":  # intermediate: cyanophilic, some with a pink tinge
        mix = (rng.uniform(0.75, 1.0), rng.uniform(0.0, 0.3), 0.0)
    elif kind in ("metaplastic", "basaloid"):
        mix = (rng.uniform(0.85, 1.0), rng.uniform(0.0, 0.15), 0.0)
    else:  # keratin: orangeophilic to deep eosinophilic
        mix = (rng.uniform(0.0, 0.15), rng.uniform(0.2, 0.6), rng.uniform(0.6, 1.0))
    total = sum(mix)
    return (mix[0] / total, mix[1] / total, mix[2] / total)


def _body(rng: np.random.Generator, kind: str, cx: float, cy: float, radius: float) -> _Blob:
    """Cytoplasm outline for a cell kind."""
    if kind in ("mature", "superficial"):  # flat polygonal squames
        return _Blob(
            cx, cy, radius, aspect=rng.uniform(1.0, 1.45), angle=rng.uniform(0, math.pi),
            poly_sides=(n := int(rng.integers(4, 8))), poly_weight=rng.uniform(0.55, 0.95),
            poly_phase=rng.uniform(0, 2 * math.pi), poly_jitter=_polygon_jitter(rng, n, 0.3),
            harmonics=_harmonics(rng, rng.uniform(0.02, 0.07), (2, 3, 5)), soft=1.4,
        )
    if kind == "metaplastic":  # round-oval, dense, sometimes slightly angular
        return _Blob(
            cx, cy, radius, aspect=rng.uniform(1.0, 1.35), angle=rng.uniform(0, math.pi),
            poly_sides=int(rng.integers(4, 7)), poly_weight=rng.uniform(0.0, 0.35),
            poly_phase=rng.uniform(0, 2 * math.pi),
            harmonics=_harmonics(rng, rng.uniform(0.03, 0.09), (2, 3, 4)), soft=1.2,
        )
    if kind == "basaloid":  # small round/oval, scant cytoplasm
        return _Blob(
            cx, cy, radius, aspect=rng.uniform(1.0, 1.5), angle=rng.uniform(0, math.pi),
            harmonics=_harmonics(rng, rng.uniform(0.03, 0.08), (2, 3)), soft=1.2,
        )
    # keratin: tadpole, spindle (fibre) or bizarre irregular
    form = rng.choice(3, p=(0.35, 0.3, 0.35))
    if form == 0:
        return _Blob(
            cx, cy, radius * 0.8, aspect=rng.uniform(1.0, 1.3), angle=rng.uniform(0, 2 * math.pi),
            harmonics=_harmonics(rng, 0.06, (2, 3)), tail=rng.uniform(1.5, 3.0),
            tail_power=int(rng.integers(8, 21)), soft=1.1,
        )
    if form == 1:
        return _Blob(
            cx, cy, radius * 0.55, aspect=rng.uniform(2.2, 3.8), angle=rng.uniform(0, math.pi),
            harmonics=_harmonics(rng, 0.05, (2, 3)), tail=rng.uniform(0.3, 1.0),
            tail_power=int(rng.integers(6, 15)), two_tails=True, soft=1.1,
        )
    return _Blob(
        cx, cy, radius, aspect=rng.uniform(1.0, 1.8), angle=rng.uniform(0, math.pi),
        harmonics=_harmonics(rng, rng.uniform(0.15, 0.3), (2, 3, 4, 5)), soft=1.1,
    )


def _polygon_jitter(rng: np.random.Generator, sides: int, amount: float):
    """Irregular polygon: each edge's direction and distance wander a little."""
    step = math.pi / sides
    return tuple(
        (float(rng.normal(0, amount * step)), float(rng.uniform(1 - amount / 2, 1 + amount / 4)))
        for _ in range(sides)
    )


def _cytoplasm_density(rng: np.random.Generator, kind: str) -> float:
    mean, sd = {
        "superficial": (0.36, 0.07),
        "mature": (0.4, 0.08),
        "metaplastic": (0.62, 0.1),
        "basaloid": (0.5, 0.1),
        "keratin": (0.85, 0.15),
    }[kind]
    return float(max(0.12, rng.normal(mean, sd)))


def _make_cell(
    rng: np.random.Generator,
    look: _Look,
    kind: str,
    cx: float,
    cy: float,
    radius: float,
    spread: float,
    tilt: float,
    coherence: float,
    scale: float,
    cluster: int,
) -> _Cell:
    body = _body(rng, kind, cx, cy, radius)
    # Nucleus: ratio to the cytoplasm's equivalent radius (body.radius may be shrunk by shape).
    nc = _gauss(rng, look.nc, spread, tilt, coherence)
    nr = float(np.clip(nc * radius, 2.0 * scale, 0.85 * body.radius))
    if kind == "superficial" and look is _LOOKS["NILM"]:
        nr = float(max(2.0 * scale, rng.normal(3.2, 0.5) * scale))  # pyknotic
    chroma = max(0.35, _gauss(rng, look.chroma, spread, tilt, coherence))
    if kind == "superficial" and look is _LOOKS["NILM"]:
        chroma = max(chroma, rng.normal(1.45, 0.12))
    texture = max(0.03, _gauss(rng, look.texture, spread, tilt, coherence))
    membrane = max(0.0, _gauss(rng, look.membrane, spread, tilt, coherence))

    halo = None
    n_nuclei = 1
    if rng.random() < look.multinucleate:
        n_nuclei = 2 if rng.random() < 0.85 else 3
    if rng.random() < look.halo:
        hr = min(body.radius * rng.uniform(0.45, 0.7), max(nr * 2.2, body.radius * 0.4))
        hx = cx + rng.normal(0, 0.08) * body.radius
        hy = cy + rng.normal(0, 0.08) * body.radius
        clear = float(np.clip(rng.normal(*look.halo_clear), 0.1, 0.98))
        halo = _Halo(
            _Blob(hx, hy, hr, aspect=rng.uniform(1.0, 1.35), angle=rng.uniform(0, math.pi),
                  harmonics=_harmonics(rng, rng.uniform(0.05, 0.14), (2, 3, 4)), soft=0.7),
            clear=clear,
            rim=float(rng.uniform(0.6, 1.3) * clear),
        )
        anchor_x, anchor_y, room = hx, hy, hr * 0.35
    else:
        anchor_x, anchor_y = cx, cy
        room = max(0.0, body.radius - nr) * 0.3
        if body.tail and not body.two_tails:  # tadpole: nucleus in the head
            anchor_x -= math.cos(body.angle) * body.radius * 0.15
            anchor_y -= math.sin(body.angle) * body.radius * 0.15

    nuclei = []
    base_angle = rng.uniform(0, math.pi)
    for i in range(n_nuclei):
        r_i = nr * (rng.uniform(0.75, 0.95) if n_nuclei > 1 else 1.0)
        if n_nuclei > 1:  # side by side, touching or slightly overlapping
            a = base_angle + 2 * math.pi * i / n_nuclei
            ox, oy = math.cos(a) * r_i * 0.9, math.sin(a) * r_i * 0.9
        else:
            a = rng.uniform(0, 2 * math.pi)
            d = rng.uniform(0, room)
            ox, oy = math.cos(a) * d, math.sin(a) * d
        if body.aspect > 2.0:  # spindle cells carry elongated nuclei along their axis
            n_aspect, n_angle = rng.uniform(1.6, 2.6), body.angle
        else:
            n_aspect, n_angle = rng.uniform(1.0, 1.3), rng.uniform(0, math.pi)
        n_blob = _Blob(
            anchor_x + ox, anchor_y + oy, r_i / math.sqrt(n_aspect), aspect=n_aspect,
            angle=n_angle, harmonics=_harmonics(rng, membrane * 0.5, (2, 3, 4)),
            bumps=_notches(rng, membrane), soft=0.9,
        )
        nuclei.append(_Nucleus(
            n_blob, chroma=float(chroma * rng.uniform(0.92, 1.08)), texture=float(texture),
            coarse=float(np.clip(look.coarse + rng.normal(0, 0.1), 0, 1)),
            membrane_accent=float(0.15 + 0.5 * min(1.0, membrane * 4)),
        ))

    fold = None
    if kind in ("mature", "superficial") and rng.random() < 0.35:
        a = rng.uniform(0, 2 * math.pi)
        fold = (math.cos(a), math.sin(a), float(rng.uniform(0.45, 0.85) * body.radius),
                float(rng.uniform(0.4, 1.0)), float(rng.uniform(1.2, 2.5) * scale))
    return _Cell(
        body=body, density=_cytoplasm_density(rng, kind), mix=_cytoplasm_mix(rng, kind),
        nuclei=tuple(nuclei), halo=halo, fold=fold,
        slope=(float(rng.normal(0, 0.12)), float(rng.normal(0, 0.12))),
        edge=float(rng.uniform(0.2, 0.6)), cluster=cluster,
    )


def _layout_cluster(rng, radii: np.ndarray, crowding: float) -> np.ndarray:
    """Centres (n x 2) of a compact cluster grown cell by cell around the origin."""
    n = len(radii)
    pos = np.zeros((n, 2))
    for i in range(1, n):
        best, best_cost = None, np.inf
        centroid = pos[:i].mean(axis=0)
        for _ in range(5):
            j = rng.integers(0, i)
            a = rng.uniform(0, 2 * math.pi)
            dist = crowding * (radii[i] + radii[j]) * rng.uniform(0.85, 1.1)
            cand = pos[j] + dist * np.array([math.cos(a), math.sin(a)])
            gaps = np.hypot(*(pos[:i] - cand).T)
            overlap = np.maximum(0.0, crowding * (radii[:i] + radii[i]) - gaps).sum()
            cost = overlap + 0.15 * np.hypot(*(cand - centroid))
            if cost < best_cost:
                best, best_cost = cand, cost
        pos[i] = best
    return pos - pos.mean(axis=0)


def _overlap_fraction(a: tuple[float, float, float, float], b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return ix * iy / smaller if smaller > 0 else 1.0


def _scaled_count(rng, count_range: tuple[int, int], area_factor: float) -> int:
    low, high = count_range
    return int(round(rng.integers(low, high + 1) * area_factor))


def _build_scene(rng: np.random.Generator, cfg: SyntheticConfig) -> _Scene:
    width, height, scale = cfg.width, cfg.height, cfg.cell_scale
    spread, coherence = cfg.grade_overlap, cfg.cluster_coherence
    mix = np.asarray(cfg.grade_mix, dtype=float)
    mix = mix / mix.sum()
    cells: list[_Cell] = []
    labels: list[str] = []
    placed: list[tuple[float, float, float, float]] = []

    # Clusters first, so single cells can keep out of their way.
    n_clusters = int(rng.integers(cfg.clusters_per_image[0], cfg.clusters_per_image[1] + 1))
    for _ in range(n_clusters):
        grade = BETHESDA[int(rng.choice(NUM_CLASSES, p=mix))]
        look_name = grade
        if grade == "NILM" and rng.random() < 0.25:
            look_name = "NILM-metaplastic"
        look = _LOOKS[look_name]
        low, high = cfg.cells_per_cluster
        n = round(rng.integers(low, high + 1) * look.count_factor)
        n = int(np.clip(n, max(low, min(look.cells[0], high)), min(high, max(look.cells[1], low))))
        tilt = float(rng.standard_normal())
        kinds = list(look.kinds)
        weights = np.array([look.kinds[k] for k in kinds])
        cell_kinds = [kinds[i] for i in rng.choice(len(kinds), size=n, p=weights / weights.sum())]
        radii = np.array([
            max(6.0, _gauss(rng, look.radius, spread, tilt, coherence * 0.5)) * scale
            for _ in range(n)
        ])
        pos = _layout_cluster(rng, radii, look.crowding)
        half_w = float((pos[:, 0] + radii).max())
        half_h = float((pos[:, 1] + radii).max())
        lo_w, lo_h = float((pos[:, 0] - radii).min()), float((pos[:, 1] - radii).min())
        ext_w, ext_h = half_w - lo_w, half_h - lo_h
        # Try a few centres; keep clusters from piling on each other.
        spot = None
        for _attempt in range(25):
            if ext_w < width:
                ox = rng.uniform(-lo_w, width - half_w)
            else:
                ox = width / 2 - (lo_w + half_w) / 2
            if ext_h < height:
                oy = rng.uniform(-lo_h, height - half_h)
            else:
                oy = height / 2 - (lo_h + half_h) / 2
            rect = (ox + lo_w, oy + lo_h, ox + half_w, oy + half_h)
            if all(_overlap_fraction(rect, other) < 0.12 for other in placed):
                spot = (ox, oy, rect)
                break
        if spot is None:
            continue
        ox, oy, rect = spot
        index = len(labels)
        labels.append(grade)
        placed.append(rect)
        for (px, py), r, kind in zip(pos, radii, cell_kinds, strict=True):
            cells.append(_make_cell(rng, look, kind, ox + px, oy + py, float(r), spread, tilt,
                                    coherence, scale, index))
        if grade == "SCC" and rng.random() < cfg.diathesis:
            cells.extend(_diathesis(rng, rect, width, height, scale))

    area_factor = width * height / _REFERENCE_AREA
    # Scattered normal single squames (superficial and intermediate, a few parabasal).
    nilm = _LOOKS["NILM"]
    for _ in range(_scaled_count(rng, cfg.scattered_cells, area_factor)):
        for _attempt in range(6):
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
            if not any(r[0] < cx < r[2] and r[1] < cy < r[3] for r in placed):
                break
        roll = rng.random()
        if roll < 0.08:
            kind, look, radius = "metaplastic", _LOOKS["NILM-metaplastic"], rng.normal(22, 3)
        else:
            kind = "superficial" if roll < 0.5 else "mature"
            look, radius = nilm, rng.normal(44, 6)
        cells.append(_make_cell(rng, look, kind, cx, cy, max(10.0, radius) * scale, 1.0,
                                0.0, 0.0, scale, -1))
    # Neutrophils: small multilobed dark nuclei in a faint halo of cytoplasm.
    for _ in range(_scaled_count(rng, cfg.inflammatory_cells, area_factor)):
        cells.append(_neutrophil(rng, rng.uniform(0, width), rng.uniform(0, height), scale))
    return _Scene(width, height, cells, labels)


def _neutrophil(rng, cx: float, cy: float, scale: float) -> _Cell:
    r = rng.uniform(5.0, 7.0) * scale
    lobes = int(rng.integers(2, 5))
    base = rng.uniform(0, 2 * math.pi)
    nuclei = []
    for i in range(lobes):
        a = base + 2 * math.pi * i / lobes + rng.normal(0, 0.3)
        d = r * 0.38
        nuclei.append(_Nucleus(
            _Blob(cx + math.cos(a) * d, cy + math.sin(a) * d, rng.uniform(1.6, 2.3) * scale,
                  aspect=rng.uniform(1.0, 1.5), angle=rng.uniform(0, math.pi), soft=0.8),
            chroma=float(rng.uniform(1.4, 1.9)), texture=0.08, coarse=0.0, membrane_accent=0.1,
        ))
    body = _Blob(cx, cy, r, aspect=rng.uniform(1.0, 1.2), angle=rng.uniform(0, math.pi),
                 harmonics=_harmonics(rng, 0.05, (2, 3)), soft=1.0)
    return _Cell(body, density=0.18, mix=(0.55, 0.45, 0.0), nuclei=tuple(nuclei), edge=0.1)


def _diathesis(rng, rect, width: int, height: int, scale: float) -> list[_Cell]:
    """Granular necrotic debris and old blood around an invasive cancer."""
    x0, y0, x1, y1 = rect
    pad = 0.25 * max(x1 - x0, y1 - y0)
    out = []
    for _ in range(int(rng.integers(4, 10))):  # faint proteinaceous/fibrinous smudges
        cx = float(np.clip(rng.uniform(x0 - pad, x1 + pad), 0, width))
        cy = float(np.clip(rng.uniform(y0 - pad, y1 + pad), 0, height))
        blob = _Blob(cx, cy, rng.uniform(6.0, 18.0) * scale, aspect=rng.uniform(1.0, 2.5),
                     angle=rng.uniform(0, math.pi), harmonics=_harmonics(rng, 0.3, (2, 3, 4)),
                     soft=4.0)
        out.append(_Cell(blob, density=float(rng.uniform(0.06, 0.16)), mix=(0.3, 0.6, 0.1),
                         edge=0.0))
    for _ in range(int(rng.integers(60, 160))):  # granules, nuclear dust, old blood
        cx = float(np.clip(rng.normal((x0 + x1) / 2, (x1 - x0) / 2.5 + pad / 2), 0, width))
        cy = float(np.clip(rng.normal((y0 + y1) / 2, (y1 - y0) / 2.5 + pad / 2), 0, height))
        blob = _Blob(cx, cy, rng.uniform(0.6, 2.2) * scale, aspect=rng.uniform(1.0, 2.0),
                     angle=rng.uniform(0, math.pi), harmonics=_harmonics(rng, 0.15, (2, 3)),
                     soft=0.8)
        nuclear = rng.random() < 0.35  # nuclear dust vs eosinophilic granules / lysed blood
        mix = (0.15, 0.55, 0.3) if not nuclear else (0.5, 0.5, 0.0)
        cell = _Cell(blob, density=float(rng.uniform(0.3, 0.9)), mix=mix, edge=0.0)
        if nuclear:
            cell.nuclei = (_Nucleus(dataclasses.replace(blob, radius=blob.radius * 0.8),
                                    chroma=float(rng.uniform(0.8, 1.5)), texture=0.1,
                                    coarse=0.5, membrane_accent=0.0),)
        out.append(cell)
    return out


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Fields:
    """Full-frame texture fields (unit variance), sliced by each cell's region of interest."""

    fine: np.ndarray  # fine chromatin granules
    coarse: np.ndarray  # clumped chromatin
    smooth: np.ndarray  # slow variation: cytoplasm thickness
    smooth_small: np.ndarray  # the same at 1/48 scale: background haze


_FIELD_STEP = 48  # pixels per node of the slow field


def _normalised(a: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance, in place (large fields: statistics from a subsample)."""
    sample = a[::3, ::3] if a.size > 100_000 else a
    a -= np.float32(sample.mean())
    a *= np.float32(1.0 / max(float(sample.std()), 1e-6))
    return a


def _noise_fields(rng: np.random.Generator, height: int, width: int) -> _Fields:
    # uniform bytes; blurring makes them close to Gaussian (and drawing bytes is cheap)
    raw = np.frombuffer(rng.bytes(height * width), dtype=np.uint8).reshape(height, width)
    base = raw.astype(np.float32)
    fine = _normalised(cv2.GaussianBlur(base, (0, 0), 0.7))
    coarse = _normalised(cv2.GaussianBlur(base, (0, 0), 1.6))
    low = rng.standard_normal(
        (height // _FIELD_STEP + 2, width // _FIELD_STEP + 2), dtype=np.float32
    )
    smooth = _normalised(cv2.resize(low, (width, height), interpolation=cv2.INTER_CUBIC))
    return _Fields(fine, coarse, smooth, _normalised(low))


def _roi(extent: float, cx: float, cy: float, width: int, height: int):
    x0 = max(0, int(math.floor(cx - extent)))
    y0 = max(0, int(math.floor(cy - extent)))
    x1 = min(width, int(math.ceil(cx + extent)) + 1)
    y1 = min(height, int(math.ceil(cy + extent)) + 1)
    return x0, y0, x1, y1


def _render_canvas(
    scene: _Scene, fields: _Fields, stains: np.ndarray, full_frame: bool = False
) -> tuple[np.ndarray, list[list[float] | None]]:
    """Minus the optical density (H x W x 3) and each cluster's tight pixel bounds.

    Each cell is evaluated and added only inside its own region of interest. ``full_frame``
    is the benchmark baseline: every cell is composited through a full-frame layer instead;
    the sums, and so the pictures, are the same.
    """
    height, width = scene.height, scene.width
    canvas = np.zeros((height, width, 3), dtype=np.float32)
    nucleus_colour = (-stains[_H]).astype(np.float32)
    bounds: list[list[float] | None] = [None] * len(scene.cluster_labels)
    for cell in scene.cells:
        body = cell.body
        x0, y0, x1, y1 = _roi(body.extent(), body.cx, body.cy, width, height)
        if x1 <= x0 or y1 <= y0:
            continue
        xs = np.arange(x0, x1, dtype=np.float32) + np.float32(0.5)
        ys = np.arange(y0, y1, dtype=np.float32) + np.float32(0.5)
        alpha, inside = body.field(xs, ys)
        if cell.cluster >= 0:
            rows = np.flatnonzero(alpha.max(axis=1) > 0.5)
            cols = np.flatnonzero(alpha.max(axis=0) > 0.5)
            if rows.size:
                b = [x0 + cols[0], y0 + rows[0], x0 + cols[-1] + 1, y0 + rows[-1] + 1]
                old = bounds[cell.cluster]
                bounds[cell.cluster] = b if old is None else [
                    min(old[0], b[0]), min(old[1], b[1]), max(old[2], b[2]), max(old[3], b[3])
                ]
        # Cytoplasm: thin film, denser rim, slow thickness variation, optional fold.
        thickness = (np.float32(1.0) + np.float32(0.18) * fields.smooth[y0:y1, x0:x1]
                     + np.float32(0.07) * fields.coarse[y0:y1, x0:x1])
        if cell.slope != (0.0, 0.0):
            inv_r = 1.0 / body.radius
            thickness += (xs[None, :] - np.float32(body.cx)) * np.float32(cell.slope[0] * inv_r)
            thickness += (ys[:, None] - np.float32(body.cy)) * np.float32(cell.slope[1] * inv_r)
            np.maximum(thickness, np.float32(0.4), out=thickness)
        rim = np.float32(cell.edge) * np.exp(-np.maximum(inside, 0.0) * np.float32(0.4))
        cyto = alpha * np.float32(cell.density) * thickness * (np.float32(1.0) + rim)
        if cell.fold is not None:
            nx, ny, offset, gain, fw = cell.fold
            line = (xs[None, :] - np.float32(body.cx)) * np.float32(nx) + (
                ys[:, None] - np.float32(body.cy)) * np.float32(ny) - np.float32(offset)
            cyto *= np.float32(1.0) + np.float32(gain) * np.exp(
                -(line * line) * np.float32(1.0 / (2 * fw * fw)))
            # the folded-over part is doubled cytoplasm
            cyto *= np.where(line > 0, np.float32(1.35), np.float32(1.0))
        if cell.halo is not None:
            h = cell.halo
            hx0, hy0, hx1, hy1 = _roi(h.blob.extent() + 4, h.blob.cx, h.blob.cy, width, height)
            hx0, hy0, hx1, hy1 = max(hx0, x0), max(hy0, y0), min(hx1, x1), min(hy1, y1)
            if hx1 > hx0 and hy1 > hy0:
                h_alpha, h_inside = h.blob.field(xs[hx0 - x0:hx1 - x0], ys[hy0 - y0:hy1 - y0])
                ring = np.exp(-np.maximum(-h_inside, 0.0) * np.float32(0.35)) * (1 - h_alpha)
                cyto[hy0 - y0:hy1 - y0, hx0 - x0:hx1 - x0] *= (
                    np.float32(1.0) - np.float32(h.clear) * h_alpha + np.float32(h.rim) * ring
                )
        colour = -(np.asarray(cell.mix, dtype=np.float32) @ stains[_GREEN:])
        layer = cyto[:, :, None] * colour
        for nucleus in cell.nuclei:
            nb = nucleus.blob
            nx0, ny0, nx1, ny1 = _roi(nb.extent(), nb.cx, nb.cy, width, height)
            nx0, ny0, nx1, ny1 = max(nx0, x0), max(ny0, y0), min(nx1, x1), min(ny1, y1)
            if nx1 <= nx0 or ny1 <= ny0:
                continue
            n_alpha, n_inside = nb.field(xs[nx0 - x0:nx1 - x0], ys[ny0 - y0:ny1 - y0])
            grain = (np.float32(1.0 - nucleus.coarse) * fields.fine[ny0:ny1, nx0:nx1]
                     + np.float32(nucleus.coarse) * fields.coarse[ny0:ny1, nx0:nx1])
            chroma = np.maximum(np.float32(1.0) + np.float32(nucleus.texture) * grain, 0.0)
            membrane = np.float32(nucleus.membrane_accent) * np.exp(
                -np.maximum(n_inside, 0.0) * np.float32(0.8))
            dye = n_alpha * np.float32(nucleus.chroma) * chroma * (np.float32(1.0) + membrane)
            layer[ny0 - y0:ny1 - y0, nx0 - x0:nx1 - x0] += dye[:, :, None] * nucleus_colour
        if full_frame:
            full = np.zeros((height, width, 3), dtype=np.float32)
            full[y0:y1, x0:x1] = layer
            canvas += full
        else:
            canvas[y0:y1, x0:x1] += layer
    return canvas, bounds


# Optical density per unit concentration of each stain, for R, G, B.
_STAINS = np.array(
    [
        [0.86, 0.98, 0.42],  # hematoxylin: blue-purple nuclei
        [0.90, 0.36, 0.32],  # light green: cyan-blue cytoplasm
        [0.08, 0.62, 0.36],  # eosin: pink cytoplasm
        [0.02, 0.45, 1.10],  # orange G: keratin
    ],
    dtype=np.float32,
)


def _stain_matrix(rng: np.random.Generator, strength: float) -> np.ndarray:
    """The per-image stain matrix: each stain's hue and intensity wander a little."""
    hue = np.exp(rng.normal(0, 0.1 * strength, size=(4, 3))).astype(np.float32)
    intensity = np.exp(rng.normal(0, 0.12 * strength, size=(4, 1))).astype(np.float32)
    return _STAINS * hue * intensity


def _hue_saturation_matrix(angle: float, saturation: float) -> np.ndarray:
    """Rotate colours about the grey axis by ``angle`` and scale their distance from it."""
    axis = np.full(3, 1 / math.sqrt(3))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)
    grey = np.outer(axis, axis)
    return (rotation @ (grey + saturation * (np.eye(3) - grey))).astype(np.float32)


def _finish(
    rng: np.random.Generator,
    cfg: SyntheticConfig,
    canvas: np.ndarray,
    fields: _Fields,
    stains: np.ndarray,
) -> np.ndarray:
    """Minus optical density -> 8-bit RGB: Beer-Lambert, illumination, colour, exposure, blur,
    noise.

    Written as few full-frame passes as possible: the slowly varying illumination is computed
    at low resolution and resized; colour, gain, contrast and the 8-bit scale are one affine
    cv2.transform; blur and noise work on 8-bit data; gamma is a lookup table.
    """
    height, width = canvas.shape[:2]
    sv, ev = cfg.stain_variation, cfg.exposure_variation
    light = cv2.exp(canvas, canvas)  # transmitted light (the canvas is reused)
    # Illumination: background tint, faint proteinaceous haze and vignetting; all smooth.
    tint = np.array([0.935, 0.915, 0.94]) * np.exp(rng.normal(0, 0.015 * sv, size=3))
    haze_colour = stains[_EOSIN] * rng.uniform(0.3, 1.0) + stains[_GREEN] * rng.uniform(0.3, 1.0)
    slow = np.clip(fields.smooth_small.astype(np.float64), -2.5, 2.5)
    haze = rng.uniform(0.01, 0.04) * (1.0 + 0.35 * slow)
    sh, sw = haze.shape
    yy = ((np.arange(sh) + 0.5) * _FIELD_STEP - height / 2) / (height / 2)
    xx = ((np.arange(sw) + 0.5) * _FIELD_STEP - width / 2) / (width / 2)
    vignette = rng.uniform(0.0, 0.08) * ev
    falloff = 1.0 - vignette * (yy[:, None] ** 2 + xx[None, :] ** 2) / 2
    small = (np.exp(-haze[:, :, None] * haze_colour) * falloff[:, :, None] * tint)
    # nodes sit every _FIELD_STEP pixels; resize the grid that covers the image exactly
    full = cv2.resize(small.astype(np.float32), (sw * _FIELD_STEP, sh * _FIELD_STEP),
                      interpolation=cv2.INTER_LINEAR)[:height, :width]
    cv2.multiply(light, full, dst=light)
    colour = _hue_saturation_matrix(
        math.radians(rng.normal(0, 4.0 * ev)), float(np.exp(rng.normal(0, 0.1 * ev)))
    )
    gain = float(np.exp(rng.normal(0, 0.05 * ev)))
    contrast = float(np.exp(rng.normal(0, 0.08 * ev)))
    gamma = float(np.exp(rng.normal(0, 0.08 * ev)))
    pivot = 0.7
    # v -> 255 * ((colour @ v * gain - pivot) * contrast + pivot) + 0.5 (0.5: round by truncation)
    affine = np.zeros((3, 4), dtype=np.float32)
    affine[:, :3] = 255.0 * contrast * gain * colour
    affine[:, 3] = 255.0 * pivot * (1.0 - contrast) + 0.5
    light = cv2.transform(light, affine)
    np.clip(light, 0.0, 255.49, out=light)
    image = light.astype(np.uint8)
    sigma = rng.uniform(*cfg.blur_sigma)
    if sigma > 0.05:  # focus: linear, so it commutes with the colour transform above
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    noise = rng.uniform(*cfg.noise_sigma)
    if noise > 0:
        image = _add_sensor_noise(rng, image, noise)
    if abs(gamma - 1.0) > 1e-6:
        lut = np.clip(np.rint(255.0 * (np.arange(256) / 255.0) ** gamma), 0, 255)
        image = cv2.LUT(image, lut.astype(np.uint8))
    return image


def _add_sensor_noise(rng: np.random.Generator, image: np.ndarray, sigma: float) -> np.ndarray:
    """Add Gaussian noise of ``sigma`` grey levels, saturating, independently per channel.

    Random bytes become Gaussian integers through a quantile table (far cheaper than drawing
    normals); the three channels read the same byte field shifted by one row each.
    """
    height, width = image.shape[:2]
    quantiles = (np.arange(256) + 0.5) / 256.0
    table = np.rint(sigma * _normal_ppf(quantiles)).astype(np.int16)
    raw = np.frombuffer(rng.bytes((height + 2) * width), dtype=np.uint8).reshape(height + 2, width)
    field3 = cv2.merge([raw[0:height], raw[1:height + 1], raw[2:height + 2]])
    return cv2.add(image, cv2.LUT(field3, table), dtype=cv2.CV_8U)


def _normal_ppf(p: np.ndarray) -> np.ndarray:
    """Standard normal quantile function (Acklam's rational approximation, |error| < 1.2e-9)."""
    a = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02,
         1.383577518672690e02, -3.066479806614716e01, 2.506628277459239e00)
    b = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02,
         6.680131188771972e01, -1.328068155288572e01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00,
         -2.549732539343734e00, 4.374664141464968e00, 2.938163982698783e00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00,
         3.754408661907416e00)
    p = np.asarray(p, dtype=float)
    q = np.minimum(p, 1.0 - p)
    out = np.empty_like(p)
    tail = q < 0.02425
    t = np.sqrt(-2.0 * np.log(q[tail]))
    out[tail] = (((((c[0] * t + c[1]) * t + c[2]) * t + c[3]) * t + c[4]) * t + c[5]) / (
        (((d[0] * t + d[1]) * t + d[2]) * t + d[3]) * t + 1.0)
    out[tail] *= np.where(p[tail] < 0.5, 1.0, -1.0)
    mid = ~tail
    r = p[mid] - 0.5
    r2 = r * r
    out[mid] = (((((a[0] * r2 + a[1]) * r2 + a[2]) * r2 + a[3]) * r2 + a[4]) * r2 + a[5]) * r / (
        ((((b[0] * r2 + b[1]) * r2 + b[2]) * r2 + b[3]) * r2 + b[4]) * r2 + 1.0)
    return out


def _boxes(scene: _Scene, bounds, scale: float) -> tuple[Box, ...]:
    pad = 3.0 * scale  # annotators draw a little loose
    boxes = []
    for label, b in zip(scene.cluster_labels, bounds, strict=True):
        if b is None:
            continue
        x0, y0 = max(0.0, b[0] - pad), max(0.0, b[1] - pad)
        x1, y1 = min(float(scene.width), b[2] + pad), min(float(scene.height), b[3] + pad)
        if x1 - x0 >= 1 and y1 - y0 >= 1:
            boxes.append(Box(float(x0), float(y0), float(x1 - x0), float(y1 - y0), label))
    return tuple(boxes)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def generate_image(
    seed: int, config: SyntheticConfig = SyntheticConfig(), *, full_frame: bool = False  # noqa: B008
) -> SyntheticImage:
    """Draw one synthetic Pap image and its cluster boxes; the same seed gives the same bytes.

    ``full_frame=True`` renders the same picture the slow way (each cell composited through a
    full-frame layer); it exists only as the benchmark's baseline.
    """
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    rng = np.random.default_rng(seed)
    scene = _build_scene(rng, config)
    fields = _noise_fields(rng, config.height, config.width)
    stains = _stain_matrix(rng, config.stain_variation)
    canvas, bounds = _render_canvas(scene, fields, stains, full_frame=full_frame)
    image = _finish(rng, config, canvas, fields, stains)
    return SyntheticImage(image=image, boxes=_boxes(scene, bounds, config.cell_scale), seed=seed)


def image_seed(seed: int, index: int) -> int:
    """The seed of image ``index`` in a dataset drawn with ``seed`` (stable, well mixed)."""
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 32 | int(state[1])


def generate_dataset(
    out_dir: str | Path,
    n_images: int,
    seed: int = 0,
    config: SyntheticConfig = SyntheticConfig(),  # noqa: B008
    progress: Callable[[int, int], object] | None = None,
) -> list[ImageRecord]:
    """Write ``out_dir/images/synth_00000.png`` ... and return one ImageRecord per image.

    Image ``i`` is ``generate_image(image_seed(seed, i), config)``. File names in the records
    are relative to ``out_dir`` ("images/synth_00000.png"). ``progress(done, total)`` is called
    after each image. The annotation file is the caller's to write (``write_coco``).
    """
    if int(n_images) < 1:
        raise ValueError(f"n_images must be at least 1, got {n_images}")
    image_dir = Path(out_dir) / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    digits = max(5, len(str(int(n_images) - 1)))
    records = []
    for index in range(int(n_images)):
        synthetic = generate_image(image_seed(seed, index), config)
        name = f"synth_{index:0{digits}d}.png"
        path = image_dir / name
        bgr = cv2.cvtColor(synthetic.image, cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(str(path), bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3]):
            raise OSError(f"could not write {path}")
        records.append(synthetic.to_record(f"images/{name}"))
        if progress is not None:
            progress(index + 1, int(n_images))
    return records


def cluster_crops(
    synthetic: SyntheticImage, size: int = 128, pad: float = 0.1
) -> list[tuple[np.ndarray, str]]:
    """Square RGB crops (size x size) centred on each box, with ``pad`` context, and labels.

    The square side is the box's longer side plus ``pad`` of it; pixels outside the image are
    filled by repeating the border. Quick classifier training material.
    """
    if size < 1:
        raise ValueError("size must be positive")
    image = synthetic.image
    out = []
    for box in synthetic.boxes:
        side = max(box.width, box.height) * (1.0 + 2.0 * pad)
        cx, cy = box.center
        x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
        s = max(1, int(round(side)))
        left, top = max(0, -x0), max(0, -y0)
        right = max(0, x0 + s - image.shape[1])
        bottom = max(0, y0 + s - image.shape[0])
        part = image[max(0, y0):y0 + s, max(0, x0):x0 + s]
        if left or top or right or bottom:
            part = cv2.copyMakeBorder(part, top, bottom, left, right, cv2.BORDER_REPLICATE)
        out.append((cv2.resize(part, (size, size), interpolation=cv2.INTER_AREA), box.label))
    return out
