"""Rendering a scene: stain optical densities, Beer-Lambert light, acquisition effects, boxes.

Pure (NumPy + OpenCV, no Django import); see the package docstring for how a picture is made.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from annotation.geometry import Box
from annotation.synthetic.config import _EOSIN, _GREEN, _H, SyntheticConfig
from annotation.synthetic.shapes import _Scene


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
