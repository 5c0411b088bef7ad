"""The two-step pipeline (no Django import): image -> YOLOv4 -> boxes -> crops -> ResNeSt.

    images (uint8 RGB, any size)
      -> letterbox to the detector's input, batched across images     (CPU threads)
      -> detector SavedModel -> decode + per-class NMS, boxes back in image pixels
      -> one box per lesion: NMS across classes (a box kept in several detector classes, as
         per-class NMS does for mAP, would otherwise be cropped and graded once per class:
         exact copies with one label and score)
      -> boxes above the operating threshold -> crops with a context margin (CPU threads)
      -> classifier SavedModel, batched across every crop of every image in the batch
      -> per cluster: six class probabilities + embedding; per image: the verdict
         (NILM when nothing is detected, else the highest grade the classifier gives)

Both models are TensorFlow SavedModels as the registry exports them (``saved_model/`` in a
model version's folder; the detector's ``detector.json`` beside it says how to decode). They are
loaded once per process (``load_pipeline`` caches by folder). Decoding images and cutting crops
run in a thread pool (OpenCV releases the GIL) while the accelerator works on the previous
batch. On a GPU the forward passes are XLA-compiled (``jit_compile``; ``PipelineConfig.jit``
forces it either way, which is how the tests run the compiled path on a CPU); the exported graphs
keep the precision they were trained in (mixed precision on a GPU worker; tested to agree with
the float32 export).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from annotation.bethesda import ATYPICAL, BETHESDA


@dataclass
class ClusterResult:
    box: tuple[float, float, float, float]  # x, y, width, height in image pixels
    detector_score: float
    detector_class: str  # the detector's atypical grade
    probabilities: np.ndarray  # (6,) Bethesda order
    embedding: np.ndarray  # (D,) float32

    @property
    def label(self) -> str:
        return BETHESDA[int(np.argmax(self.probabilities))]


@dataclass
class ImageResult:
    clusters: list[ClusterResult] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        """NILM when nothing is detected (or every detected crop is called NILM), else the
        highest grade the classifier calls."""
        grades = [int(np.argmax(c.probabilities)) for c in self.clusters]
        return BETHESDA[max(grades)] if grades else BETHESDA[0]


@dataclass(frozen=True)
class PipelineConfig:
    threshold: float = 0.25  # detector score above which a box is a cluster (the version's chosen one)
    margin: float = 0.25  # context around each box for the classifier's crop
    batch_images: int = 8  # images per detector batch
    batch_crops: int = 64  # crops per classifier batch
    workers: int = 2  # CPU threads for decoding, letterboxing and cropping
    max_clusters: int = 100  # most clusters kept per image (highest detector scores first)
    cluster_iou: float = 0.45  # boxes of any detector classes overlapping above this are one cluster
    jit: bool | None = None  # XLA-compile both forward passes; None: when a GPU is present


class TwoStepPipeline:
    def __init__(self, detector_dir: Path, classifier_dir: Path, config: PipelineConfig = PipelineConfig()) -> None:
        import tensorflow as tf

        self.config = config
        meta = json.loads((Path(detector_dir) / "detector.json").read_text())
        self.det_size = int(meta["input_size"])
        self.anchors = np.asarray(meta["anchors"], dtype=np.float64)
        self.strides = tuple(meta["strides"])
        self.scale_xy = tuple(meta["scale_x_y"]) if meta.get("scale_x_y") else 1.0
        self.num_classes = int(meta["num_classes"])
        detector = tf.saved_model.load(str(detector_dir))
        classifier = tf.saved_model.load(str(classifier_dir))
        spec = classifier.signatures["serving_default"].structured_input_signature[1]
        self.cls_size = int(next(iter(spec.values())).shape[1])
        jit = bool(tf.config.list_physical_devices("GPU")) if config.jit is None else bool(config.jit)
        self.jit = jit

        from training.detection.loss import decode

        anchors, strides, scale_xy = self.anchors, self.strides, self.scale_xy

        @tf.function(jit_compile=jit, reduce_retracing=True)
        def detect(batch):
            heads = detector.serve(tf.cast(batch, tf.float32) / 255.0)
            if isinstance(heads, dict):  # named outputs (head_s8, head_s16, ...): finest stride first
                heads = [heads[k] for k in sorted(heads, key=lambda k: int("".join(filter(str.isdigit, k)) or 0))]
            return decode(list(heads), anchors, strides, scale_xy)

        @tf.function(jit_compile=jit, reduce_retracing=True)
        def classify(batch):
            out = classifier.serve(tf.cast(batch, tf.float32) / 255.0)
            return out["probabilities"], out["embedding"]

        self._detect, self._classify = detect, classify
        self._keep = (detector, classifier)  # the functions close over them

    # --- the steps -----------------------------------------------------------------------------

    def _letterbox(self, image: np.ndarray):
        from training.detection.letterbox import letterbox

        return letterbox(image, self.det_size)

    def detect(self, images: Sequence[np.ndarray], pool: ThreadPoolExecutor | None = None) -> list:
        """Detections (image pixels) above the operating threshold, per image."""
        from training.detection.nms import postprocess

        mapper = pool.map if pool is not None else map
        boxed = list(mapper(self._letterbox, images))
        canvases = np.stack([c for c, _ in boxed])
        boxes, scores = self._detect(canvases)
        found = postprocess(np.asarray(boxes), np.asarray(scores), [info for _, info in boxed],
                            score_threshold=min(self.config.threshold, 0.999),
                            max_detections=self.config.max_clusters * max(self.num_classes, 1))
        return [one_box_per_lesion(d.above(self.config.threshold), self.config.cluster_iou,
                                   self.config.max_clusters) for d in found]

    def _crops(self, item) -> np.ndarray:
        from annotation.crops import crops_for_image
        from annotation.geometry import Box

        image, detections = item
        boxes = [Box(float(x1), float(y1), float(max(x2 - x1, 1e-3)), float(max(y2 - y1, 1e-3)), "NILM")
                 for x1, y1, x2, y2 in np.asarray(detections.boxes).reshape(-1, 4)]
        return crops_for_image(image, boxes, size=self.cls_size, margin=self.config.margin)

    def classify(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(crops) == 0:
            return np.zeros((0, len(BETHESDA)), np.float32), np.zeros((0, 0), np.float32)
        probabilities, embeddings = [], []
        for start in range(0, len(crops), self.config.batch_crops):
            p, e = self._classify(crops[start:start + self.config.batch_crops])
            probabilities.append(np.asarray(p, dtype=np.float32))
            embeddings.append(np.asarray(e, dtype=np.float32))
        return np.concatenate(probabilities), np.concatenate(embeddings)

    def predict(self, images: Sequence[np.ndarray]) -> list[ImageResult]:
        """Both steps for a batch of images (uint8 RGB); one ImageResult per image."""
        with ThreadPoolExecutor(self.config.workers) as pool:
            return self._predict(images, pool)

    def _predict(self, images: Sequence[np.ndarray], pool: ThreadPoolExecutor) -> list[ImageResult]:
        detections = self.detect(images, pool)
        crops = list(pool.map(self._crops, zip(images, detections, strict=True)))
        probabilities, embeddings = self.classify(np.concatenate(crops) if crops else np.zeros((0,)))
        results, at = [], 0
        for found, own in zip(detections, crops, strict=True):
            result = ImageResult()
            for j, (x1, y1, x2, y2) in enumerate(np.asarray(found.boxes).reshape(-1, 4)):
                result.clusters.append(ClusterResult(
                    box=(float(x1), float(y1), float(x2 - x1), float(y2 - y1)),
                    detector_score=float(found.scores[j]),
                    detector_class=ATYPICAL[int(found.classes[j])] if self.num_classes == len(ATYPICAL)
                    else str(int(found.classes[j])),
                    probabilities=probabilities[at + j], embedding=embeddings[at + j]))
            at += len(own)
            results.append(result)
        return results

    def predict_stream(self, load: Callable[[object], np.ndarray], keys: Iterable,
                       progress: Callable[[int], None] | None = None):
        """Yield (key, ImageResult) for every key, loading the next batch's images in threads
        while this batch is on the accelerator."""
        keys = list(keys)
        size = self.config.batch_images
        batches = [keys[i:i + size] for i in range(0, len(keys), size)]
        with ThreadPoolExecutor(1) as reader, ThreadPoolExecutor(self.config.workers) as pool:
            pending = reader.submit(lambda b: [load(k) for k in b], batches[0]) if batches else None
            for n, batch in enumerate(batches):
                images = pending.result()
                if n + 1 < len(batches):
                    pending = reader.submit(lambda b: [load(k) for k in b], batches[n + 1])
                yield from zip(batch, self._predict(images, pool), strict=True)
                if progress:
                    progress(len(batch))


def one_box_per_lesion(detections, iou_threshold: float, max_clusters: int | None = None):
    """NMS across detector classes: of boxes overlapping above ``iou_threshold`` whatever their
    class, the highest-scoring one stays (with its class); at most ``max_clusters``, best first."""
    from training.detection.nms import Detections, nms

    if len(detections) == 0:
        return detections
    boxes, scores, classes = detections.boxes, detections.scores, detections.classes
    # equal scores (float32 ties) are taken left to right, top to bottom: the same on every backend
    order = np.lexsort((classes, boxes[:, 1], boxes[:, 0], -scores))
    keep = order[nms(boxes[order], scores[order], iou_threshold, max_clusters)]
    return Detections(boxes[keep], scores[keep], classes[keep])


_CACHE: dict[tuple, TwoStepPipeline] = {}
_LOCK = threading.Lock()


def load_pipeline(detector_dir: Path, classifier_dir: Path, config: PipelineConfig = PipelineConfig()
                  ) -> TwoStepPipeline:
    """The pipeline for these two model folders, loaded once per process and kept."""
    key = (str(detector_dir), str(classifier_dir), config)
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = TwoStepPipeline(Path(detector_dir), Path(classifier_dir), config)
        return _CACHE[key]
