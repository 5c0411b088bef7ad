"""Writes for inference: prediction jobs (two-step pipeline over a dataset) and ranking rounds
(active learning: which images the experts see next)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import IntegrityError, transaction

from annotation import labelstudio
from annotation.bethesda import BETHESDA
from annotation.imaging import read_pixels
from annotation.models import Dataset, Image, PredictionBox
from cytoloop.jobs import beat, enqueue_on_commit, mark_finished, mark_running
from inference.models import (
    ClusterPrediction,
    ImagePrediction,
    PredictionJob,
    RankedCluster,
    RankedImage,
    RankingRound,
)
from inference.pipeline import PipelineConfig, load_pipeline
from inference.strategies import StrategyRefused, UnknownStrategy, round_strategy
from inference.uncertainty import Predictions, select, select_diverse
from training.models import ModelKind, ModelVersion
from training.selectors import promoted_versions

log = logging.getLogger(__name__)


class InferenceRefused(Exception):
    """An inference action that cannot be done (the message says why)."""


def promoted_pair() -> tuple[ModelVersion, ModelVersion]:
    """The promoted detector and classifier, or a refusal naming what is missing."""
    found = promoted_versions()
    missing = [kind for kind in (ModelKind.DETECTOR, ModelKind.CLASSIFIER) if kind not in found]
    if missing:
        raise InferenceRefused(
            f"no promoted {' or '.join(missing)}: train one and promote it on the Training page first")
    return found[ModelKind.DETECTOR], found[ModelKind.CLASSIFIER]


def operating_threshold(detector: ModelVersion) -> float:
    """The detector version's threshold chosen on validation (recall first); 0.25 if none."""
    chosen = (detector.metrics or {}).get("threshold") or {}
    value = chosen.get("threshold") if isinstance(chosen, dict) else None
    return float(value) if value is not None else 0.25


def artifact_path(version: ModelVersion) -> Path:
    return Path(settings.MEDIA_ROOT) / version.artifact_dir / "saved_model"


# --- prediction jobs -------------------------------------------------------------------------------


def start_prediction_job(*, dataset: Dataset, image_ids: list[int] | None = None, created_by=None,
                         push_to_label_studio: bool = True, enqueue: bool = True) -> PredictionJob:
    detector, classifier = promoted_pair()
    if image_ids is not None:
        image_ids = sorted({int(i) for i in image_ids})
        found = set(Image.objects.filter(dataset=dataset, pk__in=image_ids).values_list("pk", flat=True))
        stray = [i for i in image_ids if i not in found]
        if stray:
            raise InferenceRefused(f"images {stray[:5]} are not in dataset {dataset.name}")
    if not Image.objects.filter(dataset=dataset).exists():
        raise InferenceRefused(f"dataset {dataset.name} has no images")
    with transaction.atomic():
        job = PredictionJob.objects.create(dataset=dataset, image_ids=image_ids, detector_version=detector,
                                           classifier_version=classifier, created_by=created_by,
                                           push_to_label_studio=push_to_label_studio)
        if enqueue:
            enqueue_on_commit("inference.predict", job.pk, job=job)
    return job


def run_prediction_job(job_id: int) -> PredictionJob:
    """Predict every image of the job not yet predicted by these model versions (idempotent),
    then push the pre-annotations that Label Studio does not have yet."""
    with transaction.atomic():
        job = PredictionJob.objects.select_for_update().get(pk=job_id)
        if job.status in (PredictionJob.Status.SUCCEEDED, PredictionJob.Status.FAILED):
            return job
        mark_running(job)
    images = Image.objects.filter(dataset=job.dataset).order_by("id")
    if job.image_ids is not None:
        images = images.filter(pk__in=job.image_ids)
    done_ids = set(ImagePrediction.objects.filter(
        image__in=images, detector_version=job.detector_version, classifier_version=job.classifier_version
    ).values_list("image_id", flat=True))
    todo = [im for im in images if im.pk not in done_ids]
    counts = {"total": len(todo) + len(done_ids), "done": len(done_ids), "predicted": 0,
              "skipped": len(done_ids), "pushed": 0, "push_failed": 0}

    def save_progress():
        beat(job, progress={**job.progress, **counts})

    try:
        if todo:
            pipeline = load_pipeline(artifact_path(job.detector_version), artifact_path(job.classifier_version),
                                     PipelineConfig(threshold=operating_threshold(job.detector_version),
                                                    margin=_classifier_margin(job.classifier_version)))
            for image, result in pipeline.predict_stream(read_pixels, todo):
                store_prediction(image=image, result=result, job=job)
                counts["predicted"] += 1
                counts["done"] += 1
                save_progress()
        if job.push_to_label_studio:
            counts["pushed"], counts["push_failed"] = push_pending_predictions(job)
    except Exception as exc:
        log.exception("prediction job %s failed", job.pk)
        save_progress()
        mark_finished(job, PredictionJob.Status.FAILED, f"{type(exc).__name__}: {exc}")
        return PredictionJob.objects.get(pk=job.pk)
    save_progress()
    mark_finished(job, PredictionJob.Status.SUCCEEDED)
    return PredictionJob.objects.get(pk=job.pk)


