"""ResNeSt (Zhang et al., "ResNeSt: Split-Attention Networks") in Keras 3: the cell classifier.

Importing this package imports Keras/TensorFlow; the Django app (``training``) never does.
"""

from training.networks.resnest.grouped_conv2d import GroupedConv2D
from training.networks.resnest.resnest_backbone import ResNeStBackbone
from training.networks.resnest.resnest_block import ResNeStBlock
from training.networks.resnest.resnest_classifier import ResNeStClassifier
from training.networks.resnest.resnest_config import PRESETS, ResNeStConfig, preset
from training.networks.resnest.split_attention import SplitAttentionConv2D

__all__ = [
    "PRESETS",
    "GroupedConv2D",
    "ResNeStBackbone",
    "ResNeStBlock",
    "ResNeStClassifier",
    "ResNeStConfig",
    "SplitAttentionConv2D",
    "preset",
]
