"""ResNeSt classifier: backbone, dropout and a dense softmax head, with two named outputs.

``model(images)`` returns ``{"probabilities": (B, num_classes), "embedding": (B, num_features)}``:
the class probabilities (softmax, float32 even under a mixed-precision policy) and the backbone's
pooled features (taken before dropout), which active learning uses for diversity sampling.
Train with a loss on "probabilities" only, e.g.
``model.compile(loss={"probabilities": "sparse_categorical_crossentropy"})``.
"""

from __future__ import annotations

from typing import Any

import keras

from training.networks.resnest.resnest_backbone import ResNeStBackbone
from training.networks.resnest.resnest_config import ResNeStConfig, preset
from training.networks.serializable import Serializable


@keras.saving.register_keras_serializable(package="cytoloop")
class ResNeStClassifier(Serializable, keras.Model):
    """``images -> {"probabilities", "embedding"}``; build with ``from_preset`` / ``from_resnest_config``."""

    config_args = ("backbone", "num_classes", "dropout")

    def __init__(self, backbone, num_classes: int, dropout: float = 0.0, **kwargs):
        if isinstance(backbone, dict):
            backbone = keras.saving.deserialize_keras_object(backbone)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        inputs = keras.Input(shape=backbone.input_shape[1:], name="images")
        features = backbone(inputs)
        x = keras.layers.Dropout(dropout, name="head_dropout")(features) if dropout else features
        logits = keras.layers.Dense(int(num_classes), name="logits")(x)
        probabilities = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
        embedding = keras.layers.Activation("linear", dtype="float32", name="embedding")(features)
        super().__init__(
            inputs=inputs,
            outputs={"probabilities": probabilities, "embedding": embedding},
            **kwargs,
        )
        self.backbone = backbone
        self.num_classes = int(num_classes)
        self.dropout = float(dropout)

    @classmethod
    def from_resnest_config(cls, config: ResNeStConfig, **kwargs) -> ResNeStClassifier:
        """A freshly initialised classifier exactly as ``config`` describes."""
        backbone = ResNeStBackbone.from_resnest_config(config, name="resnest_backbone")
        return cls(backbone, num_classes=config.num_classes, dropout=config.dropout, **kwargs)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> ResNeStClassifier:
        """A freshly initialised classifier of a named preset (no pretrained weights)."""
        return cls.from_resnest_config(preset(name, **overrides))
