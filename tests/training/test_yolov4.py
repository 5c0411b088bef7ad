"""YOLOv4 in Keras 3: Darknet's parameter counts, the output contract, layers, serialisation.

The full-size presets are built once per (preset, classes) for this module, only to count
parameters and read output shapes symbolically; forward passes run on the "yolov4_test" preset
(128 px, 1/8 widths) or at 64 px.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from tests.training.conftest import assert_config_round_trip, perturb_batch_norm_statistics  # noqa: E402
from training.networks.yolov4 import (  # noqa: E402
    PRESETS,
    CSPDarknet53,
    CSPDarknet53Tiny,
    Mish,
    RouteGroup,
    YoloPreset,
    YOLOV4Detector,
    apply_spp,
    build_detector,
    darknet_conv,
    get_preset,
)

ROOT = Path(__file__).resolve().parents[2]

# Darknet's own count for cfg/yolov4.cfg and cfg/yolov4-tiny.cfg with 80 classes: conv kernels,
# plus gamma and beta of batch-normalised convs, plus the bias of the linear head convs.
DARKNET_PARAMS = {"yolov4": 64_363_101, "yolov4_tiny": 6_056_606}
# Input channels of each head's linear 1x1 convolution (its 3x3 convolution's width).
HEAD_INPUTS = {"yolov4": (256, 512, 1024), "yolov4_tiny": (256, 512)}


def _n(weights) -> int:
    return sum(int(np.prod(w.shape)) for w in weights)


def _np(x) -> np.ndarray:
    return keras.ops.convert_to_numpy(x)


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(size=(n, size, size, 3)).astype("float32")


@pytest.fixture(scope="module")
def full_size(build_once):
    """Each (preset, num_classes) at its own input size, built at most once for this module."""

    def get(name: str, num_classes: int = 80) -> YOLOV4Detector:
        return build_once((name, num_classes), lambda: build_detector(name, num_classes))

    return get


@pytest.fixture(scope="module")
def yolov4_test_detector():
    keras.utils.set_random_seed(0)
    return build_detector("yolov4_test", num_classes=3)


# --- parameter counts and output shapes of the published networks ---------------------------


@pytest.mark.parametrize("name", sorted(DARKNET_PARAMS))
def test_trainable_parameters_match_darknet_with_80_classes(full_size, name):
    trainable = _n(full_size(name).trainable_weights)
    assert trainable == DARKNET_PARAMS[name], f"{name}: {trainable:,} != {DARKNET_PARAMS[name]:,}"


@pytest.mark.parametrize("name", sorted(DARKNET_PARAMS))
def test_parameter_count_follows_the_class_count(full_size, name):
    """Only the linear head convs depend on C: 3 * (5 + C) filters, each a kernel plus a bias."""
    delta = _n(full_size(name, 5).trainable_weights) - _n(full_size(name).trainable_weights)
    assert delta == sum(c + 1 for c in HEAD_INPUTS[name]) * 3 * (5 - 80)


def test_only_batch_norm_statistics_are_non_trainable(full_size):
    model = full_size("yolov4")
    assert all("moving_" in w.path for w in model.non_trainable_weights)
    assert model.count_params() - _n(model.trainable_weights) == _n(model.non_trainable_weights)


@pytest.mark.parametrize(
    "name, shapes",
    [
        ("yolov4", [(None, 76, 76, 3, 85), (None, 38, 38, 3, 85), (None, 19, 19, 3, 85)]),
        ("yolov4_tiny", [(None, 26, 26, 3, 85), (None, 13, 13, 3, 85)]),
    ],
)
def test_full_size_output_shapes_at_the_preset_size(full_size, name, shapes):
    model = full_size(name)
    assert model.input_shape == (None, get_preset(name).input_size, get_preset(name).input_size, 3)
    assert [tuple(s) for s in model.output_shape] == shapes


@pytest.mark.parametrize("name", ["yolov4", "yolov4_tiny", "yolov4_test"])
def test_forward_pass_gives_one_raw_tensor_per_stride_finest_first(name):
    keras.utils.set_random_seed(0)
    model = build_detector(name, num_classes=2, input_size=64)
    outputs = model(_images(2, 64), training=False)
    preset = get_preset(name)
    assert isinstance(outputs, list)
    assert [tuple(o.shape) for o in outputs] == [(2, 64 // s, 64 // s, 3, 7) for s in preset.strides]
    assert model.output_names == [f"head_s{s}" for s in preset.strides]
    assert all(keras.backend.standardize_dtype(o.dtype) == "float32" for o in outputs)
    assert all(np.isfinite(_np(o)).all() for o in outputs)


def test_test_preset_runs_at_128_px(yolov4_test_detector):
    outputs = yolov4_test_detector(_images(1, 128), training=False)
    assert [tuple(o.shape) for o in outputs] == [(1, 16, 16, 3, 8), (1, 8, 8, 3, 8), (1, 4, 4, 3, 8)]


def test_head_keeps_darknets_channel_order_anchor_by_anchor(yolov4_test_detector):
    """Channel a * (5 + C) + k of the linear conv is output[..., a, k]: [tx, ty, tw, th, obj, cls]."""
    raw = keras.Model(yolov4_test_detector.input, yolov4_test_detector.get_layer("head_s16_output").output)
    x = _images(1, 128, seed=3)
    flat, shaped = _np(raw(x, training=False)), _np(yolov4_test_detector(x, training=False)[1])
    np.testing.assert_array_equal(shaped, flat.reshape(1, 8, 8, 3, 8))
    np.testing.assert_array_equal(shaped[..., 2, 4], flat[..., 2 * 8 + 4])


def test_head_convs_are_linear_with_a_bias_and_the_rest_batch_normalised(full_size):
    model = full_size("yolov4_tiny")
    convs = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.Conv2D)]
    linear = [c.name for c in convs if c.use_bias]
    assert sorted(linear) == ["head_s16_output", "head_s32_output"]
    assert len(convs) == 21  # cfg/yolov4-tiny.cfg has 21 [convolutional] sections
    assert all(model.get_layer(n).filters == 255 for n in linear)


def test_yolov4_has_darknets_110_convolutions(full_size):
    convs = [layer for layer in full_size("yolov4")._flatten_layers()
             if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 110 and sum(c.use_bias for c in convs) == 3


def test_gradients_reach_every_trainable_weight(yolov4_test_detector):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        outputs = yolov4_test_detector(_images(2, 128), training=True)
        loss = sum(tf.reduce_mean(tf.square(o)) for o in outputs)
    grads = tape.gradient(loss, yolov4_test_detector.trainable_weights)
    assert all(g is not None and np.isfinite(_np(g)).all() for g in grads)


def test_mixed_precision_computes_in_float16_and_returns_float32():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_detector("yolov4_test", num_classes=2)
        outputs = model(_images(1, 128), training=False)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    conv = model.backbone.get_layer("stage3_down")
    assert conv.compute_dtype == "float16" and conv.variable_dtype == "float32"
    assert all(keras.backend.standardize_dtype(o.dtype) == "float32" for o in outputs)
    assert all(np.isfinite(_np(o)).all() for o in outputs)


# --- layers ---------------------------------------------------------------------------------


def test_mish_values():
    x = np.array([-30.0, -5.0, -1.1924, -1.0, 0.0, 1.0, 2.0, 5.0, 30.0], "float32")
    expected = x * np.tanh(np.log1p(np.exp(x.astype("float64"))))
    actual = _np(Mish()(x))
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(actual[[3, 4, 5]], [-0.3034015, 0.0, 0.8650984], atol=1e-6)
    assert actual[2] == pytest.approx(-0.30884, abs=1e-5)  # its minimum


def test_mish_is_finite_for_large_inputs_in_float16():
    x = np.array([-60000.0, -20.0, 20.0, 60000.0], "float16")
    out = _np(Mish(dtype="float16")(x))
    assert np.isfinite(out).all() and out[-1] == np.float16(60000.0)


def test_route_group_passes_the_second_half_of_the_channels():
    x = np.arange(2 * 3 * 3 * 8, dtype="float32").reshape(2, 3, 3, 8)
    np.testing.assert_array_equal(_np(RouteGroup(groups=2, group_id=1)(x)), x[..., 4:])
    np.testing.assert_array_equal(_np(RouteGroup(groups=4, group_id=0)(x)), x[..., :2])


def test_route_group_rejects_channels_that_do_not_split_evenly():
    with pytest.raises(ValueError, match="equal groups"):
        RouteGroup(groups=2, group_id=1)(np.zeros((1, 2, 2, 3), "float32"))


def test_stride_two_conv_samples_like_darknet():
    """Darknet pads 1 on every side; outputs read rows/columns 2i-1 .. 2i+1 of the input."""
    x = _images(1, 8, seed=5)
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, darknet_conv(inputs, 4, 3, strides=2, activation="linear",
                                             batch_normalize=False, name="c"))
    conv = model.get_layer("c")
    reference = keras.ops.conv(np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))), conv.kernel, strides=2)
    reference = _np(reference) + _np(conv.bias)
    actual = _np(model(x))
    assert actual.shape == (1, 4, 4, 4)
    np.testing.assert_allclose(actual, reference, rtol=1e-5, atol=1e-5)


def test_spp_concatenates_pool13_pool9_pool5_and_its_input():
    x = _images(1, 16, seed=6)[..., :2]
    inputs = keras.Input((16, 16, 2))
    out = _np(keras.Model(inputs, apply_spp(inputs))(x))
    assert out.shape == (1, 16, 16, 8)
    np.testing.assert_array_equal(out[..., 6:], x)
    np.testing.assert_array_equal(out[..., 4:6], _np(keras.ops.max_pool(x, 5, 1, "same")))
    np.testing.assert_array_equal(out[..., 0:2], _np(keras.ops.max_pool(x, 13, 1, "same")))


def test_backbones_return_their_pyramids():
    csp = CSPDarknet53(0.125, (1, 1, 1, 1, 1), image_shape=(64, 64, 3))
    tiny = CSPDarknet53Tiny(image_shape=(64, 64, 3))
    assert [tuple(s) for s in csp.output_shape] == [(None, 8, 8, 32), (None, 4, 4, 64), (None, 2, 2, 128)]
    assert [tuple(s) for s in tiny.output_shape] == [(None, 4, 4, 256), (None, 2, 2, 512)]
    assert tiny.feature_channels == (256, 512)


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: Mish(), (1, 4)),
        (lambda: RouteGroup(groups=4, group_id=2), (1, 2, 2, 8)),
        (lambda: CSPDarknet53(0.125, (1, 2, 1, 1, 1), image_shape=(64, 64, 3)), None),
        (lambda: CSPDarknet53Tiny(0.25, image_shape=(64, 64, 3), bn_epsilon=1e-3), None),
        (lambda: build_detector("yolov4_test", num_classes=4), None),
        (lambda: YOLOV4Detector("yolov4_tiny", num_classes=2, input_size=64, width_multiplier=0.25),
         None),
    ],
    ids=["mish", "route_group", "csp_darknet53", "tiny_backbone", "detector", "tiny_detector"],
)
def test_get_config_from_config_round_trip(make, shape):
    assert_config_round_trip(make(), shape)


def test_save_and_load_round_trip_gives_identical_outputs(tmp_path):
    keras.utils.set_random_seed(1)
    model = build_detector("yolov4_test", num_classes=3)
    perturb_batch_norm_statistics(model)
    path = tmp_path / "yolov4_test.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, YOLOV4Detector) and isinstance(loaded.backbone, CSPDarknet53)
    assert loaded.anchors == model.anchors and loaded.scale_x_y == [1.2, 1.1, 1.05]
    x = _images(2, 128)
    for before, after in zip(model(x, training=False), loaded(x, training=False), strict=True):
        np.testing.assert_array_equal(_np(after), _np(before))


# --- presets --------------------------------------------------------------------------------


def test_yolov4_preset_has_darknets_anchors_masks_and_scale_x_y():
    preset = get_preset("yolov4")
    assert preset.input_size == 608 and preset.strides == (8, 16, 32)
    np.testing.assert_array_equal(preset.anchor_array, np.array(
        [[[12, 16], [19, 36], [40, 28]], [[36, 75], [76, 55], [72, 146]],
         [[142, 110], [192, 243], [459, 401]]], "float32"))
    assert preset.scale_x_y == (1.2, 1.1, 1.05)


def test_tiny_preset_uses_the_cfgs_masks_1_2_3_and_3_4_5():
    preset = get_preset("yolov4-tiny")
    assert preset is PRESETS["yolov4_tiny"]
    assert preset.input_size == 416 and preset.strides == (16, 32)
    np.testing.assert_array_equal(preset.anchor_array, np.array(
        [[[23, 27], [37, 58], [81, 82]], [[81, 82], [135, 169], [344, 319]]], "float32"))
    assert preset.anchor_array.shape == (2, 3, 2) and preset.scale_x_y == (1.05, 1.05)


def test_test_preset_is_small_and_its_anchors_are_yolov4s_at_128_px():
    preset = get_preset("yolov4_test")
    assert preset.input_size == 128 and preset.grid_sizes() == (16, 8, 4)
    np.testing.assert_allclose(preset.anchor_array, get_preset("yolov4").anchors_at(128), rtol=1e-6)


def test_built_detector_carries_its_presets_anchors():
    model = build_detector("yolov4_test", num_classes=1, input_size=64)
    np.testing.assert_allclose(np.array(model.anchors), get_preset("yolov4_test").anchor_array)
    assert model.strides == (8, 16, 32) and model.input_size == 64


def test_preset_round_trips_through_json():
    preset = get_preset("yolov4_tiny")
    assert YoloPreset.from_dict(json.loads(json.dumps(preset.to_dict()))) == preset


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(KeyError, match="yolov4_tiny"):
        get_preset("yolov5")


def test_input_size_must_be_a_multiple_of_32():
    with pytest.raises(ValueError, match="multiple of 32"):
        build_detector("yolov4_test", num_classes=1, input_size=100)


def test_yolov4_package_imports_no_django():
    """Pure Keras: nothing under training/networks/yolov4 imports Django or the Django app."""
    for path in sorted((ROOT / "training" / "networks" / "yolov4").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                assert not [n for n in names if n.split(".")[0] == "django"
                            or (n.startswith("training") and not n.startswith("training.networks"))], path
