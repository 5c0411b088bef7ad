"""ResNeSt (Zhang et al., "ResNeSt: Split-Attention Networks") in Keras 3: the cell classifier.

Importing this package imports Keras/TensorFlow; the Django app (``training``) never does.
"""

from training.models.resnest.grouped_conv2d import GroupedConv2D
from training.models.resnest.resnest_backbone import ResNeStBackbone
from training.models.resnest.resnest_block import ResNeStBlock
from training.models.resnest.resnest_classifier import ResNeStClassifier
from training.models.resnest.resnest_config import PRESETS, ResNeStConfig, preset
from training.models.resnest.split_attention import SplitAttentionConv2D

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
