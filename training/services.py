"""Writes for training: dataset versions, training runs, the model registry."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone

from annotation import selectors as annotation_selectors
from annotation.bethesda import BETHESDA
from annotation.imaging import read_pixels
from annotation.models import Dataset
from annotation.services import set_image_splits
from cytoloop.jobs import beat, enqueue_on_commit, mark_finished, mark_running
from training import selectors
from training.models import DatasetVersion, ModelKind, ModelVersion, Promotion, TrainingRun

log = logging.getLogger(__name__)

#: the Celery task that runs a training run (training.tasks.train_task)
TRAIN_TASK = "training.run"


class TrainingRefused(Exception):
    """A training or registry action that cannot be done (the message says why)."""


# --- dataset versions -----------------------------------------------------------------------------


def truth_for(images) -> dict[int, list[tuple]]:
    """Each image's training truth: (Box, vote distribution or None) per lesion.

    Annotation's selector says it (annotation.selectors.training_truth: the current ground truth,
    one box per lesion; boxes of agreed clusters carry the experts' vote shares)."""
    return annotation_selectors.training_truth(im.pk for im in images)


def create_dataset_version(*, dataset: Dataset, seed: int = 0, created_by=None) -> DatasetVersion:
    """Freeze a 70/15/15 split of the dataset's images, by image, stratified by grade."""
    from training.splits import image_grade, stratified_split

    images = list(annotation_selectors.images_by_id(dataset=dataset))
    if not images:
        raise TrainingRefused(f"dataset {dataset.name} has no images")
    truth = truth_for(images)
    grades = [image_grade([BETHESDA.index(b.label) for b, _ in truth[im.pk]]) for im in images]
    splits = stratified_split([im.pk for im in images], grades, seed=seed)
    split_of = {i: name for name, ids in splits.items() for i in ids}
    counts: dict[str, dict] = {name: {"images": len(ids), "clusters": dict.fromkeys(BETHESDA, 0)}
                               for name, ids in splits.items()}
    for image_id, boxes in truth.items():
        for box, _ in boxes:
            counts[split_of[image_id]]["clusters"][box.label] += 1
    with transaction.atomic():
        last = DatasetVersion.objects.select_for_update().filter(dataset=dataset).order_by("-number").first()
        version = DatasetVersion.objects.create(dataset=dataset, number=(last.number + 1) if last else 1,
                                                seed=seed, splits=splits, counts=counts, created_by=created_by)
        set_image_splits(splits=splits)
    return version


def image_crops(images, *, input_size: int, margin: float, progress=None) -> dict[int, tuple]:
    """Each image's training crops: {image id: (uint8 crops (n, S, S, 3), labels (n,), votes (n, 6))}.

    One crop per ground-truth cluster (see truth_for) with a context margin, resized to the
    model's input; vote shares are the consensus distribution, or one-hot for imported truth."""
    from annotation.crops import crops_for_image

    images = list(images)
    truth = truth_for(images)
    out: dict[int, tuple] = {}
    eye = np.eye(len(BETHESDA))
    for n, image in enumerate(images, start=1):
        boxes = truth[image.pk]
        if boxes:
            pixels = read_pixels(image)
            x = crops_for_image(pixels, [b for b, _ in boxes], size=input_size, margin=margin)
            y = np.asarray([BETHESDA.index(b.label) for b, _ in boxes], dtype=np.int64)
            v = np.asarray([np.asarray(votes, dtype=np.float64) if votes else eye[label]
                            for (_, votes), label in zip(boxes, y, strict=True)])
            out[image.pk] = (x, y, v)
        if progress:
            progress(n, len(images))
    return out


def split_crops(crops: dict[int, tuple], splits: dict[str, list[int]], *, input_size: int,
                max_train_crops: int | None = None, seed: int = 0):
    """Crops of a split by image (training.classifier.data.ClassifierData); no image in two splits."""
    from training.classifier.data import ClassifierData

    def stack(name):
        parts = [crops[i] for i in splits.get(name, []) if i in crops]
        if not parts:
            return (np.zeros((0, input_size, input_size, 3), np.uint8), np.zeros(0, np.int64),
                    np.zeros((0, len(BETHESDA))))
        return tuple(np.concatenate([p[k] for p in parts]) for k in range(3))

    (tx, ty, tv), (vx, vy, _), (sx, sy, _) = stack("train"), stack("val"), stack("test")
    if max_train_crops and len(ty) > max_train_crops:
        keep = np.random.default_rng(seed).permutation(len(ty))[:max_train_crops]
        tx, ty, tv = tx[keep], ty[keep], tv[keep]
    return ClassifierData(tx, ty, vx, vy, sx, sy, train_votes=tv)


