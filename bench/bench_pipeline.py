"""Two-step inference: ms/image for full-size images through YOLOv4 (608 px) and ResNeSt-50.

The platform's own ``inference.pipeline.TwoStepPipeline`` on exported SavedModels, as a
prediction job runs it: 1636x1088 synthetic Pap smear images (the paper's image size) held as
PNG bytes and decoded inside the timed loop, letterboxed to 608 px for YOLOv4 (5 atypical
classes), boxes decoded and NMS'd, a crop with context per box resized to 224 px for
ResNeSt-50, six probabilities and the embedding per cluster.

* batched: ``predict_stream`` (images decoded in a thread while the previous batch runs,
  ``BATCH`` images per detector call, every crop of the batch through the classifier in
  batches of 64).
* baseline, same run, same models, same images: one image at a time through the detector and
  one crop at a time through the classifier (decode, detect, crop, classify, in sequence).

Weights are untrained (nothing can be downloaded), so the number of clusters per image is
fixed the way a trained detector would give it: the operating threshold is set so that at
least a few hundred candidate boxes per image reach NMS, and the most-confident ``CLUSTERS``
(27, the mean number of cells per CRIC image: 860 in 32) are kept per image. Timing includes
decoding, letterboxing, NMS, cropping and the host<->device copies; tracing/compilation is
done in warm-up. On a GPU (XLA via the pipeline's ``jit_compile``), float32 and, exported
under ``mixed_float16``, half precision, with the card's name in the device field. The paper
reports 122.2 ms/image for its two-step pipeline on an RTX 2070 Super; printed beside ours.
Figure: var/bench/pipeline_ms_per_image*.json.
Run: .venv/bin/python -m bench.bench_pipeline [--images N] [--batch N]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "platform")]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

CLUSTERS = 27  # mean cells per CRIC image (860 / 32)
CANDIDATES = 300  # candidate boxes per image that reach NMS, at least
PAPER_MS = 122.2  # the paper's two-step pipeline, RTX 2070 Super


def _images(n: int) -> list[bytes]:
    import cv2

    from annotation.synthetic import SyntheticConfig, generate_image

    out = []
    for i in range(n):
        image = generate_image(1000 + i, SyntheticConfig()).image
        ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        assert ok
        out.append(png.tobytes())
    return out


def _decode(data: bytes) -> np.ndarray:
    import cv2

    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _calibrate_batch_norm(model, images: np.ndarray) -> None:
    """Set every BatchNormalization's moving statistics to those of one batch, as training
    would: untrained, the moving statistics (0, 1) let activations grow through YOLOv4's 110
    convolutions until every score saturates at 1 and boxes span millions of pixels."""
    import keras

    layers = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    kept = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    try:
        model(images, training=True)
    finally:
        for layer, momentum in zip(layers, kept, strict=True):
            layer.momentum = momentum


def _export(base: Path, policy: str, calibration: np.ndarray) -> tuple[Path, Path]:
    import keras

    from training.classifier.trainer import export_saved_model
    from training.detector.trainer import export_detector_saved_model, init_head_outputs
    from training.networks.resnest import ResNeStClassifier
    from training.networks.yolov4 import build_detector

    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        detector = build_detector("yolov4", num_classes=5, input_size=608)
        _calibrate_batch_norm(detector, calibration)
        init_head_outputs(detector)  # as training starts: boxes at their anchors, low objectness
        detector.save(base / "detector.keras")
        export_detector_saved_model(base / "detector.keras", base / "detector")
        ResNeStClassifier.from_preset("resnest50", input_size=224).save(base / "classifier.keras")
        export_saved_model(base / "classifier.keras", base / "classifier")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return base / "detector", base / "classifier"


def _letterbox_608(image: np.ndarray) -> np.ndarray:
    from training.detection.letterbox import letterbox

    return letterbox(image, 608)[0]


def _operating_threshold(pipeline, images: list[np.ndarray]) -> float:
    """The score above which every image has at least CANDIDATES boxes before NMS."""
    canvases = np.stack([pipeline._letterbox(image)[0] for image in images])
    _, scores = pipeline._detect(canvases)
    best = np.sort(np.asarray(scores, np.float64).max(axis=-1), axis=1)[:, ::-1]
    return float(best[:, CANDIDATES - 1].min())


def _one_at_a_time(pipeline, blobs: list[bytes]) -> int:
    crops_done = 0
    for data in blobs:
        image = _decode(data)
        found = pipeline.detect([image])[0]
        for crop in pipeline._crops((image, found)):
            pipeline.classify(crop[None])
            crops_done += 1
    return crops_done


def _batched(pipeline, blobs: list[bytes]) -> int:
    return sum(len(r.clusters) for _, r in pipeline.predict_stream(lambda i: _decode(blobs[i]), range(len(blobs))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=None, help="timed images per path (CPU 8, GPU 64)")
    parser.add_argument("--batch", type=int, default=None, help="images per detector batch (CPU 4, GPU 16)")
    args = parser.parse_args()


    from bench.common import report, tf_device
    from inference.pipeline import PipelineConfig, TwoStepPipeline

    device, gpus = tf_device()
    n_images = args.images or (64 if gpus else 8)
    batch = args.batch or (16 if gpus else 4)
    n_baseline = max(2, n_images // 2) if not gpus else n_images
    blobs = _images(n_images)
    print(f"device: {device}; {n_images} images 1636x1088 (PNG in memory), YOLOv4 608 px + "
          f"ResNeSt-50 224 px, {CLUSTERS} clusters/image, detector batch {batch}; baseline on "
          f"{n_baseline} images", flush=True)

    for policy in (["float32", "mixed_float16"] if gpus else ["float32"]):
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            calibration = np.stack([_letterbox_608(_decode(b)) for b in blobs[:2]]).astype(np.float32) / 255.0
            with contextlib.redirect_stdout(io.StringIO()):  # Keras prints every exported signature
                detector_dir, classifier_dir = _export(Path(tmp), policy, calibration)
            print(f"policy {policy}: exported both SavedModels in {time.perf_counter() - started:.0f} s", flush=True)
            config = PipelineConfig(threshold=0.0, max_clusters=CLUSTERS, batch_images=batch, batch_crops=64)
            pipeline = TwoStepPipeline(detector_dir, classifier_dir, config)
            threshold = _operating_threshold(pipeline, [_decode(b) for b in blobs[:batch]])
            pipeline.config = replace(config, threshold=threshold)

            # Warm-up: trace every shape the timed runs use (detector batch sizes 1 and
            # `batch`, classifier batch sizes 1, 64 and the remainders).
            _batched(pipeline, blobs[:batch])
            _batched(pipeline, blobs[:n_images % batch] if n_images % batch else blobs[:1])
            _one_at_a_time(pipeline, blobs[:1])

            started = time.perf_counter()
            crops_batched = _batched(pipeline, blobs)
            batched_ms = (time.perf_counter() - started) * 1e3 / n_images
            print(f"  batched: {batched_ms:8.1f} ms/image ({crops_batched / n_images:.1f} clusters/image)", flush=True)
            started = time.perf_counter()
            crops_single = _one_at_a_time(pipeline, blobs[:n_baseline])
            single_ms = (time.perf_counter() - started) * 1e3 / n_baseline
            print(f"  one image, one crop at a time: {single_ms:8.1f} ms/image "
                  f"({crops_single / n_baseline:.1f} clusters/image)", flush=True)
            if crops_batched != CLUSTERS * n_images or crops_single != CLUSTERS * n_baseline:
                raise SystemExit(f"expected {CLUSTERS} clusters per image, got {crops_batched} "
                                 f"batched and {crops_single} one at a time")
            print(f"  reference (paper): two-step pipeline on an RTX 2070 Super, {PAPER_MS} ms/image")
            report(
                "pipeline_ms_per_image" + ("" if policy == "float32" else f"_{policy}"),
                value=batched_ms,
                unit="ms/image",
                baseline="same pipeline, one image at a time, one crop at a time",
                baseline_value=single_ms,
                higher_is_better=False,
                device=device,
                config={"images": n_images, "baseline_images": n_baseline, "image_size": [1636, 1088],
                        "detector": "yolov4", "detector_input": 608, "classifier": "resnest50",
                        "classifier_input": 224, "clusters_per_image": CLUSTERS,
                        "detector_batch": batch, "classifier_batch": 64, "policy": policy,
                        "jit_compile": bool(gpus), "operating_threshold": threshold,
                        "paper_ms_per_image": PAPER_MS},
            )
            del pipeline


if __name__ == "__main__":
    main()
