"""YOLOv4's backbones: CSPDarknet53 (Mish) and the YOLOv4-tiny backbone (leaky ReLU).

Both are functional Keras models from images to a list of feature maps, finest first, and
follow Darknet's ``cfg/yolov4.cfg`` and ``cfg/yolov4-tiny.cfg`` layer for layer (Darknet layer
numbers are given below for the published widths and depths).

CSPDarknet53 (layers 0-104): a 3x3 convolution of 32, then five cross-stage-partial stages of
64, 128, 256, 512, 1024 channels with 1, 2, 8, 8, 4 residual blocks. Each stage: a 3x3
stride-2 convolution; two 1x1 convolutions of it, the "shortcut" part (Darknet's ``route -2``
branch) and the "main" part; the residual blocks on the main part (1x1 then 3x3 convolution,
added to the block's input, no activation after the sum: ``[shortcut] activation=linear``);
a 1x1 convolution of the main part; the concatenation [main, shortcut] (``route -1,-N``), and a
1x1 "transition" convolution to the stage's width. Stages 2-5 halve the width of both parts;
stage 1 keeps 64 and halves only the residual blocks' first convolution (32). Outputs: the
transitions of stages 3, 4 and 5 (layers 54, 85 and 104): strides 8, 16 and 32, 256, 512 and
1024 channels.

YOLOv4-tiny backbone (layers 0-26): 3x3 stride-2 convolutions of 32 and 64, three CSP-style
blocks of 64, 128 and 256 channels and a 3x3 convolution of 512. Each block: a 3x3 convolution
of C; its second half of channels (``route groups=2 group_id=1``) through two 3x3 convolutions
of C/2, concatenated [second, first] (``route -1,-2``); a 1x1 convolution of C; the
concatenation [block's 3x3 output, that 1x1] (``route -6,-1``); a 2x2 stride-2 max pool.
Outputs: the third block's 1x1 convolution (layer 23; stride 16, 256 channels), which the neck
routes back to, and the final 3x3 convolution (layer 26; stride 32, 512 channels).

``width_multiplier`` scales every channel count (1.0 is the published network) and
``stage_depths`` sets CSPDarknet53's residual blocks per stage; both exist for small test-size
variants. Inputs are float images; the detector scales them to [0, 1] before they get here.
"""

from __future__ import annotations

import keras

from training.networks.serializable import Serializable
from training.networks.yolov4.darknet_conv import darknet_conv
from training.networks.yolov4.route_group import RouteGroup

CSP_STAGE_WIDTHS = (64, 128, 256, 512, 1024)
CSP_STAGE_DEPTHS = (1, 2, 8, 8, 4)
TINY_BLOCK_WIDTHS = (64, 128, 256)


def scaled(channels: int, width_multiplier: float) -> int:
    """A channel count times ``width_multiplier``, rounded, at least 1."""
    return max(1, int(round(channels * width_multiplier)))


class _DarknetBackbone(Serializable, keras.Model):
    """Shared bookkeeping: the constructor arguments, kept as attributes and in ``get_config``."""

    config_args: tuple[str, ...] = ("width_multiplier", "image_shape", "bn_momentum", "bn_epsilon", "kernel_initializer")

    def _keep(self, *, width_multiplier, image_shape, bn_momentum, bn_epsilon, kernel_initializer):
        self.width_multiplier = float(width_multiplier)
        self.image_shape = tuple(image_shape)
        self.bn_momentum = float(bn_momentum)
        self.bn_epsilon = float(bn_epsilon)
        self.kernel_initializer = kernel_initializer
        self.feature_channels = tuple(int(f.shape[-1]) for f in self.outputs)


def _image_shape(image_shape) -> tuple:
    return tuple(None if n is None else int(n) for n in image_shape)


