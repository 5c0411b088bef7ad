"""Mish (Misra, 2019): ``x * tanh(softplus(x))``, the activation of YOLOv4's backbone.

Darknet's ``activation=mish``. Smooth and non-monotonic: about -0.31 at its minimum
(x ~ -1.19), 0 at 0, and x for large x. ``softplus`` is computed in its overflow-safe form by
the backend, so the layer is finite for any finite input (also in float16).
"""

from __future__ import annotations

import keras
from keras import ops

from training.networks.serializable import Serializable


@keras.saving.register_keras_serializable(package="cytoloop")
class Mish(Serializable, keras.layers.Layer):
    """Element-wise ``x * tanh(softplus(x))``; shape and dtype unchanged."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs):
        return inputs * ops.tanh(ops.softplus(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape
