"""YOLOv4's necks: SPP + PANet (yolov4) and the small FPN of yolov4-tiny. Leaky ReLU throughout.

Plain functions on symbolic tensors (they add layers to the detector's functional graph).
Darknet layer numbers are for the published widths.

``apply_spp_panet([C3, C4, C5]) -> [P3, P4, P5]`` (layers 105-158 of ``cfg/yolov4.cfg``, less
the head convolutions interleaved there):

* on C5: 1x1 512, 3x3 1024, 1x1 512; SPP: max pools of 5, 9 and 13 (stride 1, "same"; Darknet
  pads with -inf as Keras does), concatenated [pool13, pool9, pool5, input] (2048 channels);
  1x1 512, 3x3 1024, 1x1 512: the top of the top-down path (layer 116);
* top-down, twice (to stride 16 with 256 channels, to stride 8 with 128): a 1x1 conv of the
  coarser map, x2 nearest-neighbour upsampling; a 1x1 conv of the backbone's map (the lateral);
  concatenated [lateral, upsampled]; five convs (1x1 c, 3x3 2c, 1x1 c, 3x3 2c, 1x1 c). The
  stride-8 result is P3 (layer 136);
* bottom-up, twice (to stride 16 with 256, to stride 32 with 512): a 3x3 stride-2 conv of the
  finer output, concatenated [downsampled, top-down map of that stride] (``route -1,-16`` and
  ``-1,-37``), five convs as above: P4 (layer 147) and P5 (layer 158).

``apply_tiny_fpn([C4, C5]) -> [P4, P5]`` (layers 27-34 of ``cfg/yolov4-tiny.cfg``): P5 is a 1x1
conv of 256 on C5; P4 is [upsample(1x1 conv of 128 on P5), C4] (``route -1, 23``), 384 channels.
"""

from __future__ import annotations

import keras

from training.networks.yolov4.backbone import scaled
from training.networks.yolov4.darknet_conv import darknet_conv

SPP_POOL_SIZES = (5, 9, 13)


def _conv_factory(width_multiplier, conv_options):
    def conv(x, filters, size, name, strides=1):
        return darknet_conv(x, scaled(filters, width_multiplier), size, strides=strides,
                            activation="leaky", name=name, **conv_options)

    return conv


def _five_convs(conv, x, width, name):
    """1x1 c, 3x3 2c, 1x1 c, 3x3 2c, 1x1 c (``width`` = c, unscaled)."""
    for i, (filters, size) in enumerate(((width, 1), (2 * width, 3)) * 2 + ((width, 1),)):
        x = conv(x, filters, size, f"{name}_conv{i + 1}")
    return x


def apply_spp(x, name: str = "spp"):
    """[max pool 13, max pool 9, max pool 5, x]: four times the channels, same size."""
    pools = [
        keras.layers.MaxPooling2D(size, strides=1, padding="same", name=f"{name}_pool{size}")(x)
        for size in reversed(SPP_POOL_SIZES)
    ]
    return keras.layers.Concatenate(name=f"{name}_concat")([*pools, x])


def apply_spp_panet(features, *, width_multiplier: float = 1.0, **conv_options):
    """``[C3, C4, C5]`` (strides 8, 16, 32) ``-> [P3, P4, P5]`` of 128, 256, 512 channels (x width).

    ``conv_options`` go to every ``darknet_conv`` (bn_momentum, bn_epsilon, kernel_initializer).
    """
    c3, c4, c5 = features
    conv = _conv_factory(width_multiplier, conv_options)

    x = conv(c5, 512, 1, "spp_pre_conv1")
    x = conv(x, 1024, 3, "spp_pre_conv2")
    x = conv(x, 512, 1, "spp_pre_conv3")
    x = apply_spp(x)
    x = conv(x, 512, 1, "spp_post_conv1")
    x = conv(x, 1024, 3, "spp_post_conv2")
    p5_top_down = conv(x, 512, 1, "spp_post_conv3")

    top_down = p5_top_down
    td_maps = {}
    for lateral_input, width, level in ((c4, 256, 4), (c3, 128, 3)):
        name = f"fpn_p{level}"
        up = conv(top_down, width, 1, f"{name}_reduce")
        up = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"{name}_upsample")(up)
        lateral = conv(lateral_input, width, 1, f"{name}_lateral")
        x = keras.layers.Concatenate(name=f"{name}_concat")([lateral, up])
        top_down = td_maps[level] = _five_convs(conv, x, width, name)
    p3 = td_maps[3]

    outputs = [p3]
    bottom_up = p3
    for level, width, td in ((4, 256, td_maps[4]), (5, 512, p5_top_down)):
        name = f"pan_p{level}"
        down = conv(bottom_up, width, 3, f"{name}_downsample", strides=2)
        x = keras.layers.Concatenate(name=f"{name}_concat")([down, td])
        bottom_up = _five_convs(conv, x, width, name)
        outputs.append(bottom_up)
    return outputs


def apply_tiny_fpn(features, *, width_multiplier: float = 1.0, **conv_options):
    """``[C4, C5]`` (strides 16, 32) ``-> [P4, P5]`` of 384 and 256 channels (x width)."""
    c4, c5 = features
    conv = _conv_factory(width_multiplier, conv_options)
    p5 = conv(c5, 256, 1, "fpn_p5_conv")
    up = conv(p5, 128, 1, "fpn_p4_reduce")
    up = keras.layers.UpSampling2D(2, interpolation="nearest", name="fpn_p4_upsample")(up)
    p4 = keras.layers.Concatenate(name="fpn_p4_concat")([up, c4])
    return [p4, p5]
