"""ResNeSt in Keras 3: shapes, parameter counts against the reference, attention, serialisation.

Tiny shapes everywhere (the "resnest_tiny" preset: one block per stage, 1/8 of the channels);
the full-size presets are built once per module, only to count parameters and read output shapes
symbolically (no inference on them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from tests.training.conftest import assert_config_round_trip, perturb_batch_norm_statistics  # noqa: E402
from training.networks.resnest import (  # noqa: E402
    PRESETS,
    GroupedConv2D,
    ResNeStBackbone,
    ResNeStBlock,
    ResNeStClassifier,
    ResNeStConfig,
    SplitAttentionConv2D,
    preset,
)

ROOT = Path(__file__).resolve().parents[2]

# Parameter counts of the reference PyTorch models (deep stem, avg_down, avd, radix 2, 1000-class
# head, 224 px). PyTorch's parameters() holds conv kernels, biases, the Linear head and BatchNorm
# gamma/beta, but not BatchNorm running mean/var (buffers). Keras keeps the running statistics
# as non-trainable weights (count_params() includes them), so the like-for-like figure is the
# Keras *trainable* parameter count.
REFERENCE_PARAMS = {
    "resnest14": 10_611_688,
    "resnest26": 17_069_448,
    "resnest50": 27_483_240,
    "resnest101": 48_275_016,
}


def _n(weights) -> int:
    return sum(int(np.prod(w.shape)) for w in weights)


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, size, size, 3)).astype("float32")


@pytest.fixture(scope="module")
def full_size_models(build_once):
    """Each full-size preset (1000 classes), built at most once for this module."""
    return lambda name: build_once(name, lambda: ResNeStClassifier.from_preset(name, num_classes=1000))


@pytest.fixture(scope="module")
def tiny_classifier():
    keras.utils.set_random_seed(0)
    return ResNeStClassifier.from_preset("resnest_tiny")


# --- configuration --------------------------------------------------------------------------


def test_preset_applies_overrides_without_changing_the_preset():
    config = preset("resnest50", num_classes=1000, dropout=0.2)
    assert config.layers == (3, 4, 6, 3) and config.num_classes == 1000 and config.dropout == 0.2
    assert PRESETS["resnest50"].dropout == 0.0


def test_config_round_trips_through_json():
    config = preset("resnest101", width_multiplier=0.5)
    again = ResNeStConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config


def test_config_rejects_a_wrong_number_of_stages():
    with pytest.raises(ValueError, match="four positive"):
        ResNeStConfig(layers=(1, 1, 1))


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(KeyError, match="resnest50"):
        preset("resnest18")


def test_loading_django_does_not_import_tensorflow():
    """Django loads every app's models at setup; the networks load only with their subpackage."""
    code = (
        "import sys, django; sys.path[:0] = ['platform', '.']; django.setup(); "
        "import training.models; print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "cytoloop.settings.test"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


# --- classifier outputs ---------------------------------------------------------------------


def test_tiny_classifier_outputs_probabilities_and_embedding(tiny_classifier):
    out = tiny_classifier(_images(2, 64), training=False)
    probabilities = keras.ops.convert_to_numpy(out["probabilities"])
    embedding = keras.ops.convert_to_numpy(out["embedding"])
    assert probabilities.shape == (2, 6)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert embedding.shape == (2, tiny_classifier.backbone.num_features) == (2, 256)


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_parameter_count_matches_reference(full_size_models, name):
    model = full_size_models(name)
    trainable = _n(model.trainable_weights)
    # Aim is exact; the tolerance is 1%.
    assert trainable == REFERENCE_PARAMS[name], f"{name}: {trainable:,} != {REFERENCE_PARAMS[name]:,}"


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_full_size_output_shapes(full_size_models, name):
    model = full_size_models(name)
    shapes = dict(zip(model.output_names, model.output_shape, strict=True))
    assert shapes == {"embedding": (None, 2048), "probabilities": (None, 1000)}


# --- layers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("radix,cardinality", [(2, 1), (4, 1), (2, 2)])
def test_split_attention_weights_sum_to_one_across_radix(radix, cardinality):
    layer = SplitAttentionConv2D(8, radix=radix, cardinality=cardinality)
    attention = keras.ops.convert_to_numpy(layer.compute_attention(_images(3, 6)[..., :1].repeat(8, -1)))
    assert attention.shape == (3, radix, 8)
    np.testing.assert_allclose(attention.sum(axis=1), 1.0, rtol=1e-5)
    assert (attention > 0).all()


def test_split_attention_with_radix_one_is_a_sigmoid_gate():
    layer = SplitAttentionConv2D(8, radix=1)
    attention = keras.ops.convert_to_numpy(layer.compute_attention(_images(2, 6)[..., :1].repeat(8, -1)))
    assert attention.shape == (2, 1, 8) and ((attention > 0) & (attention < 1)).all()


def _np_grouped_conv(x, kernel, groups, pad):
    """Plain NumPy grouped convolution, stride 1, symmetric zero padding: the test's reference."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    k, _, cin_g, cout = kernel.shape
    h, w = x.shape[1] - k + 1, x.shape[2] - k + 1
    out = np.zeros((x.shape[0], h, w, cout))
    cout_g = cout // groups
    for g in range(groups):
        xs = x[..., g * cin_g:(g + 1) * cin_g]
        ks = kernel[..., g * cout_g:(g + 1) * cout_g]
        for i in range(k):
            for j in range(k):
                out[..., g * cout_g:(g + 1) * cout_g] += xs[:, i:i + h, j:j + w, :] @ ks[i, j]
    return out


def _np_bn(x, bn):
    gamma, beta, mean, var = (keras.ops.convert_to_numpy(v) for v in
                              (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance))
    return (x - mean) / np.sqrt(var + bn.epsilon) * gamma + beta


def test_split_attention_matches_a_numpy_reference():
    """Radix 2 x cardinality 2 in inference mode, from the paper's equations, written in NumPy:
    split r is channels [r*C, (r+1)*C) of the grouped conv; the attention vector is ordered
    (cardinal group, radix, channel) and soft-maxed over radix."""
    radix, card, filters = 2, 2, 8
    layer = SplitAttentionConv2D(filters, radix=radix, cardinality=card, min_inter_channels=4)
    x = _images(2, 5)[..., :1].repeat(8, -1) * np.linspace(0.5, 1.5, 8, dtype="float32")
    layer.build(x.shape)
    rng = np.random.default_rng(3)
    for bn in (layer.bn0, layer.bn1):
        bn.moving_mean.assign(rng.normal(size=bn.moving_mean.shape))
        bn.moving_variance.assign(rng.uniform(0.5, 2.0, size=bn.moving_variance.shape))
        bn.beta.assign(rng.normal(size=bn.beta.shape))
    for conv in (layer.fc1, layer.fc2):
        conv.bias.assign(rng.normal(size=conv.bias.shape))
    w = {name: keras.ops.convert_to_numpy(getattr(layer, name).kernel) for name in ("conv", "fc1", "fc2")}

    y = np.maximum(_np_bn(_np_grouped_conv(x, w["conv"], card * radix, 1), layer.bn0), 0)
    splits = [y[..., r * filters:(r + 1) * filters] for r in range(radix)]
    gap = sum(splits).mean(axis=(1, 2), keepdims=True)
    a = _np_grouped_conv(gap, w["fc1"], card, 0) + keras.ops.convert_to_numpy(layer.fc1.bias)
    a = np.maximum(_np_bn(a, layer.bn1), 0)
    a = _np_grouped_conv(a, w["fc2"], card, 0) + keras.ops.convert_to_numpy(layer.fc2.bias)
    a = a.reshape(-1, card, radix, filters // card)
    a = np.exp(a - a.max(axis=2, keepdims=True))
    a = a / a.sum(axis=2, keepdims=True)
    a = a.transpose(0, 2, 1, 3).reshape(-1, radix, filters)
    expected = sum(a[:, None, None, r, :] * splits[r] for r in range(radix))

    actual = keras.ops.convert_to_numpy(layer(x, training=False))
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


def test_grouped_conv2d_matches_keras_conv2d():
    x = _images(2, 7)[..., :1].repeat(12, -1)
    ours = GroupedConv2D(8, 3, strides=2, groups=4)
    theirs = keras.layers.Conv2D(8, 3, strides=2, groups=4)
    ours.build(x.shape)
    theirs.build(x.shape)
    ours.set_weights(theirs.get_weights())
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(ours(x)), keras.ops.convert_to_numpy(theirs(x)), rtol=1e-5, atol=1e-5
    )


def test_split_attention_strided_output_shape():
    layer = SplitAttentionConv2D(16, strides=2)
    assert tuple(layer(np.zeros((2, 9, 9, 8), "float32")).shape) == (2, 5, 5, 16)
    assert layer.compute_output_shape((2, 9, 9, 8)) == (2, 5, 5, 16)


def test_split_attention_uses_a_grouped_conv_and_the_papers_bottleneck():
    layer = SplitAttentionConv2D(64, radix=2)
    layer.build((None, 8, 8, 64))
    assert tuple(layer.conv.kernel.shape) == (3, 3, 32, 128)  # groups = radix: 64/2 inputs each
    assert tuple(layer.fc1.kernel.shape) == (1, 1, 64, 32)  # max(64 * 2 // 4, 32)


def test_strided_block_halves_the_size_and_projects_the_shortcut():
    block = ResNeStBlock(8, strides=2)
    out = block(np.zeros((2, 8, 8, 16), "float32"))
    assert tuple(out.shape) == (2, 4, 4, 32)
    assert block.shortcut_pool is not None and block.shortcut_conv is not None
    assert block.avd_pool is not None and block.split_attention.strides == 1


def test_block_keeps_an_identity_shortcut_when_shapes_match():
    block = ResNeStBlock(8)
    out = block(np.zeros((2, 8, 8, 32), "float32"))
    assert tuple(out.shape) == (2, 8, 8, 32) and block.shortcut_conv is None


def _tiny_backbone():
    return ResNeStBackbone.from_resnest_config(preset("resnest_tiny"))


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: SplitAttentionConv2D(8, radix=4, cardinality=2, reduction_factor=2), (1, 6, 6, 8)),
        (lambda: ResNeStBlock(8, strides=2, avd_first=True, avg_down=False), (1, 8, 8, 16)),
        (_tiny_backbone, None),
        (lambda: ResNeStClassifier(_tiny_backbone(), num_classes=3, dropout=0.3), None),
    ],
    ids=["split_attention", "block", "backbone", "classifier"],
)
def test_get_config_from_config_round_trip(make, shape):
    assert_config_round_trip(make(), shape)


def test_mixed_precision_keeps_probabilities_in_float32():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = ResNeStClassifier.from_preset("resnest_tiny")
        out = model(_images(1, 64), training=False)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    conv = model.backbone.get_layer("stage2_block1").split_attention.conv
    assert conv.compute_dtype == "float16" and conv.variable_dtype == "float32"
    dtypes = {key: keras.backend.standardize_dtype(value.dtype) for key, value in out.items()}
    assert dtypes == {"probabilities": "float32", "embedding": "float32"}
    assert np.isfinite(keras.ops.convert_to_numpy(out["probabilities"])).all()


# --- saving and training --------------------------------------------------------------------


def test_save_and_load_round_trip_gives_identical_outputs(tmp_path):
    keras.utils.set_random_seed(1)
    model = ResNeStClassifier.from_preset("resnest_tiny", num_classes=3, dropout=0.1)
    perturb_batch_norm_statistics(model.backbone)
    path = tmp_path / "resnest_tiny.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, ResNeStClassifier) and isinstance(loaded.backbone, ResNeStBackbone)
    x = _images(2, 64)
    before, after = model(x, training=False), loaded(x, training=False)
    for key in ("probabilities", "embedding"):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(after[key]), keras.ops.convert_to_numpy(before[key])
        )


def test_tiny_model_overfits_random_images():
    """A sanity check that gradients reach every stage: 32 random images, 3 random classes.

    Most of the time is TensorFlow tracing the train step; the 40 steps take ~0.1 s each.
    """
    keras.utils.set_random_seed(2)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(32, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 3, size=32)
    model = ResNeStClassifier.from_preset("resnest_tiny", num_classes=3, input_size=32)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss={"probabilities": "sparse_categorical_crossentropy"},
        jit_compile=False,
    )
    # Creating the optimizer's slots up front spares TensorFlow a second trace of the train step.
    model.optimizer.build(model.trainable_variables)
    model.fit(x, {"probabilities": y}, batch_size=32, epochs=40, verbose=0)
    probabilities = keras.ops.convert_to_numpy(model(x, training=False)["probabilities"])
    accuracy = float((probabilities.argmax(axis=1) == y).mean())
    assert accuracy > 0.9, accuracy