def classifier_data(version: DatasetVersion, *, input_size: int, margin: float, max_train_crops: int | None = None,
                    progress=None):
    """Crops, labels and vote shares per split of a dataset version (training.classifier.data.ClassifierData)."""
    ids = [i for part in version.splits.values() for i in part]
    images = annotation_selectors.images_by_id(ids=ids)
    crops = image_crops(images, input_size=input_size, margin=margin, progress=progress)
    return split_crops(crops, version.splits, input_size=input_size, max_train_crops=max_train_crops,
                       seed=version.seed)


def detector_data(version: DatasetVersion, *, input_size: int, progress=None):
    """Whole images per split for the detector (training.detector.data.DetectorData).

    Each image is scaled so that its longer side is ``input_size`` (what letterboxing does
    anyway; keeps memory at input size). Boxes of the five atypical grades become detector
    classes 0..4 (ATYPICAL order); NILM boxes are dropped: an image without atypical boxes is
    a negative (NILM) image and stays in, teaching the detector what not to find."""
    import cv2

    from annotation.bethesda import ATYPICAL
    from training.detector.data import DetectorData

    split_of = {i: name for name, ids in version.splits.items() for i in ids}
    images = list(annotation_selectors.images_by_id(ids=split_of))
    truth = truth_for(images)
    parts: dict[str, dict[str, list]] = {s: {"images": [], "boxes": [], "classes": []} for s in ("train", "val", "test")}
    for n, image in enumerate(images, start=1):
        pixels = read_pixels(image)
        scale = input_size / max(pixels.shape[:2])
        if scale < 1:
            pixels = cv2.resize(pixels, (max(1, round(pixels.shape[1] * scale)), max(1, round(pixels.shape[0] * scale))),
                                interpolation=cv2.INTER_AREA)
        else:
            scale = 1.0
        atypical = [b for b, _ in truth[image.pk] if b.label in ATYPICAL]
        boxes = np.asarray([[b.x * scale, b.y * scale, (b.x + b.width) * scale, (b.y + b.height) * scale]
                            for b in atypical], dtype=np.float32).reshape(-1, 4)
        part = parts[split_of[image.pk]]
        part["images"].append(np.ascontiguousarray(pixels))
        part["boxes"].append(boxes)
        part["classes"].append(np.asarray([ATYPICAL.index(b.label) for b in atypical], dtype=np.int64))
        if progress:
            progress(n, len(images))
    return DetectorData(**{f"{split}_{key}": value for split, part in parts.items() for key, value in part.items()})


# --- training runs ----------------------------------------------------------------------------------


def start_training_run(*, kind: str, config, dataset: Dataset, created_by=None, version: DatasetVersion | None = None,
                       enqueue: bool = True) -> TrainingRun:
    """Record a run (its full config as JSON) and queue it on the gpu queue after commit."""
    if kind not in ModelKind.values:
        raise TrainingRefused(f"unknown model kind {kind!r}; have: {', '.join(ModelKind.values)}")
    with transaction.atomic():
        version = version or DatasetVersion.objects.filter(dataset=dataset).order_by("-number").first() \
            or create_dataset_version(dataset=dataset, created_by=created_by)
        run = TrainingRun.objects.create(kind=kind, dataset_version=version, config=config.to_json(),
                                         created_by=created_by)
        if enqueue:
            enqueue_on_commit(TRAIN_TASK, run.pk, job=run)
    return run