@keras.saving.register_keras_serializable(package="cytoloop")
class CSPDarknet53(_DarknetBackbone):
    """``images (B, S, S, 3) -> [C3 (S/8), C4 (S/16), C5 (S/32)]`` with Mish activations."""

    config_args = (*_DarknetBackbone.config_args, "stage_depths")
    strides = (8, 16, 32)

    def __init__(
        self,
        width_multiplier: float = 1.0,
        stage_depths=CSP_STAGE_DEPTHS,
        image_shape=(608, 608, 3),
        bn_momentum: float = 0.99,
        bn_epsilon: float = 1e-5,
        kernel_initializer="he_normal",
        **kwargs,
    ):
        stage_depths = tuple(int(n) for n in stage_depths)
        if len(stage_depths) != len(CSP_STAGE_WIDTHS) or min(stage_depths) < 1:
            raise ValueError(f"stage_depths must be five positive block counts, got {stage_depths}")
        image_shape = _image_shape(image_shape)
        initializer = keras.initializers.get(kernel_initializer)

        def conv(x, filters, size, name, strides=1):
            return darknet_conv(
                x, scaled(filters, width_multiplier), size, strides=strides, activation="mish",
                bn_momentum=bn_momentum, bn_epsilon=bn_epsilon, kernel_initializer=initializer,
                name=name,
            )

        inputs = keras.Input(shape=image_shape, name="images")
        x = conv(inputs, 32, 3, "stem_conv")
        features = []
        for index, (width, depth) in enumerate(zip(CSP_STAGE_WIDTHS, stage_depths, strict=True)):
            s = f"stage{index + 1}"
            part = width if index == 0 else width // 2  # stage 1 keeps its width in both parts
            inner = width // 2 if index == 0 else part
            x = conv(x, width, 3, f"{s}_down", strides=2)
            shortcut = conv(x, part, 1, f"{s}_shortcut")
            main = conv(x, part, 1, f"{s}_main")
            for block in range(depth):
                b = f"{s}_block{block + 1}"
                y = conv(main, inner, 1, f"{b}_conv1")
                y = conv(y, part, 3, f"{b}_conv2")
                main = keras.layers.Add(name=f"{b}_add")([main, y])
            main = conv(main, part, 1, f"{s}_main_out")
            x = keras.layers.Concatenate(name=f"{s}_concat")([main, shortcut])
            x = conv(x, width, 1, f"{s}_transition")
            if index >= 2:
                features.append(x)
        super().__init__(inputs=inputs, outputs=features, **kwargs)
        self.stage_depths = stage_depths
        self._keep(width_multiplier=width_multiplier, image_shape=image_shape,
                   bn_momentum=bn_momentum, bn_epsilon=bn_epsilon, kernel_initializer=initializer)


@keras.saving.register_keras_serializable(package="cytoloop")
class CSPDarknet53Tiny(_DarknetBackbone):
    """``images (B, S, S, 3) -> [C4 (S/16, 256), C5 (S/32, 512)]`` with leaky ReLU (slope 0.1)."""

    strides = (16, 32)

    def __init__(
        self,
        width_multiplier: float = 1.0,
        image_shape=(416, 416, 3),
        bn_momentum: float = 0.99,
        bn_epsilon: float = 1e-5,
        kernel_initializer="he_normal",
        **kwargs,
    ):
        image_shape = _image_shape(image_shape)
        initializer = keras.initializers.get(kernel_initializer)
        if any(scaled(w, width_multiplier) % 2 for w in TINY_BLOCK_WIDTHS):
            raise ValueError(f"width_multiplier {width_multiplier} gives a block width that does "
                             "not split into two halves")

        def conv(x, filters, size, name, strides=1):
            return darknet_conv(
                x, scaled(filters, width_multiplier), size, strides=strides, activation="leaky",
                bn_momentum=bn_momentum, bn_epsilon=bn_epsilon, kernel_initializer=initializer,
                name=name,
            )

        inputs = keras.Input(shape=image_shape, name="images")
        x = conv(inputs, 32, 3, "stem_conv1", strides=2)
        x = conv(x, 64, 3, "stem_conv2", strides=2)
        route = None
        for index, width in enumerate(TINY_BLOCK_WIDTHS):
            b = f"block{index + 1}"
            x = conv(x, width, 3, f"{b}_conv")
            half = RouteGroup(groups=2, group_id=1, name=f"{b}_route_group")(x)
            first = conv(half, width // 2, 3, f"{b}_conv1")
            second = conv(first, width // 2, 3, f"{b}_conv2")
            y = keras.layers.Concatenate(name=f"{b}_concat1")([second, first])
            route = conv(y, width, 1, f"{b}_conv3")
            x = keras.layers.Concatenate(name=f"{b}_concat2")([x, route])
            # Darknet's 2x2/2 max pool pads (size - 1) at the bottom/right: "same" on even sizes.
            x = keras.layers.MaxPooling2D(2, strides=2, padding="same", name=f"{b}_pool")(x)
        x = conv(x, 512, 3, "top_conv")
        super().__init__(inputs=inputs, outputs=[route, x], **kwargs)
        self._keep(width_multiplier=width_multiplier, image_shape=image_shape,
                   bn_momentum=bn_momentum, bn_epsilon=bn_epsilon, kernel_initializer=initializer)
