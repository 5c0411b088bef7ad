"""Synthetic images: what shapes one (``SyntheticConfig``) and what comes out (``SyntheticImage``).

Pure (NumPy + OpenCV, no Django import); see the package docstring for how a picture is made.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from annotation.bethesda import BETHESDA, NUM_CLASSES, normalize_label
from annotation.geometry import Box, ImageRecord

#: Size of the image the default counts are given for (scattered and inflammatory cells scale
#: with image area from here).
_REFERENCE_AREA = 1636 * 1088

# Rows of the stain matrix.
_H, _GREEN, _EOSIN, _ORANGE = 0, 1, 2, 3



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
