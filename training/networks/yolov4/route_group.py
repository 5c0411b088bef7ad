"""RouteGroup: Darknet's ``[route] layers=-1 groups=G group_id=I``, a slice of the channels.

The channels are cut into ``groups`` equal, contiguous parts and part ``group_id`` is passed on
(YOLOv4-tiny's CSP blocks route the second half, ``groups=2 group_id=1``, into their two 3x3
convolutions). Channels-last only, as the rest of the detector.
"""

from __future__ import annotations

import keras

from training.networks.serializable import Serializable


@keras.saving.register_keras_serializable(package="cytoloop")
class RouteGroup(Serializable, keras.layers.Layer):
    """``(B, H, W, C) -> (B, H, W, C / groups)``: channels ``[id * C/g, (id + 1) * C/g)``."""

    config_args = ("groups", "group_id")

    def __init__(self, groups: int = 2, group_id: int = 1, **kwargs):
        super().__init__(**kwargs)
        if groups < 1 or not 0 <= group_id < groups:
            raise ValueError(f"need groups >= 1 and 0 <= group_id < groups, got {groups}, {group_id}")
        self.groups = int(groups)
        self.group_id = int(group_id)

    def _bounds(self, channels: int) -> tuple[int, int]:
        if channels % self.groups:
            raise ValueError(f"{channels} channels do not split into {self.groups} equal groups")
        size = channels // self.groups
        return self.group_id * size, (self.group_id + 1) * size

    def build(self, input_shape):
        self._bounds(int(input_shape[-1]))  # fail at build time, not at the first call

    def call(self, inputs):
        start, stop = self._bounds(int(inputs.shape[-1]))
        return inputs[..., start:stop]

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], int(input_shape[-1]) // self.groups)
