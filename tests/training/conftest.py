import json

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return tmp_path / "media"


@pytest.fixture(scope="module")
def build_once():
    """build_once(key, build) -> build() the first time ``key`` is asked for in this module, the
    same model after that; the Keras session is cleared when the module is done."""
    cache: dict = {}

    def get(key, build):
        if key not in cache:
            cache[key] = build()
        return cache[key]

    yield get
    cache.clear()
    import keras  # heavy optional import, kept local: most of this folder's tests need no Keras

    keras.backend.clear_session()


def assert_config_round_trip(original, shape=None) -> None:
    """``get_config`` is JSON (as a run stores it) and ``from_config`` rebuilds the same layer:
    the same config and, once built at ``shape`` (when given), the same weight shapes."""
    config = original.get_config()
    json.dumps(config)
    clone = type(original).from_config(config)
    assert clone.get_config() == config
    if shape is not None:
        original.build(shape)
        clone.build(shape)
    assert [tuple(w.shape) for w in clone.weights] == [tuple(w.shape) for w in original.weights]


def perturb_batch_norm_statistics(model, seed: int = 1) -> None:
    """Move the moving mean and variance of every BatchNormalization in ``model`` off their
    defaults (0 and 1), so that a save/load round trip that lost them would show."""
    import keras  # heavy optional import, kept local (see build_once)

    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(size=layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, size=layer.moving_variance.shape))
