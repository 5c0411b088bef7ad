"""ResNeSt backbone: a functional Keras model from images to globally pooled features.

Stem (deep: three 3x3 convs of ``stem_width``, ``stem_width``, ``2 * stem_width`` channels, the
first with stride 2; or one 7x7 stride-2 conv of 64) with BatchNorm + ReLU after each conv, then
a 3x3 stride-2 max pool; four stages of ResNeSt bottleneck blocks (base widths 64, 128, 256, 512,
times ``width_multiplier``; the first block of stages 2-4 has stride 2); global average pooling.
Output: ``(B, 2048 * width_multiplier)`` features. Inputs are float images, already normalised.
"""

from __future__ import annotations

import keras

from training.networks.resnest.resnest_block import EXPANSION, ResNeStBlock
from training.networks.resnest.resnest_config import ResNeStConfig
from training.networks.serializable import Serializable

STAGE_WIDTHS = (64, 128, 256, 512)


def _scaled(channels: int, width_multiplier: float) -> int:
    return max(1, int(round(channels * width_multiplier)))


@keras.saving.register_keras_serializable(package="cytoloop")
class ResNeStBackbone(Serializable, keras.Model):
    """``images (B, S, S, 3) -> features (B, num_features)``; see ``from_resnest_config``."""

    config_args = (
        "stage_depths", "stem_width", "radix", "cardinality", "bottleneck_width", "avg_down", "avd",
        "avd_first", "deep_stem", "width_multiplier", "reduction_factor", "min_inter_channels",
        "image_shape", "bn_momentum", "bn_epsilon", "zero_init_last_bn", "kernel_initializer",
    )

    def __init__(
        self,
        stage_depths=(3, 4, 6, 3),
        stem_width: int = 32,
        radix: int = 2,
        cardinality: int = 1,
        bottleneck_width: int = 64,
        avg_down: bool = True,
        avd: bool = True,
        avd_first: bool = False,
        deep_stem: bool = True,
        width_multiplier: float = 1.0,
        reduction_factor: int = 4,
        min_inter_channels: int = 32,
        image_shape=(224, 224, 3),
        bn_momentum: float = 0.9,
        bn_epsilon: float = 1e-5,
        zero_init_last_bn: bool = False,
        kernel_initializer="he_normal",
        **kwargs,
    ):
        stage_depths = tuple(int(n) for n in stage_depths)
        image_shape = tuple(None if n is None else int(n) for n in image_shape)
        initializer = keras.initializers.get(kernel_initializer)
        bn = {"momentum": bn_momentum, "epsilon": bn_epsilon}

        def conv(x, filters, kernel, strides, name):
            if strides > 1:  # symmetric padding, as the reference model
                x = keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
            return keras.layers.Conv2D(
                filters, kernel, strides=strides, padding="valid" if strides > 1 else "same",
                use_bias=False, kernel_initializer=initializer, name=name,
            )(x)

        def bn_relu(x, name):
            x = keras.layers.BatchNormalization(name=f"{name}_bn", **bn)(x)
            return keras.layers.ReLU(name=f"{name}_relu")(x)

        inputs = keras.Input(shape=image_shape, name="images")
        if deep_stem:
            stem = _scaled(stem_width, width_multiplier)
            x = bn_relu(conv(inputs, stem, 3, 2, "stem_conv1"), "stem_conv1")
            x = bn_relu(conv(x, stem, 3, 1, "stem_conv2"), "stem_conv2")
            x = bn_relu(conv(x, 2 * stem, 3, 1, "stem_conv3"), "stem_conv3")
        else:
            x = bn_relu(conv(inputs, _scaled(64, width_multiplier), 7, 2, "stem_conv1"), "stem_conv1")
        x = keras.layers.ZeroPadding2D(1, name="stem_pool_pad")(x)  # after ReLU: 0 acts as -inf
        x = keras.layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)

        for stage, depth in enumerate(stage_depths):
            filters = _scaled(STAGE_WIDTHS[stage], width_multiplier)
            for block in range(depth):
                x = ResNeStBlock(
                    filters,
                    strides=2 if stage > 0 and block == 0 else 1,
                    radix=radix,
                    cardinality=cardinality,
                    bottleneck_width=bottleneck_width,
                    avd=avd,
                    avd_first=avd_first,
                    avg_down=avg_down,
                    reduction_factor=reduction_factor,
                    min_inter_channels=min_inter_channels,
                    bn_momentum=bn_momentum,
                    bn_epsilon=bn_epsilon,
                    zero_init_last_bn=zero_init_last_bn,
                    kernel_initializer=initializer,
                    name=f"stage{stage + 1}_block{block + 1}",
                )(x)
        features = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        super().__init__(inputs=inputs, outputs=features, **kwargs)

        self.stage_depths = stage_depths
        self.stem_width = int(stem_width)
        self.radix = int(radix)
        self.cardinality = int(cardinality)
        self.bottleneck_width = int(bottleneck_width)
        self.avg_down = bool(avg_down)
        self.avd = bool(avd)
        self.avd_first = bool(avd_first)
        self.deep_stem = bool(deep_stem)
        self.width_multiplier = float(width_multiplier)
        self.reduction_factor = int(reduction_factor)
        self.min_inter_channels = int(min_inter_channels)
        self.image_shape = image_shape
        self.bn_momentum = float(bn_momentum)
        self.bn_epsilon = float(bn_epsilon)
        self.zero_init_last_bn = bool(zero_init_last_bn)
        self.kernel_initializer = initializer
        self.num_features = _scaled(STAGE_WIDTHS[-1], width_multiplier) * EXPANSION

    @classmethod
    def from_resnest_config(cls, config: ResNeStConfig, **kwargs) -> ResNeStBackbone:
        """The backbone a ``ResNeStConfig`` describes (its head fields are ignored here)."""
        return cls(
            stage_depths=config.layers,
            stem_width=config.stem_width,
            radix=config.radix,
            cardinality=config.cardinality,
            bottleneck_width=config.bottleneck_width,
            avg_down=config.avg_down,
            avd=config.avd,
            avd_first=config.avd_first,
            deep_stem=config.deep_stem,
            width_multiplier=config.width_multiplier,
            reduction_factor=config.reduction_factor,
            min_inter_channels=config.min_inter_channels,
            image_shape=(config.input_size, config.input_size, 3),
            bn_momentum=config.bn_momentum,
            bn_epsilon=config.bn_epsilon,
            zero_init_last_bn=config.zero_init_last_bn,
            **kwargs,
        )