def _classifier_margin(version: ModelVersion) -> float:
    return float(((version.config or {}).get("data") or {}).get("margin", 0.25))


@transaction.atomic
def store_prediction(*, image: Image, result, job: PredictionJob | None = None,
                     detector: ModelVersion | None = None, classifier: ModelVersion | None = None) -> ImagePrediction:
    """One image's two-step result: an ImagePrediction, and per cluster a PredictionBox (the
    classifier's call and probability) with its detail. Idempotent per (image, versions)."""
    detector = detector or job.detector_version
    classifier = classifier or job.classifier_version
    same = ImagePrediction.objects.filter(image=image, detector_version=detector, classifier_version=classifier)
    existing = same.first()
    if existing is not None:
        return existing
    try:  # a redelivered task beside the first one: the unique constraint lets one of them write
        with transaction.atomic():
            prediction = ImagePrediction.objects.create(image=image, job=job, detector_version=detector,
                                                        classifier_version=classifier, verdict=result.verdict)
    except IntegrityError:
        return same.get()
    name = prediction.model_version
    for cluster in result.clusters:
        x, y, w, h = cluster.box
        x, y = max(0.0, x), max(0.0, y)
        w, h = max(min(w, image.width - x), 1e-3), max(min(h, image.height - y), 1e-3)
        box = PredictionBox.objects.create(image=image, x=x, y=y, width=w, height=h, label=cluster.label,
                                           score=float(np.max(cluster.probabilities)), model_version=name)
        ClusterPrediction.objects.create(
            image_prediction=prediction, box=box, detector_score=cluster.detector_score,
            detector_class=cluster.detector_class,
            probabilities=[float(p) for p in cluster.probabilities],
            embedding=np.asarray(cluster.embedding, dtype=np.float32).tobytes())
    return prediction


def push_pending_predictions(job: PredictionJob) -> tuple[int, int]:
    """Pre-annotations for the job's images that Label Studio lacks; (pushed, failed). A failure
    (Label Studio down) leaves them pending: running the job again pushes them."""
    if not labelstudio.is_configured():
        return 0, 0
    pushed = failed = 0
    pending = ImagePrediction.objects.filter(
        image__dataset=job.dataset, detector_version=job.detector_version,
        classifier_version=job.classifier_version, ls_prediction_id__isnull=True,
    ).select_related("image", "detector_version", "classifier_version")
    if job.image_ids is not None:
        pending = pending.filter(image_id__in=job.image_ids)
    for prediction in pending:
        boxes = [c.box.as_box() for c in prediction.clusters.select_related("box")]
        try:
            ls_id = labelstudio.push_predictions(prediction.image, boxes, model_version=prediction.model_version)
        except (labelstudio.LabelStudioUnavailable, labelstudio.LabelStudioNotConfigured) as exc:
            log.warning("pre-annotation for image %s not pushed: %s", prediction.image_id, exc)
            failed += 1
            continue
        ImagePrediction.objects.filter(pk=prediction.pk).update(ls_prediction_id=ls_id)
        pushed += 1
    return pushed, failed


# --- ranking rounds ----------------------------------------------------------------------------------


def ranking_pool(dataset: Dataset, detector: ModelVersion, classifier: ModelVersion):
    """Images of the dataset nobody has agreed on yet that these model versions predicted."""
    return ImagePrediction.objects.filter(
        image__dataset=dataset, image__consensus_at__isnull=True,
        detector_version=detector, classifier_version=classifier,
    ).select_related("image").order_by("image_id")


def _reason(strategy: str, score: float, probabilities: np.ndarray, n_clusters: int) -> str:
    order = np.argsort(-probabilities)
    first, second = int(order[0]), int(order[1])
    return (f"{strategy} {score:.3f}: called {BETHESDA[first]} (p={probabilities[first]:.2f}), "
            f"next {BETHESDA[second]} ({probabilities[second]:.2f}); "
            f"{n_clusters} cluster{'s' if n_clusters != 1 else ''} found")


