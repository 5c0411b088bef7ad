"""YOLOv4 inference: ms/image at 608 px, batch 1 and batch 4 (80 classes, the published network).

Times the forward pass ``model(images, training=False)`` wrapped in one ``tf.function`` per
batch size (XLA-compiled, ``jit_compile=True``, when a GPU is present), on in-memory random
images in [0, 1], after warm-up calls that include tracing/compilation; the figure is the median
call time over the batch size. Raw head outputs only: box decoding and NMS are not included.
Baseline, measured in the same run and the same way: ``keras.applications.ResNet101
(weights=None, include_top=False)`` at 608 px, a stock Keras network of similar compute (about
57 against YOLOv4's 64 multiply-add GMACs per image, both printed), so the ratio says how well
our graph runs next to a reference Keras graph, not which detector is faster. YOLOv4-tiny is
timed too, for information. On a GPU also under "mixed_float16" (all models), with the card's
name in the device field. The issue cites 47.8 ms/image for YOLOv4 at 608 px on an RTX 2070
Super; it is printed beside ours and kept in the JSON's config.
Figures: var/bench/yolov4_infer_ms_per_image_b*.json.
Run: .venv/bin/python -m bench.bench_yolov4 [--steps N] [--warmup N] [--batch N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SIZE = 608
CLASSES = 80
REFERENCE_MS = 47.8  # the figure: YOLOv4, 608 px, RTX 2070 Super (Darknet)


def _build(kind: str):
    import keras

    from training.networks.yolov4 import build_detector

    if kind == "yolov4":
        return build_detector("yolov4", num_classes=CLASSES, input_size=SIZE)
    if kind == "yolov4_tiny":
        return build_detector("yolov4_tiny", num_classes=CLASSES, input_size=SIZE)
    return keras.applications.ResNet101(weights=None, include_top=False, input_shape=(SIZE, SIZE, 3))


def _gmacs(model) -> float:
    """Multiply-adds of the convolutions and dense layers for one image, in billions."""
    import keras

    total = 0
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            _, h, w, _ = layer.output.shape
            total += h * w * kh * kw * cin * cout
        elif isinstance(layer, keras.layers.Dense):
            total += layer.kernel.shape[0] * layer.kernel.shape[1]
    return total / 1e9


def _ms_per_image(model, batch: int, *, steps: int, warmup: int, jit: bool) -> tuple[float, list]:
    import numpy as np
    import tensorflow as tf

    infer = tf.function(lambda x: model(x, training=False), jit_compile=jit)
    x = tf.constant(np.random.default_rng(0).uniform(size=(batch, SIZE, SIZE, 3)).astype("float32"))

    def run():
        outputs = infer(x)
        for o in tf.nest.flatten(outputs):  # wait for the device, not just the dispatch
            o.numpy()

    for _ in range(warmup):
        run()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    # A shared machine: one slow call should not move the figure.
    return statistics.median(times) * 1e3 / batch, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="timed calls per batch size (CPU 3, GPU 30)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up calls (CPU 1, GPU 5)")
    parser.add_argument("--batch", type=int, default=4, help="the batched figure's batch size")
    args = parser.parse_args()

    import keras

    from bench.common import report, tf_device

    device, gpus = tf_device()
    steps = args.steps or (30 if gpus else 3)
    warmup = args.warmup or (5 if gpus else 1)
    jit = bool(gpus)
    batches = (1, args.batch)
    print(f"device: {device}; {SIZE} px, {CLASSES} classes, batches {batches}, "
          f"{warmup} warm-up + {steps} timed calls, jit_compile={jit}")

    for policy in (["float32", "mixed_float16"] if gpus else ["float32"]):
        keras.mixed_precision.set_global_policy(policy)
        results: dict[str, dict[int, float]] = {}
        info: dict[str, tuple[int, float]] = {}
        try:
            print(f"policy {policy}:")
            for kind in ("yolov4", "resnet101", "yolov4_tiny"):
                keras.utils.set_random_seed(0)
                model = _build(kind)
                info[kind] = (model.count_params(), _gmacs(model))
                results[kind] = {}
                for batch in batches:
                    ms, times = _ms_per_image(model, batch, steps=steps, warmup=warmup, jit=jit)
                    results[kind][batch] = ms
                    print(f"  {kind:<11} {info[kind][0] / 1e6:5.1f} M params {info[kind][1]:6.1f} GMACs"
                          f"  batch {batch}: calls {', '.join(f'{t:.3f}' for t in times)} s"
                          f" -> {ms:8.1f} ms/image", flush=True)
                del model
                keras.backend.clear_session()
        finally:
            keras.mixed_precision.set_global_policy("float32")
        print(f"  reference (issue): YOLOv4 608 px on an RTX 2070 Super, {REFERENCE_MS} ms/image")
        suffix = "" if policy == "float32" else f"_{policy}"
        for batch in batches:
            report(
                f"yolov4_infer_ms_per_image_b{batch}{suffix}",
                value=results["yolov4"][batch],
                unit="ms/image",
                baseline=f"keras.applications.ResNet101 (weights=None, include_top=False), "
                         f"{SIZE} px, same loop, {policy}",
                baseline_value=results["resnet101"][batch],
                higher_is_better=False,
                device=device,
                config={"batch": batch, "image_size": SIZE, "classes": CLASSES, "steps": steps,
                        "warmup": warmup, "jit_compile": jit, "policy": policy,
                        "yolov4_params": info["yolov4"][0], "yolov4_gmacs": info["yolov4"][1],
                        "baseline_params": info["resnet101"][0],
                        "baseline_gmacs": info["resnet101"][1],
                        "yolov4_tiny_ms_per_image": results["yolov4_tiny"][batch],
                        "yolov4_tiny_gmacs": info["yolov4_tiny"][1],
                        "reference_ms_per_image": REFERENCE_MS,
                        "reference": "YOLOv4 608 px, RTX 2070 Super, as cited in the issue"},
            )


if __name__ == "__main__":
    main()