def cancel_run(*, run: TrainingRun) -> TrainingRun:
    """Ask a queued or running run to stop (it stops at the next step and is marked cancelled)."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run.pk)
        if run.status == TrainingRun.Status.QUEUED:
            run.status, run.finished_at = TrainingRun.Status.CANCELLED, timezone.now()
        elif run.status not in (TrainingRun.Status.RUNNING, TrainingRun.Status.INTERRUPTED):
            raise TrainingRefused(f"run {run.pk} is {run.status}; nothing to cancel")
        if run.status == TrainingRun.Status.INTERRUPTED:
            run.status, run.finished_at = TrainingRun.Status.CANCELLED, timezone.now()
        run.cancel_requested = True
        run.save()
    return run


#: what an interrupted run's error says; a run resumed automatically once says AUTO_RESUMED after it
INTERRUPTED = "the worker stopped sending heartbeats"
AUTO_RESUMED = "resumed automatically"


def stale_window() -> timedelta:
    """A running run without a heartbeat for this long has lost its worker (TRAINING_STALE_AFTER_S)."""
    return timedelta(seconds=settings.TRAINING_STALE_AFTER_S)


def mark_interrupted_runs(*, stale_after: timedelta | None = None, now=None, auto_resume: bool | None = None) -> int:
    """Runs whose worker stopped sending heartbeats (killed, crashed) become "interrupted"; the
    number marked. The beat runs this every TRAINING_SWEEP_S; a running run beats every
    TRAINING_HEARTBEAT_S, so a killed one is noticed within TRAINING_STALE_AFTER_S + a sweep.

    auto_resume (default TRAINING_AUTO_RESUME): an interrupted run is queued again once, by
    this sweep, and continues from its checkpoint; one interrupted again waits for Resume."""
    now = now or timezone.now()
    limit = now - (stale_window() if stale_after is None else stale_after)
    auto_resume = settings.TRAINING_AUTO_RESUME if auto_resume is None else auto_resume
    with transaction.atomic():
        stale = list(TrainingRun.objects.select_for_update(skip_locked=True).filter(
            status=TrainingRun.Status.RUNNING, heartbeat_at__lt=limit))
        for run in stale:
            again = AUTO_RESUMED in run.error
            run.status = TrainingRun.Status.INTERRUPTED
            run.error = INTERRUPTED + (f" ({AUTO_RESUMED} once before)" if again else "")
            run.save(update_fields=["status", "error"])
            if auto_resume and not again:
                run.status, run.error = TrainingRun.Status.QUEUED, f"{INTERRUPTED}; {AUTO_RESUMED}"
                run.save(update_fields=["status", "error"])
                enqueue_on_commit(TRAIN_TASK, run.pk, job=run)
    return len(stale)


def resume_run(*, run: TrainingRun, enqueue: bool = True) -> TrainingRun:
    """Queue an interrupted run again; it continues from its last checkpoint."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run.pk)
        if run.status != TrainingRun.Status.INTERRUPTED:
            raise TrainingRefused(f"run {run.pk} is {run.status}; only interrupted runs resume")
        run.status, run.error = TrainingRun.Status.QUEUED, ""
        run.save(update_fields=["status", "error"])
        if enqueue:
            enqueue_on_commit(TRAIN_TASK, run.pk, job=run)
    return run


class Heartbeat:
    """A thread that writes the run's heartbeat every ``every_s`` while training runs, also
    through long stretches without progress (data loading, validation, a slow first batch)."""

    def __init__(self, run_id: int, *, every_s: float) -> None:
        self.run_id, self.every_s = run_id, every_s
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.loop, name=f"heartbeat-run-{run_id}", daemon=True)

    def loop(self) -> None:
        try:
            while not self.stopped.wait(self.every_s):
                TrainingRun.objects.filter(pk=self.run_id, status=TrainingRun.Status.RUNNING).update(
                    heartbeat_at=timezone.now())
        except Exception:  # a database hiccup: the progress callbacks still beat
            log.exception("heartbeat of training run %s stopped", self.run_id)
        finally:
            connections.close_all()  # this thread's own connection

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join()


def run_dir(run: TrainingRun) -> Path:
    return Path(settings.MEDIA_ROOT) / "runs" / str(run.pk)


