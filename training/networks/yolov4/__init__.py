"""YOLOv4 (Bochkovskiy et al., 2020) in Keras 3, as Darknet's cfg/yolov4.cfg and yolov4-tiny.cfg.

``build_detector("yolov4", num_classes=5)`` -> a ``YOLOV4Detector`` whose outputs are the raw
head tensors ``(B, S/stride, S/stride, 3, 5 + C)``, finest stride first; ``PRESETS`` /
``get_preset`` give each preset's input size, strides, anchors and ``scale_x_y``.

Importing this package imports Keras/TensorFlow; the Django app (``training``) never does.
"""

from training.networks.yolov4.backbone import CSPDarknet53, CSPDarknet53Tiny
from training.networks.yolov4.darknet_conv import darknet_conv
from training.networks.yolov4.detector import YOLOV4Detector
from training.networks.yolov4.head import BOX_FIELDS, apply_yolo_heads
from training.networks.yolov4.mish import Mish
from training.networks.yolov4.neck import apply_spp, apply_spp_panet, apply_tiny_fpn
from training.networks.yolov4.presets import PRESETS, YoloPreset, build_detector, get_preset
from training.networks.yolov4.route_group import RouteGroup

__all__ = [
    "BOX_FIELDS",
    "PRESETS",
    "CSPDarknet53",
    "CSPDarknet53Tiny",
    "Mish",
    "RouteGroup",
    "YOLOV4Detector",
    "YoloPreset",
    "apply_spp",
    "apply_spp_panet",
    "apply_tiny_fpn",
    "apply_yolo_heads",
    "build_detector",
    "darknet_conv",
    "get_preset",
]
