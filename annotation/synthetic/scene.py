"""Drawing a scene from the seed: clusters of cells with grade looks, scattered and inflammatory cells.

Pure (NumPy + OpenCV, no Django import); see the package docstring for how a picture is made.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from annotation.bethesda import BETHESDA, NUM_CLASSES
from annotation.synthetic.config import _REFERENCE_AREA, SyntheticConfig
from annotation.synthetic.looks import _LOOKS, _Look
from annotation.synthetic.shapes import _Blob, _Cell, _Halo, _Nucleus, _Scene


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
