"""The two-step pipeline on real exported SavedModels (test-size YOLOv4, tiny ResNeSt; untrained
weights: these tests are about the plumbing, not accuracy)."""

import numpy as np
import pytest

from annotation.bethesda import BETHESDA
from inference.pipeline import (
    ClusterResult,
    ImageResult,
    PipelineConfig,
    TwoStepPipeline,
    load_pipeline,
)


def export_tiny_models(base, policy: str = "float32"):
    """A test-size YOLOv4 and a tiny ResNeSt (seed 1) exported as SavedModels under ``policy``."""
    import keras

    from training.classifier.trainer import export_saved_model
    from training.detector.trainer import export_detector_saved_model
    from training.networks.resnest import ResNeStClassifier
    from training.networks.yolov4 import build_detector

    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(1)
        detector = build_detector("yolov4_test", num_classes=5)
        detector.save(base / "detector.keras")
        export_detector_saved_model(base / "detector.keras", base / "detector")
        classifier = ResNeStClassifier.from_preset("resnest_tiny", input_size=32)
        classifier.save(base / "classifier.keras")
        export_saved_model(base / "classifier.keras", base / "classifier")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return base / "detector", base / "classifier"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return export_tiny_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, size=shape, dtype=np.uint8) for shape in [(150, 200, 3), (128, 128, 3), (90, 300, 3)]]


def test_every_image_gets_clusters_with_probabilities_embeddings_and_boxes_inside_it(exported, images):
    pipeline = TwoStepPipeline(*exported, PipelineConfig(threshold=0.0, batch_crops=16))
    results = pipeline.predict(images)
    assert len(results) == 3
    assert sum(len(r.clusters) for r in results) > 0  # threshold 0: an untrained detector finds things
    for image, result in zip(images, results, strict=True):
        height, width = image.shape[:2]
        for c in result.clusters:
            x, y, w, h = c.box
            assert 0 <= x and 0 <= y and x + w <= width + 1e-3 and y + h <= height + 1e-3 and w > 0 and h > 0
            assert c.probabilities.shape == (6,) and abs(float(c.probabilities.sum()) - 1) < 1e-4
            assert c.embedding.ndim == 1 and c.embedding.size > 0
            assert c.detector_class in BETHESDA[1:]
        assert result.verdict == (max((c.label for c in result.clusters), key=BETHESDA.index)
                                  if result.clusters else "NILM")


def test_batching_across_images_gives_the_same_result_as_one_by_one(exported, images):
    pipeline = TwoStepPipeline(*exported, PipelineConfig(threshold=0.0))
    together = pipeline.predict(images)
    alone = [pipeline.predict([image])[0] for image in images]
    for a, b in zip(together, alone, strict=True):
        assert len(a.clusters) == len(b.clusters)
        for ca, cb in zip(a.clusters, b.clusters, strict=True):
            np.testing.assert_allclose(ca.box, cb.box, atol=1e-2)
            np.testing.assert_allclose(ca.probabilities, cb.probabilities, atol=1e-4)


def test_max_clusters_keeps_the_highest_scoring_detections_per_image(exported, images):
    everything = TwoStepPipeline(*exported, PipelineConfig(threshold=0.0, max_clusters=100)).predict(images)
    capped = TwoStepPipeline(*exported, PipelineConfig(threshold=0.0, max_clusters=3)).predict(images)
    for full, few in zip(everything, capped, strict=True):
        assert len(full.clusters) > 3
        assert len(few.clusters) == 3
        top = sorted((c.detector_score for c in full.clusters), reverse=True)[:3]
        np.testing.assert_allclose(sorted((c.detector_score for c in few.clusters), reverse=True), top, atol=1e-6)


def test_a_threshold_above_every_score_means_nothing_detected_and_nilm(exported, images):
    pipeline = TwoStepPipeline(*exported, PipelineConfig(threshold=1.0))
    assert all(r.clusters == [] and r.verdict == "NILM" for r in pipeline.predict(images))


def test_streaming_keeps_keys_and_order_and_reports_progress(exported, images):
    pipeline = TwoStepPipeline(*exported, PipelineConfig(threshold=0.0, batch_images=2))
    done = []
    out = list(pipeline.predict_stream(lambda i: images[i], [2, 0, 1], progress=done.append))
    assert [key for key, _ in out] == [2, 0, 1] and done == [2, 1]
    direct = pipeline.predict([images[2]])[0]
    assert len(out[0][1].clusters) == len(direct.clusters)


