"""One ``get_config`` for every custom Keras layer and model of the networks.

A class lists its constructor arguments in ``config_args``; its ``__init__`` keeps each as an
attribute of the same name. ``get_config`` returns ``{**super().get_config(), **those}`` (so
Keras' own fields, name, trainable and dtype among them, chain through), each value as JSON
data: tuples as lists, initializers and nested layers serialized. ``from_config`` rebuilds with
``cls(**config)``. The mixin goes before the Keras base class:
``class RouteGroup(Serializable, keras.layers.Layer)``.
"""

from __future__ import annotations

import keras


def config_value(value):
    """A constructor argument as JSON data."""
    if isinstance(value, keras.initializers.Initializer):
        return keras.initializers.serialize(value)
    if isinstance(value, keras.layers.Layer):
        return keras.saving.serialize_keras_object(value)
    if isinstance(value, tuple):
        return [config_value(v) for v in value]
    return value


class Serializable:
    """Mixin: ``get_config`` over ``super().get_config()`` from the ``config_args`` attributes."""

    config_args: tuple[str, ...] = ()

    def get_config(self):
        # the Keras class after this mixin in the bases has get_config; mypy sees only object
        return {**super().get_config(),  # type: ignore[misc]
                **{name: config_value(getattr(self, name)) for name in self.config_args}}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
