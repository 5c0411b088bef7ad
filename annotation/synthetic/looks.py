"""Grade looks: per-grade distributions of per-cell features, following the Bethesda descriptions.

Pure (NumPy + OpenCV, no Django import); see the package docstring for how a picture is made.
"""

from __future__ import annotations

from dataclasses import dataclass


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