def execute_run(run_id: int) -> TrainingRun:
    """Train (or resume) a run in this process: the gpu worker's task calls this. Idempotent:
    a finished run is left as it is; a run another live worker holds is not touched."""
    from training.loop import Hooks

    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run_id)
        if run.status in (TrainingRun.Status.SUCCEEDED, TrainingRun.Status.FAILED, TrainingRun.Status.CANCELLED):
            return run
        fresh = timezone.now() - stale_window()
        if run.status == TrainingRun.Status.RUNNING and run.heartbeat_at and run.heartbeat_at > fresh:
            return run  # another worker is on it (or the broker redelivered a message it still runs)
        if run.started_at is None:  # a first start never resumes from someone else's leftovers
            import shutil

            shutil.rmtree(run_dir(run), ignore_errors=True)
        mark_running(run, checkpoint_dir=str(run_dir(run)))

    def on_progress(progress: dict) -> None:
        fields = {}
        if "history" in progress:  # at each epoch's end: the curve so far, readable by the pages
            progress = dict(progress)
            fields["history"] = progress.pop("history")
        beat(run, progress=progress, **fields)

    def should_stop() -> bool:
        return TrainingRun.objects.filter(pk=run.pk, cancel_requested=True).exists()

    hooks = Hooks(on_progress=on_progress, should_stop=should_stop)
    try:
        with Heartbeat(run.pk, every_s=settings.TRAINING_HEARTBEAT_S):
            outcome = (_train_detector if run.kind == ModelKind.DETECTOR else _train_classifier)(run, hooks)
    except Exception as exc:
        log.exception("training run %s failed", run.pk)
        mark_finished(run, TrainingRun.Status.FAILED, f"{type(exc).__name__}: {exc}")
        return TrainingRun.objects.get(pk=run.pk)

    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run.pk)
        fields = {"history": outcome["history"], "best_metric": outcome["best"], "best_epoch": outcome["best_epoch"]}
        if outcome["stopped"] == "cancelled":
            mark_finished(run, TrainingRun.Status.CANCELLED, run.error, **fields)
        elif outcome["model_path"] is None:
            mark_finished(run, TrainingRun.Status.FAILED, "no epoch finished: no model to keep", **fields)
        else:
            mark_finished(run, TrainingRun.Status.SUCCEEDED, run.error,
                          progress={**run.progress, "stopped": outcome["stopped"]}, **fields)
        if run.status == TrainingRun.Status.SUCCEEDED:
            register_model_version(run=run, model_path=outcome["model_path"], report=outcome["report"] or {},
                                   extra=outcome.get("extra"))
    return run


def _train_classifier(run: TrainingRun, hooks) -> dict:
    from training.classifier.config import ClassifierRunConfig
    from training.classifier.trainer import train_classifier

    config = ClassifierRunConfig.from_json(run.config)
    data = classifier_data(run.dataset_version, input_size=config.data.input_size, margin=config.data.margin,
                           max_train_crops=config.data.max_train_crops)
    if len(data.train_labels) == 0:
        raise TrainingRefused("the training split has no clusters with ground truth")
    result = train_classifier(data, config, run_dir(run), hooks)
    return {"stopped": result.stopped, "best": result.best_val_macro_f1, "best_epoch": result.best_epoch,
            "history": result.history, "model_path": result.model_path, "report": result.test_report}


def _train_detector(run: TrainingRun, hooks) -> dict:
    from training.detector.config import DetectorRunConfig
    from training.detector.trainer import train_detector
    from training.networks.yolov4.presets import get_preset

    config = DetectorRunConfig.from_json(run.config)
    input_size = config.input_size or get_preset(config.preset).input_size
    data = detector_data(run.dataset_version, input_size=input_size)
    if not any(len(b) for b in data.train_boxes):
        raise TrainingRefused("the training split has no atypical (ASC-US or higher) boxes to learn")
    result = train_detector(data, config, run_dir(run), hooks)
    return {"stopped": result.stopped, "best": result.best_val_map, "best_epoch": result.best_epoch,
            "history": result.history, "model_path": result.model_path, "report": result.test_report,
            "extra": {"threshold": result.threshold, "anchors": result.anchors}}


