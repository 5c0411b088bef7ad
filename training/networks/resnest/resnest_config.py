"""ResNeSt configuration: one frozen dataclass, the named presets, and ``preset(name, **overrides)``.

Pure module (no TensorFlow/Keras import), so a run's configuration can be stored, read and
validated without loading the ML stack. ``to_dict()`` gives plain JSON; ``from_dict()`` rebuilds
the exact configuration from it.

Architecture as in Zhang et al., "ResNeSt: Split-Attention Networks": bottleneck blocks whose
3x3 convolution is a split-attention convolution (radix splits, cardinal groups), a deep stem
(three 3x3 convolutions), average-pool downsampling in the shortcut ("avg_down") and inside the
block ("avd").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from annotation.bethesda import NUM_CLASSES


@dataclass(frozen=True)
class ResNeStConfig:
    """Everything needed to rebuild a ResNeSt classifier exactly.

    layers: bottleneck blocks per stage (four stages: 64, 128, 256, 512 base channels, x4 out).
    stem_width: channels of the first two stem convolutions (the third has twice as many).
    radix: splits per cardinal group in the split-attention convolution (1 = sigmoid gate).
    cardinality: cardinal groups. bottleneck_width: per-group width at 64 base channels.
    avg_down: shortcut downsampling by average pooling then a 1x1 conv (else a strided 1x1 conv).
    avd: average pooling (3x3) for the stride of a block instead of a strided 3x3 conv;
    avd_first: pool before the split-attention conv (False: after it, as in ResNeSt-50/101).
    deep_stem: three 3x3 convs (else one 7x7 conv of 64 channels).
    width_multiplier: scales every channel count (stem and stages); 1.0 is the published model.
    reduction_factor, min_inter_channels: attention bottleneck is
    max(in_channels * radix // reduction_factor, min_inter_channels).
    input_size: square image side in pixels. num_classes: classifier outputs. dropout: before the
    classifier head. bn_momentum / bn_epsilon: BatchNorm (Keras momentum 0.9 = PyTorch 0.1).
    zero_init_last_bn: start every block's last BatchNorm gamma at 0 (residual = identity).
    """

    layers: tuple[int, ...] = (3, 4, 6, 3)
    stem_width: int = 32
    radix: int = 2
    cardinality: int = 1
    bottleneck_width: int = 64
    avg_down: bool = True
    avd: bool = True
    avd_first: bool = False
    deep_stem: bool = True
    width_multiplier: float = 1.0
    reduction_factor: int = 4
    min_inter_channels: int = 32
    input_size: int = 224
    num_classes: int = NUM_CLASSES
    dropout: float = 0.0
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    zero_init_last_bn: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(int(n) for n in self.layers))
        if len(self.layers) != 4 or any(n < 1 for n in self.layers):
            raise ValueError(f"layers must be four positive block counts, got {self.layers}")
        for name in ("stem_width", "radix", "cardinality", "bottleneck_width", "reduction_factor",
                     "min_inter_channels", "input_size", "num_classes"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.width_multiplier > 0:
            raise ValueError(f"width_multiplier must be > 0, got {self.width_multiplier}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.input_size < 32:
            raise ValueError(f"input_size must be >= 32 (the network downsamples 32x), got {self.input_size}")

    def scaled(self, channels: int) -> int:
        """A channel count multiplied by width_multiplier (at least 1)."""
        return max(1, int(round(channels * self.width_multiplier)))

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["layers"] = list(self.layers)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResNeStConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ResNeStConfig fields: {', '.join(unknown)}")
        return cls(**data)


#: Published variants (deep stem, avg_down, avd after the split-attention conv, radix 2, 1 group),
#: plus "resnest_tiny", the test size: one block per stage, 1/8 of the channels, 64x64 input.
PRESETS: dict[str, ResNeStConfig] = {
    "resnest14": ResNeStConfig(layers=(1, 1, 1, 1)),
    "resnest26": ResNeStConfig(layers=(2, 2, 2, 2)),
    "resnest50": ResNeStConfig(layers=(3, 4, 6, 3)),
    "resnest101": ResNeStConfig(layers=(3, 4, 23, 3), stem_width=64),
    "resnest_tiny": ResNeStConfig(layers=(1, 1, 1, 1), width_multiplier=0.125, input_size=64),
}


def preset(name: str, **overrides: Any) -> ResNeStConfig:
    """The named preset, with any fields replaced: ``preset("resnest50", num_classes=1000)``."""
    try:
        base = PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown ResNeSt preset {name!r}; have: {', '.join(PRESETS)}") from None
    return dataclasses.replace(base, **overrides) if overrides else base
