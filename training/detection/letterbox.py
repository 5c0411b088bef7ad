"""Letterboxing: fit an image into the network's input without changing its aspect ratio, and map
boxes both ways.

Pure module (NumPy + OpenCV; no Django, no TensorFlow import).

An image of W x H pixels goes onto a canvas of the input size (width Sw, height Sh) as Darknet's
``letterbox_image`` does: scaled by ``s = min(Sw / W, Sh / H)`` to ``round(W s) x round(H s)``
pixels (bilinear), centred, the border filled with mid grey (128, Darknet's 0.5). Because the
resized size is rounded to whole pixels, the factors actually applied are
``sx = resized_width / W`` and ``sy = resized_height / H``; boxes use exactly those, so a box
stays on the pixels it covered. The padding is whole pixels (left/top ``(S - resized) // 2``).

Boxes are xyxy pixels. Forward (image -> canvas): ``x' = x * sx + pad_x``,
``y' = y * sy + pad_y``. Back (canvas -> image): ``x = (x' - pad_x) / sx``, then clipped to the
image (detections can reach into the grey border). The round trip returns the boxes to within
float64 rounding (about 1e-12 px for images of a few thousand pixels).

Sizes are given as an int (a square input) or as ``(height, width)``, the order of array shapes.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from training.detection.boxes import as_boxes

#: Darknet fills the border with 0.5; in uint8 that is 128.
FILL_VALUE = 128


def input_hw(size) -> tuple[int, int]:
    """``(height, width)`` from an int (square) or a ``(height, width)`` pair; both positive."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        h = w = int(size)
    else:
        try:
            h, w = (int(v) for v in size)
        except (TypeError, ValueError):
            raise ValueError(f"size must be an int or (height, width), got {size!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive, got {size!r}")
    return h, w


@dataclass(frozen=True)
class Letterbox:
    """Where one image went on the canvas: everything needed to map boxes back."""

    image_width: int
    image_height: int
    input_width: int
    input_height: int
    resized_width: int
    resized_height: int
    pad_x: int
    pad_y: int

    @property
    def scale_x(self) -> float:
        return self.resized_width / self.image_width

    @property
    def scale_y(self) -> float:
        return self.resized_height / self.image_height

    def _factors(self) -> tuple[np.ndarray, np.ndarray]:
        scale = np.array([self.scale_x, self.scale_y, self.scale_x, self.scale_y])
        offset = np.array([self.pad_x, self.pad_y, self.pad_x, self.pad_y], dtype=np.float64)
        return scale, offset

    def to_input(self, boxes) -> np.ndarray:
        """xyxy boxes in the original image -> xyxy boxes on the canvas."""
        b = as_boxes(boxes)
        scale, offset = self._factors()
        return b * scale + offset

    def to_image(self, boxes, clip: bool = True) -> np.ndarray:
        """xyxy boxes on the canvas -> xyxy boxes in the original image (clipped by default)."""
        b = as_boxes(boxes)
        scale, offset = self._factors()
        out = (b - offset) / scale
        if clip:
            limits = np.array([self.image_width, self.image_height] * 2, dtype=np.float64)
            out = np.clip(out, 0.0, limits)
        return out


def letterbox_geometry(image_width: int, image_height: int, size) -> Letterbox:
    """The placement ``letterbox`` uses for an image of this size, without touching pixels."""
    image_width, image_height = int(image_width), int(image_height)
    if image_width <= 0 or image_height <= 0:
        raise ValueError(f"image size must be positive, got {image_width} x {image_height}")
    in_h, in_w = input_hw(size)
    s = min(in_w / image_width, in_h / image_height)
    new_w = min(in_w, max(1, int(np.floor(image_width * s + 0.5))))
    new_h = min(in_h, max(1, int(np.floor(image_height * s + 0.5))))
    return Letterbox(
        image_width=image_width,
        image_height=image_height,
        input_width=in_w,
        input_height=in_h,
        resized_width=new_w,
        resized_height=new_h,
        pad_x=(in_w - new_w) // 2,
        pad_y=(in_h - new_h) // 2,
    )


def letterbox(
    image: np.ndarray, size, fill=FILL_VALUE, interpolation: int = cv2.INTER_LINEAR
) -> tuple[np.ndarray, Letterbox]:
    """Resize ``image`` (H, W) or (H, W, C) into the input size keeping its aspect ratio, pad with
    ``fill``; returns the canvas (same dtype) and the ``Letterbox`` that maps boxes."""
    image = np.asarray(image)
    if image.ndim not in (2, 3) or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {image.shape}")
    info = letterbox_geometry(image.shape[1], image.shape[0], size)
    if (info.resized_width, info.resized_height) == (image.shape[1], image.shape[0]):
        resized = image
    else:
        resized = cv2.resize(
            np.ascontiguousarray(image),
            (info.resized_width, info.resized_height),
            interpolation=interpolation,
        )
        if image.ndim == 3 and resized.ndim == 2:  # OpenCV drops a single channel axis
            resized = resized[..., None]
    canvas = np.full(
        (info.input_height, info.input_width, *image.shape[2:]), fill, dtype=image.dtype
    )
    canvas[
        info.pad_y : info.pad_y + info.resized_height,
        info.pad_x : info.pad_x + info.resized_width,
    ] = resized
    return canvas, info


def letterbox_boxes(boxes, info: Letterbox) -> np.ndarray:
    """xyxy boxes of the original image, moved onto the letterboxed canvas."""
    return info.to_input(boxes)


def unletterbox(boxes, info: Letterbox, clip: bool = True) -> np.ndarray:
    """xyxy boxes on the canvas, back in the original image's pixels (clipped to it by default)."""
    return info.to_image(boxes, clip=clip)
