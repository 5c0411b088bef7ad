"""The paper's oversampling of classifier training crops, and the augmentation switches.

Pure module (NumPy + OpenCV; no Django, no TensorFlow import). The on-the-fly part (scale
augmentation, random erasing) runs in the tf.data pipeline, ``training/classifier/data.py``.

Oversampling (paper, section 2.2 and Figure 1A): every training image is written out in
4 orientations x 9 photometric filters = 36 variants (the paper's table grows 104 images to 3,744).
All 36 are deterministic: the same crop always gives the same 36 arrays. Validation and test
images are never oversampled; split by image first, then oversample the training split only.

Orientations (``ORIENTATIONS``):
    as_is   the image unchanged
    hflip   horizontal flip (mirror left-right)
    vflip   vertical flip (mirror top-bottom)
    hvflip  both flips (a 180 degree rotation)

Filters (``FILTERS``), each mimicking a way capture or specimen varies between microscopes,
sessions and slides:
    identity         the image unchanged
    brighten         over-exposure: linear gain x1.25 (longer exposure, brighter lamp), clipped
    darken           under-exposure: linear gain x0.75 (shorter exposure, dimmer lamp)
    contrast_up      higher contrast, x1.3 about the image mean (closed condenser aperture,
                     thicker cell layers)
    contrast_down    lower contrast, x0.7 about the image mean (stray light and flare, an open
                     condenser, faded or thinly stained specimens)
    gamma            a different camera tone curve: gamma 1.5, darker midtones with black and
                     white fixed (camera/driver gamma settings between capture stations)
    hematoxylin      hematoxylin-heavy stain (bluer nuclei and cytoplasm): optical density of
                     red and green raised (x1.2, x1.1), blue slightly lowered (x0.95)
    eosin            eosin-heavy stain (pinker cytoplasm): optical density of green raised
                     (x1.25), red and blue slightly lowered (x0.9, x0.95)
    blur             slight defocus: Gaussian blur, 5x5 kernel, sigma 1.0 (focus set for the
                     whole cluster leaves parts of it a little out of focus)

The stain filters work on optical density, OD = -log((I + 1) / 256), so white background (no
stain) stays white and darker, more stained pixels shift more, as with a real change of stain.
All filters take and return uint8 RGB arrays of shape (H, W, 3).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

ORIENTATIONS: tuple[str, ...] = ("as_is", "hflip", "vflip", "hvflip")

#: Variants per training image: 4 orientations x 9 filters.
VARIANTS_PER_IMAGE = 36


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be an RGB array of shape (H, W, 3), got {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image must not be empty, got {image.shape}")
    return image


def _lut(values: np.ndarray) -> np.ndarray:
    """A 256-entry uint8 lookup table from float values (rounded, clipped)."""
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


_LEVELS = np.arange(256, dtype=np.float64)


def _apply_lut(image: np.ndarray, lut: np.ndarray) -> np.ndarray:
    return cv2.LUT(np.ascontiguousarray(image), lut)


def _apply_channel_luts(image: np.ndarray, luts: Sequence[np.ndarray]) -> np.ndarray:
    out = np.empty_like(image)
    for c, lut in enumerate(luts):
        out[..., c] = cv2.LUT(np.ascontiguousarray(image[..., c]), lut)
    return out


def orient(image: np.ndarray, orientation: str) -> np.ndarray:
    """The image in one of ``ORIENTATIONS`` (a copy)."""
    _check_image(image)
    if orientation == "as_is":
        return image.copy()
    if orientation == "hflip":
        return np.ascontiguousarray(image[:, ::-1])
    if orientation == "vflip":
        return np.ascontiguousarray(image[::-1, :])
    if orientation == "hvflip":
        return np.ascontiguousarray(image[::-1, ::-1])
    raise ValueError(f"unknown orientation {orientation!r}; expected one of {ORIENTATIONS}")


def identity(image: np.ndarray) -> np.ndarray:
    """The image unchanged (a copy)."""
    return _check_image(image).copy()


_BRIGHTEN_LUT = _lut(_LEVELS * 1.25)
_DARKEN_LUT = _lut(_LEVELS * 0.75)
_GAMMA_LUT = _lut(255.0 * (_LEVELS / 255.0) ** 1.5)


def brighten(image: np.ndarray) -> np.ndarray:
    """Over-exposure: every channel x1.25, clipped at 255."""
    return _apply_lut(_check_image(image), _BRIGHTEN_LUT)


def darken(image: np.ndarray) -> np.ndarray:
    """Under-exposure: every channel x0.75."""
    return _apply_lut(_check_image(image), _DARKEN_LUT)


def _contrast(image: np.ndarray, factor: float) -> np.ndarray:
    mean = float(_check_image(image).mean())
    return _apply_lut(image, _lut(mean + factor * (_LEVELS - mean)))


def contrast_up(image: np.ndarray) -> np.ndarray:
    """Higher contrast: distance from the image mean x1.3 (closed condenser, thick specimen)."""
    return _contrast(image, 1.3)


def contrast_down(image: np.ndarray) -> np.ndarray:
    """Lower contrast: distance from the image mean x0.7 (flare, open condenser, faded stain)."""
    return _contrast(image, 0.7)


def gamma(image: np.ndarray) -> np.ndarray:
    """Camera tone curve: gamma 1.5 (darker midtones, black and white unchanged)."""
    return _apply_lut(_check_image(image), _GAMMA_LUT)


def _od_scale_luts(scales: Sequence[float]) -> list[np.ndarray]:
    od = -np.log((_LEVELS + 1.0) / 256.0)
    return [_lut(256.0 * np.exp(-od * s) - 1.0) for s in scales]


_HEMATOXYLIN_LUTS = _od_scale_luts((1.2, 1.1, 0.95))
_EOSIN_LUTS = _od_scale_luts((0.9, 1.25, 0.95))


def hematoxylin(image: np.ndarray) -> np.ndarray:
    """Hematoxylin-heavy stain (bluer): optical density x(1.2, 1.1, 0.95) in R, G, B."""
    return _apply_channel_luts(_check_image(image), _HEMATOXYLIN_LUTS)


def eosin(image: np.ndarray) -> np.ndarray:
    """Eosin-heavy stain (pinker): optical density x(0.9, 1.25, 0.95) in R, G, B."""
    return _apply_channel_luts(_check_image(image), _EOSIN_LUTS)


def blur(image: np.ndarray) -> np.ndarray:
    """Slight defocus: Gaussian blur, 5x5 kernel, sigma 1.0, reflected borders."""
    img = np.ascontiguousarray(_check_image(image))
    return cv2.GaussianBlur(img, (5, 5), sigmaX=1.0, sigmaY=1.0, borderType=cv2.BORDER_REFLECT_101)


#: The nine photometric filters, in order: identity first, then the eight named ones.
FILTERS: OrderedDict[str, Callable[[np.ndarray], np.ndarray]] = OrderedDict(
    [
        ("identity", identity),
        ("brighten", brighten),
        ("darken", darken),
        ("contrast_up", contrast_up),
        ("contrast_down", contrast_down),
        ("gamma", gamma),
        ("hematoxylin", hematoxylin),
        ("eosin", eosin),
        ("blur", blur),
    ]
)

#: The 36 variant names, in the order ``variants`` returns them: "orientation/filter".
VARIANT_NAMES: tuple[str, ...] = tuple(f"{o}/{f}" for o in ORIENTATIONS for f in FILTERS)


def variant(image: np.ndarray, index: int) -> np.ndarray:
    """Variant number ``index`` (0..35) of ``image``; ``variants(image)[index][1]`` alone."""
    if not 0 <= int(index) < VARIANTS_PER_IMAGE:
        raise ValueError(f"variant index must be in 0..{VARIANTS_PER_IMAGE - 1}, got {index}")
    o, f = divmod(int(index), len(FILTERS))
    name = list(FILTERS)[f]
    return FILTERS[name](orient(image, ORIENTATIONS[o]))


def variants(image: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """The 36 oversampling variants of one uint8 RGB image, as ("orientation/filter", array).

    Orientation-major: the first nine are the unflipped image through each filter; the very
    first is the image itself.
    """
    _check_image(image)
    out: list[tuple[str, np.ndarray]] = []
    for o in ORIENTATIONS:
        oriented = orient(image, o)
        for fname, fn in FILTERS.items():
            out.append((f"{o}/{fname}", fn(oriented)))
    return out


def oversample(images, labels, enabled: bool = True):
    """Oversample a training set 36x: each image's 36 variants, consecutively, payload repeated.

    images: a uint8 array (N, H, W, 3) or a sequence of uint8 (H, W, 3) arrays (sizes may
    differ). labels: one payload per image: integer labels, (N, 6) soft targets, or any
    sequence (ids, dicts); each is repeated 36 times alongside its image's variants.
    Returns (images36, labels36): an array (36N, H, W, 3) when ``images`` is an array, else a
    list; labels as an array (``np.repeat`` on axis 0) when given an array, else a list.
    enabled=False returns the inputs unchanged.
    """
    n = len(images)
    if len(labels) != n:
        raise ValueError(f"{n} images but {len(labels)} labels")
    if not enabled:
        return images, labels
    expanded = [arr for image in images for _, arr in variants(image)]
    if isinstance(images, np.ndarray):
        if n == 0:
            out_images = images.copy()
        else:
            out_images = np.stack(expanded)
    else:
        out_images = expanded
    if isinstance(labels, np.ndarray):
        out_labels = np.repeat(labels, VARIANTS_PER_IMAGE, axis=0)
    else:
        out_labels = [item for item in labels for _ in range(VARIANTS_PER_IMAGE)]
    return out_images, out_labels


@dataclass(frozen=True)
class AugmentConfig:
    """Classifier training augmentation, each part switchable.

    oversample: the deterministic 36x (4 orientations x 9 filters) expansion.
    scale / scale_range: on the fly, zoom by a factor drawn uniformly from scale_range, then
    crop (zoomed in) or reflect-pad (zoomed out) back to the input size at a random offset.
    random_erasing / erasing_prob / erasing_area: on the fly, with probability erasing_prob,
    fill one rectangle covering a fraction of the image drawn from erasing_area with random
    values (Zhong et al., "Random Erasing Data Augmentation").
    """

    oversample: bool = True
    scale: bool = True
    scale_range: tuple[float, float] = (0.8, 1.2)
    random_erasing: bool = True
    erasing_prob: float = 0.5
    erasing_area: tuple[float, float] = (0.02, 0.2)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale_range", tuple(float(v) for v in self.scale_range))
        object.__setattr__(self, "erasing_area", tuple(float(v) for v in self.erasing_area))
        if len(self.scale_range) != 2 or not 0.5 <= self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(
                f"scale_range must be (lo, hi) with 0.5 <= lo <= hi, got {self.scale_range}"
            )
        if not 0.0 <= self.erasing_prob <= 1.0:
            raise ValueError(f"erasing_prob must be in [0, 1], got {self.erasing_prob}")
        if (
            len(self.erasing_area) != 2
            or not 0.0 < self.erasing_area[0] <= self.erasing_area[1] <= 1.0
        ):
            raise ValueError(
                f"erasing_area must be (lo, hi) with 0 < lo <= hi <= 1, got {self.erasing_area}"
            )

    def to_dict(self) -> dict:
        return {
            "oversample": self.oversample,
            "scale": self.scale,
            "scale_range": list(self.scale_range),
            "random_erasing": self.random_erasing,
            "erasing_prob": self.erasing_prob,
            "erasing_area": list(self.erasing_area),
        }
