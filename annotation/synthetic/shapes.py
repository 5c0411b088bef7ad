"""Scene description: soft-edged blobs, nuclei, halos, cells and the scene that holds them.

Pure (NumPy + OpenCV, no Django import); see the package docstring for how a picture is made.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


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