def register_model_version(*, run: TrainingRun, model_path: Path, report: dict, extra: dict | None = None
                           ) -> ModelVersion:
    """A registry entry for a finished run: SavedModel + .keras + report + confusion PNG on media."""
    import shutil

    from training.metrics import plot_confusion_matrix

    if run.kind == ModelKind.DETECTOR:
        from training.detector.trainer import export_detector_saved_model as export
    else:
        from training.classifier.trainer import export_saved_model as export
    name = f"{run.kind}-{run.pk}"
    relative = f"models/{run.kind}/{name}"
    target = Path(settings.MEDIA_ROOT) / relative
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(model_path, target / "model.keras")
    export(model_path, target / "saved_model")
    confusion = _confusion_matrix_of(report)
    if confusion is not None:
        plot_confusion_matrix(np.asarray(confusion), target / "confusion.png",
                              title=f"{name}: test split" + (", image verdicts" if run.kind == ModelKind.DETECTOR else ""))
    best_key = "best_val_map" if run.kind == ModelKind.DETECTOR else "best_val_macro_f1"
    return ModelVersion.objects.create(kind=run.kind, name=name, run=run, dataset_version=run.dataset_version,
                                       artifact_dir=relative, config=run.config,
                                       metrics={"test": report, "history": run.history, best_key: run.best_metric,
                                                **(extra or {})})


def _confusion_matrix_of(report: dict):
    """The classifier report's confusion matrix, or the detector's image-verdict one."""
    if not report:
        return None
    if report.get("confusion_matrix") is not None:
        return report["confusion_matrix"]
    for value in report.values():
        if isinstance(value, dict) and value.get("confusion_matrix") is not None:
            return value["confusion_matrix"]
    return None


class PromotionNeedsConfirmation(TrainingRefused):
    """The candidate is worse than the promoted version or below a floor: promoting it needs an
    explicit confirmation (``check`` holds the figures and the concerns)."""

    def __init__(self, check, what: str = "promoting") -> None:
        self.check = check
        super().__init__(f"{what} {check.version.name} needs a confirmation: " + "; ".join(check.concerns)
                         + ". Compare the figures and confirm to go ahead.")


def promote(*, version: ModelVersion, by=None, note: str = "", confirm: bool = False,
            against: ModelVersion | None | bool = False, action: str = Promotion.Action.PROMOTE) -> ModelVersion:
    """Make ``version`` the one inference uses for its kind (the previous one steps down).

    Checked against the promoted version on the same test figures (``training.promotion``):
    when it is worse or below a floor, refused with PromotionNeedsConfirmation unless
    ``confirm``. ``against``: the version the person compared with (None: none was promoted);
    if another one is promoted by now, refused, since they confirmed a different comparison.
    The Promotion row records both versions' figures, the concerns and the confirmation."""
    from training.promotion import check_promotion

    with transaction.atomic():
        current = ModelVersion.objects.select_for_update().filter(kind=version.kind, promoted=True).first()
        if current is not None and current.pk == version.pk:
            raise TrainingRefused(f"{version.name} is already the promoted {version.kind}")
        if against is not False and (against.pk if against else None) != (current.pk if current else None):
            raise TrainingRefused(f"the promoted {version.kind} is now {current.name if current else 'none'}, not "
                                  f"{against.name if against else 'none'}: compare the figures again")
        check = check_promotion(version, current, lookup_current=False)
        if check.needs_confirmation and not confirm:
            raise PromotionNeedsConfirmation(check, "rolling back to" if action == Promotion.Action.ROLLBACK
                                             else "promoting")
        if current is not None:
            ModelVersion.objects.filter(pk=current.pk).update(promoted=False)
        ModelVersion.objects.filter(pk=version.pk).update(promoted=True)
        Promotion.objects.create(model_version=version, kind=version.kind, promoted_by=by, note=note, action=action,
                                 previous=current, figures=check.record(), concerns=check.concerns,
                                 confirmed=check.needs_confirmation)
    version.promoted = True
    return version


def rollback(*, kind: str, by=None, confirm: bool = False, against: ModelVersion | None | bool = False
             ) -> ModelVersion:
    """Promote again the version that was promoted before the current one (the same check and
    confirmation as ``promote``)."""
    target = selectors.rollback_target(kind)
    if target is None:
        raise TrainingRefused(f"no earlier {kind} version to roll back to")
    current = selectors.promoted_version(kind)
    return promote(version=target, by=by, note=f"rollback from {current or 'none'}", confirm=confirm,
                   against=against, action=Promotion.Action.ROLLBACK)
