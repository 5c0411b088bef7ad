"""The ResNeSt bottleneck block: 1x1 conv, split-attention 3x3 conv, 1x1 conv, plus a shortcut.

With ``avd`` the block's stride is taken by a 3x3 average pool (stride 2, symmetric padding 1,
padding counted in the average as in the reference) placed after the split-attention conv
(``avd_first=False``, as in ResNeSt-50/101) or before it, and the split-attention conv runs at
stride 1. With ``avg_down`` the projection shortcut downsamples by a ``strides x strides`` average
pool (windows cut by the border average only what is inside) and then a 1x1 conv + BatchNorm;
without it, by a strided 1x1 conv. The shortcut is projected whenever the stride or the channel
count changes; otherwise it is the identity.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from training.networks.resnest.split_attention import SplitAttentionConv2D
from training.networks.serializable import Serializable

EXPANSION = 4


@keras.saving.register_keras_serializable(package="cytoloop")
class ResNeStBlock(Serializable, keras.layers.Layer):
    """Bottleneck block: ``(B, H, W, C) -> (B, H / strides, W / strides, filters * 4)``.

    ``filters`` is the block's base width (64, 128, 256, 512 in the published models); the
    split-attention conv works at ``int(filters * bottleneck_width / 64) * cardinality`` channels.
    """

    config_args = (
        "filters", "strides", "radix", "cardinality", "bottleneck_width", "avd", "avd_first", "avg_down",
        "reduction_factor", "min_inter_channels", "bn_momentum", "bn_epsilon", "zero_init_last_bn",
        "kernel_initializer",
    )

    def __init__(
        self,
        filters: int,
        strides: int = 1,
        radix: int = 2,
        cardinality: int = 1,
        bottleneck_width: int = 64,
        avd: bool = True,
        avd_first: bool = False,
        avg_down: bool = True,
        reduction_factor: int = 4,
        min_inter_channels: int = 32,
        bn_momentum: float = 0.9,
        bn_epsilon: float = 1e-5,
        zero_init_last_bn: bool = False,
        kernel_initializer="he_normal",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if strides not in (1, 2):
            raise ValueError(f"strides must be 1 or 2, got {strides}")
        self.filters = int(filters)
        self.strides = int(strides)
        self.radix = int(radix)
        self.cardinality = int(cardinality)
        self.bottleneck_width = int(bottleneck_width)
        self.avd = bool(avd)
        self.avd_first = bool(avd_first)
        self.avg_down = bool(avg_down)
        self.reduction_factor = int(reduction_factor)
        self.min_inter_channels = int(min_inter_channels)
        self.bn_momentum = float(bn_momentum)
        self.bn_epsilon = float(bn_epsilon)
        self.zero_init_last_bn = bool(zero_init_last_bn)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    @property
    def group_width(self) -> int:
        return int(self.filters * (self.bottleneck_width / 64.0)) * self.cardinality

    @property
    def out_channels(self) -> int:
        return self.filters * EXPANSION

    def _bn(self, name: str, **extra) -> keras.layers.BatchNormalization:
        return keras.layers.BatchNormalization(
            momentum=self.bn_momentum, epsilon=self.bn_epsilon, dtype=self.dtype_policy,
            name=name, **extra,
        )

    def _conv1x1(self, filters: int, name: str, strides: int = 1) -> keras.layers.Conv2D:
        return keras.layers.Conv2D(
            filters, 1, strides=strides, use_bias=False,
            kernel_initializer=self.kernel_initializer, dtype=self.dtype_policy, name=name,
        )

    def build(self, input_shape):
        in_channels = int(input_shape[-1])
        use_avd = self.avd and self.strides > 1
        gw = self.group_width
        self.conv1 = self._conv1x1(gw, "conv1")
        self.bn1 = self._bn("bn1")
        self.split_attention = SplitAttentionConv2D(
            gw, 3, strides=1 if use_avd else self.strides, radix=self.radix,
            cardinality=self.cardinality, reduction_factor=self.reduction_factor,
            min_inter_channels=self.min_inter_channels, bn_momentum=self.bn_momentum,
            bn_epsilon=self.bn_epsilon, kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy, name="split_attention",
        )
        if use_avd:
            self.avd_pad = keras.layers.ZeroPadding2D(1, dtype=self.dtype_policy, name="avd_pad")
            self.avd_pool = keras.layers.AveragePooling2D(
                3, strides=self.strides, padding="valid", dtype=self.dtype_policy, name="avd_pool"
            )
        else:
            self.avd_pad = self.avd_pool = None
        self.conv3 = self._conv1x1(self.out_channels, "conv3")
        self.bn3 = self._bn("bn3", gamma_initializer="zeros" if self.zero_init_last_bn else "ones")
        # Keras layers, or None when the input is the shortcut as it is
        self.shortcut_pool: Any = None
        self.shortcut_conv: Any = None
        self.shortcut_bn: Any = None
        if self.strides != 1 or in_channels != self.out_channels:
            if self.avg_down and self.strides > 1:
                self.shortcut_pool = keras.layers.AveragePooling2D(
                    self.strides, strides=self.strides, padding="same",
                    dtype=self.dtype_policy, name="shortcut_pool",
                )
            conv_strides = 1 if self.avg_down else self.strides
            self.shortcut_conv = self._conv1x1(self.out_channels, "shortcut_conv", conv_strides)
            self.shortcut_bn = self._bn("shortcut_bn")

        # Build every sublayer now, so weights exist before the first call (and on load).
        shape = tuple(input_shape)
        self.conv1.build(shape)
        shape = self.conv1.compute_output_shape(shape)
        self.bn1.build(shape)

        def pooled(s):
            s = self.avd_pad.compute_output_shape(s)
            return self.avd_pool.compute_output_shape(s)

        if use_avd and self.avd_first:
            shape = pooled(shape)
        self.split_attention.build(shape)
        shape = self.split_attention.compute_output_shape(shape)
        if use_avd and not self.avd_first:
            shape = pooled(shape)
        self.conv3.build(shape)
        shape = self.conv3.compute_output_shape(shape)
        self.bn3.build(shape)
        if self.shortcut_conv is not None:
            s = tuple(input_shape)
            if self.shortcut_pool is not None:
                s = self.shortcut_pool.compute_output_shape(s)
            self.shortcut_conv.build(s)
            self.shortcut_bn.build(self.shortcut_conv.compute_output_shape(s))
        self.built = True

    def _avd(self, x):
        return self.avd_pool(self.avd_pad(x))

    def call(self, inputs, training=None):
        x = ops.relu(self.bn1(self.conv1(inputs), training=training))
        if self.avd_pool is not None and self.avd_first:
            x = self._avd(x)
        x = self.split_attention(x, training=training)
        if self.avd_pool is not None and not self.avd_first:
            x = self._avd(x)
        x = self.bn3(self.conv3(x), training=training)
        shortcut = inputs
        if self.shortcut_conv is not None:
            if self.shortcut_pool is not None:
                shortcut = self.shortcut_pool(shortcut)
            shortcut = self.shortcut_bn(self.shortcut_conv(shortcut), training=training)
        return ops.relu(x + shortcut)

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape

        def out(n):
            return None if n is None else -(-n // self.strides)

        return (b, out(h), out(w), self.out_channels)
