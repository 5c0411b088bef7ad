"""Split-attention convolution (Zhang et al., "ResNeSt: Split-Attention Networks", section 3).

A grouped convolution makes ``radix`` feature-map splits for each of ``cardinality`` groups
(``filters * radix`` channels, ``cardinality * radix`` convolution groups). The splits are summed,
globally average-pooled, passed through two 1x1 convolutions (a bottleneck of
``max(in_channels * radix // reduction_factor, min_inter_channels)`` channels, BatchNorm and ReLU
between them), and the result is turned into attention weights by a softmax across the radix
splits of each channel ("r-softmax"; a sigmoid gate when radix is 1). The output is the
attention-weighted sum of the splits: ``filters`` channels.

Channel layout (so that weights trained elsewhere map one to one): split r is channels
``[r * filters, (r + 1) * filters)`` of the grouped convolution, and the attention vector from the
second 1x1 convolution is ordered (cardinal group, radix, channel within the group).
"""

from __future__ import annotations

import keras
from keras import ops

from training.networks.resnest.grouped_conv2d import GroupedConv2D
from training.networks.serializable import Serializable


@keras.saving.register_keras_serializable(package="cytoloop")
class SplitAttentionConv2D(Serializable, keras.layers.Layer):
    """Split-attention convolution: ``(B, H, W, C_in) -> (B, H / strides, W / strides, filters)``.

    Padding is symmetric, ``dilation_rate * (kernel_size - 1) // 2`` on every side (as in the
    reference PyTorch model, unlike Keras's "same", which pads only bottom/right for stride 2).
    Includes its BatchNorm and ReLU after the grouped convolution.
    """

    config_args = (
        "filters", "kernel_size", "strides", "dilation_rate", "radix", "cardinality", "reduction_factor",
        "min_inter_channels", "use_bias", "bn_momentum", "bn_epsilon", "kernel_initializer",
    )

    def __init__(
        self,
        filters: int,
        kernel_size: int = 3,
        strides: int = 1,
        dilation_rate: int = 1,
        radix: int = 2,
        cardinality: int = 1,
        reduction_factor: int = 4,
        min_inter_channels: int = 32,
        use_bias: bool = False,
        bn_momentum: float = 0.9,
        bn_epsilon: float = 1e-5,
        kernel_initializer="he_normal",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if radix < 1 or cardinality < 1:
            raise ValueError(f"radix and cardinality must be >= 1, got {radix}, {cardinality}")
        if filters % cardinality:
            raise ValueError(f"filters ({filters}) must be divisible by cardinality ({cardinality})")
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.dilation_rate = int(dilation_rate)
        self.radix = int(radix)
        self.cardinality = int(cardinality)
        self.reduction_factor = int(reduction_factor)
        self.min_inter_channels = int(min_inter_channels)
        self.use_bias = bool(use_bias)
        self.bn_momentum = float(bn_momentum)
        self.bn_epsilon = float(bn_epsilon)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def inter_channels(self, in_channels: int) -> int:
        """Width of the attention bottleneck for ``in_channels`` input channels."""
        return max(in_channels * self.radix // self.reduction_factor, self.min_inter_channels)

    def build(self, input_shape):
        in_channels = int(input_shape[-1])
        groups = self.cardinality * self.radix
        if in_channels % groups:
            raise ValueError(
                f"input channels ({in_channels}) must be divisible by cardinality * radix ({groups})"
            )
        inter = self.inter_channels(in_channels)
        if inter % self.cardinality:
            raise ValueError(f"attention width ({inter}) must be divisible by cardinality")
        pad = self.dilation_rate * (self.kernel_size - 1) // 2
        bn = {"momentum": self.bn_momentum, "epsilon": self.bn_epsilon, "dtype": self.dtype_policy}
        self.pad = keras.layers.ZeroPadding2D(pad, dtype=self.dtype_policy, name="pad") if pad else None
        self.conv = GroupedConv2D(
            self.filters * self.radix, self.kernel_size, strides=self.strides, padding="valid",
            dilation_rate=self.dilation_rate, groups=groups, use_bias=self.use_bias,
            kernel_initializer=self.kernel_initializer, dtype=self.dtype_policy, name="conv",
        )
        self.bn0 = keras.layers.BatchNormalization(name="bn0", **bn)
        self.fc1 = GroupedConv2D(
            inter, 1, groups=self.cardinality, kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy, name="fc1",
        )
        self.bn1 = keras.layers.BatchNormalization(name="bn1", **bn)
        self.fc2 = GroupedConv2D(
            self.filters * self.radix, 1, groups=self.cardinality,
            kernel_initializer=self.kernel_initializer, dtype=self.dtype_policy, name="fc2",
        )
        shape = tuple(input_shape)
        if self.pad is not None:
            self.pad.build(shape)
            shape = self.pad.compute_output_shape(shape)
        self.conv.build(shape)
        conv_shape = self.conv.compute_output_shape(shape)
        self.bn0.build(conv_shape)
        pooled = (conv_shape[0], 1, 1, self.filters)
        self.fc1.build(pooled)
        self.bn1.build((conv_shape[0], 1, 1, inter))
        self.fc2.build((conv_shape[0], 1, 1, inter))
        self.built = True

    def _splits_and_attention(self, inputs, training=None):
        """The radix splits (list of ``(B, H, W, filters)``) and weights ``(B, radix, filters)``."""
        x = self.pad(inputs) if self.pad is not None else inputs
        x = self.conv(x)
        x = ops.relu(self.bn0(x, training=training))
        splits = ops.split(x, self.radix, axis=-1) if self.radix > 1 else [x]
        gap = splits[0]
        for split in splits[1:]:
            gap = gap + split
        gap = ops.mean(gap, axis=(1, 2), keepdims=True)
        a = ops.relu(self.bn1(self.fc1(gap), training=training))
        a = self.fc2(a)  # (B, 1, 1, filters * radix), ordered (group, radix, channel)
        per_group = self.filters // self.cardinality
        a = ops.reshape(a, (-1, self.cardinality, self.radix, per_group))
        if self.radix > 1:
            a = ops.softmax(a, axis=2)
        else:
            a = ops.sigmoid(a)
        a = ops.transpose(a, (0, 2, 1, 3))  # (B, radix, group, channel)
        return splits, ops.reshape(a, (-1, self.radix, self.filters))

    def compute_attention(self, inputs, training=False):
        """Attention weights ``(B, radix, filters)``: they sum to 1 over radix when radix > 1."""
        if not self.built:
            self.build(tuple(inputs.shape))
        return self._splits_and_attention(inputs, training=training)[1]

    def call(self, inputs, training=None):
        splits, attention = self._splits_and_attention(inputs, training=training)
        out = None
        for r, split in enumerate(splits):
            weighted = split * attention[:, None, None, r, :]
            out = weighted if out is None else out + weighted
        return out

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        pad = self.dilation_rate * (self.kernel_size - 1) // 2
        eff = self.dilation_rate * (self.kernel_size - 1) + 1

        def out(n):
            return None if n is None else (n + 2 * pad - eff) // self.strides + 1

        return (b, out(h), out(w), self.filters)