def test_models_are_loaded_once_per_process(exported):
    config = PipelineConfig(threshold=0.5)
    assert load_pipeline(*exported, config) is load_pipeline(*exported, config)


def test_verdict_is_the_highest_grade_called():
    def c(label):
        p = np.full(6, 0.01)
        p[BETHESDA.index(label)] = 0.95
        return ClusterResult((0, 0, 1, 1), 0.9, "HSIL", p, np.zeros(2, np.float32))

    assert ImageResult([c("LSIL"), c("HSIL"), c("ASC-US")]).verdict == "HSIL"
    assert ImageResult([c("NILM")]).verdict == "NILM" and ImageResult([]).verdict == "NILM"


def test_the_xla_compiled_pipeline_gives_the_same_results(exported, images):
    # What a GPU worker runs (jit_compile), here on the CPU's XLA backend.
    plain = TwoStepPipeline(*exported, PipelineConfig(threshold=0.0, jit=False)).predict(images)
    compiled_pipeline = TwoStepPipeline(*exported, PipelineConfig(threshold=0.0, jit=True))
    assert compiled_pipeline.jit
    compiled = compiled_pipeline.predict(images)
    for a, b in zip(plain, compiled, strict=True):
        assert len(a.clusters) == len(b.clusters) > 0
        for ca, cb in zip(a.clusters, b.clusters, strict=True):
            np.testing.assert_allclose(ca.box, cb.box, atol=1e-2)
            np.testing.assert_allclose(ca.probabilities, cb.probabilities, atol=1e-4)


def test_models_exported_under_mixed_precision_run_in_the_pipeline(exported, images, tmp_path):
    # A GPU worker trains (and so exports) under mixed_float16: same weights, half-precision
    # activations; the pipeline must read them and agree with the float32 export.
    half_dirs = export_tiny_models(tmp_path, "mixed_float16")
    half = TwoStepPipeline(*half_dirs, PipelineConfig(threshold=0.0, max_clusters=5))
    full = TwoStepPipeline(*exported, PipelineConfig(threshold=0.0, max_clusters=5))
    for a, b in zip(half.predict(images), full.predict(images), strict=True):
        # half precision may reorder near-equal boxes in NMS; the best ones must agree
        assert a.clusters and b.clusters
        assert max(c.detector_score for c in a.clusters) == pytest.approx(
            max(c.detector_score for c in b.clusters), abs=2e-2)
    crops = np.random.default_rng(0).integers(0, 255, size=(6, 32, 32, 3), dtype=np.uint8)
    p_half, e_half = half.classify(crops)
    p_full, e_full = full.classify(crops)
    assert p_half.dtype == np.float32 and np.isfinite(e_half).all()
    np.testing.assert_allclose(p_half.sum(axis=1), 1.0, atol=1e-3)
    np.testing.assert_allclose(p_half, p_full, atol=2e-2)


def overlapping_same_label_pairs(clusters, iou_above: float = 0.9) -> list[tuple[int, int, float]]:
    """Pairs of clusters of one image with one label whose boxes overlap at IoU > ``iou_above``."""
    from training.detection.boxes import box_iou, xywh_to_xyxy

    pairs = []
    boxes = xywh_to_xyxy(np.asarray([c.box for c in clusters], dtype=np.float64).reshape(-1, 4))
    iou = box_iou(boxes, boxes) if len(clusters) else np.zeros((0, 0))
    for i in range(len(clusters)):
        for j in range(i + 1, len(clusters)):
            if clusters[i].label == clusters[j].label and iou[i, j] > iou_above:
                pairs.append((i, j, float(iou[i, j])))
    return pairs


def test_one_lesion_found_in_several_detector_classes_is_one_cluster(exported, images):
    # Per-class NMS keeps a box once per detector class it scores in (right for mAP); the classifier
    # then grades the same crop twice, so each copy came out with the same box, label and score.
    results = TwoStepPipeline(*exported, PipelineConfig(threshold=0.0)).predict(images)
    assert sum(len(r.clusters) for r in results) > 3
    for result in results:
        assert overlapping_same_label_pairs(result.clusters) == []