def start_ranking_round(*, dataset: Dataset, strategy: str, k: int, diverse: bool = False,
                        allow_preannotations: bool = False, created_by=None, seed: int = 0) -> RankingRound:
    """Rank the pool's clusters and images with ``strategy``, store every rank with its score and
    reason, and feed the k first images to the experts' queues in rank order (this round
    replaces the dataset's previous one)."""
    try:  # the registry says which strategies a round may use
        chosen = round_strategy(strategy, seed=seed)
    except (UnknownStrategy, StrategyRefused) as exc:
        raise InferenceRefused(str(exc)) from None
    if k < 1:
        raise InferenceRefused("k must be at least 1")
    detector, classifier = promoted_pair()
    pool = list(ranking_pool(dataset, detector, classifier))
    if not pool:
        raise InferenceRefused(f"nothing to rank in {dataset.name}: no unreviewed image has predictions from "
                               f"{detector.name} and {classifier.name}; run a prediction job first")
    clusters = list(ClusterPrediction.objects.filter(image_prediction__in=pool)
                    .select_related("image_prediction").order_by("image_prediction__image_id", "id"))
    if not clusters:
        raise InferenceRefused(f"the detector found no cluster in the {len(pool)} unreviewed images of "
                               f"{dataset.name}; nothing to rank")
    probabilities = np.asarray([c.probabilities for c in clusters], dtype=np.float64)
    probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
    predictions = Predictions(probabilities=probabilities,
                              detector_scores=np.asarray([c.detector_score for c in clusters]),
                              embeddings=np.stack([c.embedding_array() for c in clusters]))
    try:
        scores = chosen.score(predictions)
    except ValueError as exc:
        raise InferenceRefused(f"{strategy}: {exc}") from None
    cluster_order = select(scores, len(clusters), descending=chosen.descending)
    # an image's score is its most uncertain cluster's; its embedding that cluster's
    best: dict[int, int] = {}
    for index in cluster_order:
        best.setdefault(clusters[index].image_prediction.image_id, int(index))
    image_ids = list(best)
    image_scores = np.asarray([scores[best[i]] for i in image_ids])
    if diverse:
        embeddings = np.stack([predictions.embeddings[best[i]] for i in image_ids])
        picked = list(select_diverse(image_scores, embeddings, k, descending=chosen.descending))
    else:
        picked = list(select(image_scores, k, descending=chosen.descending))
    taken = set(picked)
    rest = [i for i in select(image_scores, len(image_ids), descending=chosen.descending) if i not in taken]
    order = picked + rest  # the selected first (in pick order), then everyone else by score
    n_by_image: dict[int, int] = {}
    for c in clusters:
        n_by_image[c.image_prediction.image_id] = n_by_image.get(c.image_prediction.image_id, 0) + 1

    with transaction.atomic():
        RankingRound.objects.filter(dataset=dataset, active=True).update(active=False)
        round_ = RankingRound.objects.create(
            dataset=dataset, strategy=chosen.name, k=k, diverse=diverse, allow_preannotations=allow_preannotations,
            detector_version=detector, classifier_version=classifier, pool_size=len(pool), created_by=created_by)
        RankedCluster.objects.bulk_create([
            RankedCluster(round=round_, cluster=clusters[int(index)], rank=rank, score=float(scores[int(index)]))
            for rank, index in enumerate(cluster_order, start=1)])
        ranked = []
        for rank, position in enumerate(order, start=1):
            image_id = image_ids[int(position)]
            top = clusters[best[image_id]]
            ranked.append(RankedImage(
                round=round_, image_id=image_id, rank=rank, score=float(image_scores[int(position)]),
                selected=rank <= min(k, len(order)), top_cluster=top,
                reason=_reason(chosen.name, float(image_scores[int(position)]), probabilities[best[image_id]],
                               n_by_image[image_id])[:300]))
        RankedImage.objects.bulk_create(ranked)
        # the previous round stops feeding the queue and offering its boxes; this one starts
        Image.objects.filter(dataset=dataset).update(queue_rank=None, preannotation_model="")
        for item in ranked:
            if item.selected:
                Image.objects.filter(pk=item.image_id).update(queue_rank=float(item.rank))
        if allow_preannotations:  # annotation reads this (annotation.access), never inference
            Image.objects.filter(pk__in=[r.image_id for r in ranked if r.selected]).update(
                preannotation_model=f"{detector.name}+{classifier.name}")
    return round_

