"""ResNeSt-50 training throughput: images/s at 224 px, batch 16 (the paper's batch size).

Times ``train_on_batch`` on one in-memory batch of random images (SGD with momentum, sparse
categorical cross-entropy on the "probabilities" output, 6 classes), after warm-up steps that
include TensorFlow's tracing; the figure is the batch size over the median step time. Baseline, measured in the same run and the same way:
``keras.applications.ResNet50(weights=None)``. On a GPU, also under the "mixed_float16" policy
(both models), with the card's name in the device field. Figures: var/bench/resnest50_train*.json.
Run: .venv/bin/python -m bench.bench_resnest [--steps N] [--warmup N] [--jit]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "platform"), str(ROOT)]
# training is a Django app: set Django up before importing from it, as its other modules expect.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cytoloop.settings.local")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BATCH = 16
SIZE = 224
CLASSES = 6


def _build(kind: str):
    import keras

    from training.networks.resnest import ResNeStClassifier

    if kind == "resnest50":
        model = ResNeStClassifier.from_preset("resnest50", num_classes=CLASSES, input_size=SIZE)
        loss = {"probabilities": "sparse_categorical_crossentropy"}
    else:
        model = keras.applications.ResNet50(weights=None, input_shape=(SIZE, SIZE, 3), classes=CLASSES)
        loss = "sparse_categorical_crossentropy"
    return model, loss


def _images_per_second(kind: str, *, steps: int, warmup: int, jit: bool) -> float:
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    model, loss = _build(kind)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss=loss, jit_compile=jit)
    model.optimizer.build(model.trainable_variables)  # one trace of the train step, not two
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, SIZE, SIZE, 3)).astype("float32")
    labels = rng.integers(0, CLASSES, size=BATCH)
    y = {"probabilities": labels} if kind == "resnest50" else labels
    start = time.perf_counter()
    for _ in range(warmup):
        model.train_on_batch(x, y)
    first = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)  # a shared machine: one slow step should not move the figure
    rate = BATCH / median
    print(f"  {kind:<10} warm-up {first:6.1f} s ({warmup} step(s), incl. tracing); steps "
          f"{', '.join(f'{t:.2f}' for t in times)} s; median {median:.2f} s -> {rate:.2f} images/s",
          flush=True)
    del model
    keras.backend.clear_session()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="timed steps (3 on CPU, 20 on GPU)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps (1 on CPU, 5 on GPU)")
    parser.add_argument("--jit", action="store_true", help="XLA-compile the train step (default off)")
    args = parser.parse_args()

    import django

    django.setup()
    import keras

    from bench.common import report, tf_device

    device, gpus = tf_device()
    steps = args.steps or (20 if gpus else 3)
    warmup = args.warmup or (5 if gpus else 1)
    print(f"device: {device}; batch {BATCH}, {SIZE} px, {CLASSES} classes, "
          f"{warmup} warm-up + {steps} timed steps, jit_compile={args.jit}")

    policies = ["float32", "mixed_float16"] if gpus else ["float32"]
    for policy in policies:
        keras.mixed_precision.set_global_policy(policy)
        try:
            print(f"policy {policy}:")
            ours = _images_per_second("resnest50", steps=steps, warmup=warmup, jit=args.jit)
            base = _images_per_second("resnet50", steps=steps, warmup=warmup, jit=args.jit)
        finally:
            keras.mixed_precision.set_global_policy("float32")
        suffix = "" if policy == "float32" else f"_{policy}"
        report(
            f"resnest50_train_images_per_s{suffix}",
            value=ours,
            unit="images/s",
            baseline=f"keras.applications.ResNet50 (weights=None), same loop, {policy}",
            baseline_value=base,
            device=device,
            config={"batch": BATCH, "image_size": SIZE, "classes": CLASSES, "steps": steps,
                    "warmup": warmup, "jit_compile": args.jit, "policy": policy,
                    "optimizer": "SGD(0.01, momentum=0.9)"},
        )


if __name__ == "__main__":
    main()
