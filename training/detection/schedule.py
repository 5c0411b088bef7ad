"""The detector's learning-rate schedule: linear warm-up, then cosine decay.

Keras module (imports Keras, hence TensorFlow; no Django import). Registered for serialisation,
so an optimizer that carries it saves and loads with a model.

With peak rate ``lr``, ``W`` warm-up steps, ``T`` steps in all, start ratio ``s`` and final ratio
``a`` (``step`` counts optimizer updates from 0, as ``optimizer.iterations``)::

    step <  W:  lr * (s + (1 - s) * step / W)                        linear from s * lr to lr
    step >= W:  lr * (a + (1 - a) * (1 + cos(pi * p)) / 2),  p = min(1, (step - W) / (T - W))

so the rate is ``lr`` at step W and ``a * lr`` from step T on. Warm-up (Darknet's ``burn_in``,
Goyal et al. 2017) keeps the first updates of a freshly initialised detector, whose objectness
loss is huge, from throwing the weights far off; the cosine (Loshchilov and Hutter, SGDR) ends
the run at a small rate without step-schedule tuning. The same values as Keras' ``CosineDecay``
with ``initial_learning_rate = s * lr``, ``warmup_target = lr``, ``warmup_steps = W``,
``decay_steps = T - W`` and ``alpha = a``.
"""

from __future__ import annotations

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="cytoloop")
class WarmupCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to ``learning_rate`` over ``warmup_steps``, then cosine decay to
    ``learning_rate * final_ratio`` at ``total_steps`` (module docstring)."""

    def __init__(
        self,
        learning_rate: float,
        total_steps: int,
        warmup_steps: int = 0,
        final_ratio: float = 0.0,
        warmup_start_ratio: float = 0.0,
        name: str = "warmup_cosine_decay",
    ) -> None:
        super().__init__()
        if not learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {learning_rate}")
        if int(total_steps) != total_steps or total_steps < 1:
            raise ValueError(f"total_steps must be a positive integer, got {total_steps}")
        if int(warmup_steps) != warmup_steps or not 0 <= warmup_steps <= total_steps:
            raise ValueError(f"warmup_steps must be an integer in 0..{total_steps}, got {warmup_steps}")
        for what, value in (("final_ratio", final_ratio), ("warmup_start_ratio", warmup_start_ratio)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{what} must be in [0, 1], got {value}")
        self.learning_rate = float(learning_rate)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.final_ratio = float(final_ratio)
        self.warmup_start_ratio = float(warmup_start_ratio)
        self.name = name

    def __call__(self, step):
        step = ops.cast(step, "float32")
        lr = self.learning_rate
        if self.warmup_steps:
            warm = self.warmup_start_ratio + (1.0 - self.warmup_start_ratio) * step / self.warmup_steps
        else:
            warm = ops.ones_like(step)
        decay_steps = max(self.total_steps - self.warmup_steps, 1)
        progress = ops.clip((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
        cosine = self.final_ratio + (1.0 - self.final_ratio) * 0.5 * (1.0 + ops.cos(math.pi * progress))
        return lr * ops.where(step < self.warmup_steps, warm, cosine)

    def get_config(self) -> dict:
        return {
            "learning_rate": self.learning_rate,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "final_ratio": self.final_ratio,
            "warmup_start_ratio": self.warmup_start_ratio,
            "name": self.name,
        }
