"""YOLOv4's detection heads (YOLOv3's head): one per scale, raw outputs reshaped per anchor.

Each head is a 3x3 convolution (batch-normalised, leaky ReLU) of twice the neck's channels,
then a linear 1x1 convolution with a bias and ``num_anchors * (5 + num_classes)`` filters
(``filters=255`` in Darknet's cfg: 3 * (5 + 80)). yolov4: 256, 512 and 1024 channels at strides
8, 16 and 32 (Darknet layers 137-138, 148-149, 159-160); yolov4-tiny: 256 at stride 16 and 512
at stride 32 (layers 35-36 and 28-29).

The linear output ``(B, H, W, A * (5 + C))`` is reshaped to ``(B, H, W, A, 5 + C)``. Darknet's
[yolo] layer reads its channels anchor by anchor, each anchor's block being
``[tx, ty, tw, th, objectness, class 0, ..., class C-1]``; a channels-last reshape keeps exactly
that order. The values are raw (no sigmoid/exp): decoding and the loss apply those. The reshape
runs in float32, so a mixed-precision model still returns float32 tensors.
"""

from __future__ import annotations

import keras

from training.networks.yolov4.backbone import scaled
from training.networks.yolov4.darknet_conv import darknet_conv

#: Channels of each box prediction before the class scores: tx, ty, tw, th, objectness.
BOX_FIELDS = 5


def apply_yolo_heads(
    features,
    *,
    strides,
    head_widths,
    num_classes: int,
    num_anchors: int = 3,
    width_multiplier: float = 1.0,
    **conv_options,
):
    """One head per feature map (finest first) -> ``[(B, H, W, num_anchors, 5 + num_classes)]``.

    ``head_widths``: the 3x3 convolution's channels per scale before ``width_multiplier``.
    ``conv_options`` go to the batch-normalised ``darknet_conv`` (bn_momentum, bn_epsilon,
    kernel_initializer); the linear convolution uses the same kernel initializer.
    """
    if num_classes < 1 or num_anchors < 1:
        raise ValueError(f"need num_classes >= 1 and num_anchors >= 1, got {num_classes}, {num_anchors}")
    outputs_per_anchor = BOX_FIELDS + int(num_classes)
    outputs = []
    for x, stride, width in zip(features, strides, head_widths, strict=True):
        name = f"head_s{stride}"
        x = darknet_conv(x, scaled(width, width_multiplier), 3, activation="leaky",
                         name=f"{name}_conv", **conv_options)
        x = darknet_conv(
            x, num_anchors * outputs_per_anchor, 1, activation="linear", batch_normalize=False,
            kernel_initializer=conv_options.get("kernel_initializer", "he_normal"),
            name=f"{name}_output",
        )
        height, width_px = x.shape[1], x.shape[2]
        if height is None or width_px is None:
            raise ValueError("the heads need a known image size (build with a fixed input_size)")
        outputs.append(
            keras.layers.Reshape(
                (height, width_px, num_anchors, outputs_per_anchor), dtype="float32", name=name
            )(x)
        )
    return outputs
