"""YOLOV4Detector: images in [0, 1] to the raw outputs of each detection head.

``model(images)`` with float32 images ``(B, S, S, 3)`` scaled to [0, 1] returns a list with one
tensor per scale, finest stride first (yolov4: strides 8, 16, 32; yolov4-tiny: 16, 32), each
``(B, S / stride, S / stride, num_anchors, 5 + num_classes)``, float32, its last axis
``[tx, ty, tw, th, objectness, class logits...]`` with no activation applied.

The model holds no anchors in its graph; ``anchors`` (pixels, ``(num_scales, num_anchors, 2)``)
and ``scale_x_y`` (per scale) are kept as metadata in its config, so a saved model carries what
its decoder and loss need. ``build_detector`` in ``presets`` fills them from a preset.
"""

from __future__ import annotations

import keras

from training.networks.serializable import Serializable
from training.networks.yolov4.backbone import CSP_STAGE_DEPTHS, CSPDarknet53, CSPDarknet53Tiny
from training.networks.yolov4.head import apply_yolo_heads
from training.networks.yolov4.neck import apply_spp_panet, apply_tiny_fpn

ARCHITECTURES = ("yolov4", "yolov4_tiny")
#: Channels of each head's 3x3 convolution, per scale, finest first (before width_multiplier).
HEAD_WIDTHS = {"yolov4": (256, 512, 1024), "yolov4_tiny": (256, 512)}
STRIDES = {"yolov4": CSPDarknet53.strides, "yolov4_tiny": CSPDarknet53Tiny.strides}
MAX_STRIDE = 32


@keras.saving.register_keras_serializable(package="cytoloop")
class YOLOV4Detector(Serializable, keras.Model):
    """YOLOv4 or YOLOv4-tiny, as in Darknet's cfg; see the module docstring for the outputs."""

    config_args = (
        "architecture", "num_classes", "input_size", "width_multiplier", "stage_depths", "num_anchors",
        "anchors", "scale_x_y", "bn_momentum", "bn_epsilon", "kernel_initializer",
    )

    def __init__(
        self,
        architecture: str = "yolov4",
        num_classes: int = 80,
        input_size: int = 608,
        width_multiplier: float = 1.0,
        stage_depths=CSP_STAGE_DEPTHS,
        num_anchors: int = 3,
        anchors=None,
        scale_x_y=None,
        bn_momentum: float = 0.99,
        bn_epsilon: float = 1e-5,
        kernel_initializer="he_normal",
        **kwargs,
    ):
        if architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
        input_size = int(input_size)
        if input_size < MAX_STRIDE or input_size % MAX_STRIDE:
            raise ValueError(f"input_size must be a positive multiple of {MAX_STRIDE}, got {input_size}")
        strides = STRIDES[architecture]
        anchors = None if anchors is None else [[[float(v) for v in a] for a in s] for s in anchors]
        if anchors is not None and (
            len(anchors) != len(strides) or any(len(s) != num_anchors for s in anchors)
            or any(len(a) != 2 for s in anchors for a in s)
        ):
            raise ValueError(f"anchors must have shape ({len(strides)}, {num_anchors}, 2)")
        scale_x_y = None if scale_x_y is None else [float(v) for v in scale_x_y]
        if scale_x_y is not None and len(scale_x_y) != len(strides):
            raise ValueError(f"scale_x_y needs one value per scale ({len(strides)})")

        initializer = keras.initializers.get(kernel_initializer)
        conv_options = {"bn_momentum": bn_momentum, "bn_epsilon": bn_epsilon,
                        "kernel_initializer": initializer}
        image_shape = (input_size, input_size, 3)
        if architecture == "yolov4":
            backbone = CSPDarknet53(width_multiplier, stage_depths, image_shape,
                                    name="backbone", **conv_options)
        else:
            backbone = CSPDarknet53Tiny(width_multiplier, image_shape, name="backbone", **conv_options)
        inputs = keras.Input(shape=image_shape, name="images")
        features = backbone(inputs)
        neck = apply_spp_panet if architecture == "yolov4" else apply_tiny_fpn
        features = neck(features, width_multiplier=width_multiplier, **conv_options)
        outputs = apply_yolo_heads(
            features, strides=strides, head_widths=HEAD_WIDTHS[architecture],
            num_classes=num_classes, num_anchors=num_anchors, width_multiplier=width_multiplier,
            **conv_options,
        )
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        self.backbone = backbone
        self.architecture = architecture
        self.num_classes = int(num_classes)
        self.input_size = input_size
        self.width_multiplier = float(width_multiplier)
        self.stage_depths = tuple(int(n) for n in stage_depths)
        self.num_anchors = int(num_anchors)
        self.anchors = anchors
        self.scale_x_y = scale_x_y
        self.bn_momentum = float(bn_momentum)
        self.bn_epsilon = float(bn_epsilon)
        self.kernel_initializer = initializer
        self.strides = tuple(strides)
