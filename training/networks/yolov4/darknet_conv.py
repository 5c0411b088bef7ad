"""``darknet_conv``: Darknet's ``[convolutional]`` section as Keras layers.

``batch_normalize=1``: a bias-free convolution, BatchNormalization (its beta is Darknet's
"bias"), then the activation; without it (the linear detection convolutions): a convolution
with a bias. ``pad=1`` pads ``size // 2`` on every side. With stride 2 (Darknet only uses 3x3
stride-2 convolutions) that is one row/column of zeros on the top and left that every output
reads, the bottom/right row of padding being unreachable for even sizes; so a top-left
``ZeroPadding2D`` and a "valid" convolution reproduce Darknet exactly, where Keras' "same" would
pad the bottom/right instead and shift the sampling grid by a pixel.

Activations: "mish", "leaky" (Darknet's slope 0.1) or "linear".
"""

from __future__ import annotations

import keras

from training.networks.yolov4.mish import Mish

ACTIVATIONS = ("mish", "leaky", "linear")
LEAKY_SLOPE = 0.1


def darknet_conv(
    x,
    filters: int,
    kernel_size: int,
    *,
    name: str,
    strides: int = 1,
    activation: str = "leaky",
    batch_normalize: bool = True,
    bn_momentum: float = 0.99,
    bn_epsilon: float = 1e-5,
    kernel_initializer="he_normal",
):
    """Apply one Darknet convolution block to the symbolic tensor ``x``; layers named ``name*``."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if strides not in (1, 2):
        raise ValueError(f"strides must be 1 or 2, got {strides}")
    if strides == 2:
        x = keras.layers.ZeroPadding2D(((1, 0), (1, 0)), name=f"{name}_pad")(x)
    x = keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="valid" if strides == 2 else "same",
        use_bias=not batch_normalize,
        kernel_initializer=kernel_initializer,
        name=name,
    )(x)
    if batch_normalize:
        x = keras.layers.BatchNormalization(
            momentum=bn_momentum, epsilon=bn_epsilon, name=f"{name}_bn"
        )(x)
    if activation == "mish":
        x = Mish(name=f"{name}_mish")(x)
    elif activation == "leaky":
        x = keras.layers.LeakyReLU(negative_slope=LEAKY_SLOPE, name=f"{name}_leaky")(x)
    return x
