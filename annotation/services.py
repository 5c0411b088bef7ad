"""Writes for datasets and images. Each public function owns its transaction(s)."""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction

from annotation import formats
from annotation.geometry import Box, ImageRecord, InvalidBox
from annotation.imaging import make_thumbnail
from annotation.models import (
    Dataset,
    ExpertAnnotation,
    ExpertBox,
    GroundTruthBox,
    Image,
    ImportJob,
    PredictionBox,
)
from annotation.validation import (
    ImageRejected,
    Limits,
    ValidImage,
    iter_image_sources,
    validate_image_bytes,
)
from cytoloop.jobs import enqueue_on_commit

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Skipped:
    name: str
    reason: str
    message: str


@dataclass
class ImportReport:
    """What an import did: every accepted image and every skipped file with its reason."""

    dataset: str
    imported: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    boxes: int = 0
    predictions: int = 0
    box_problems: list[str] = field(default_factory=list)
    unmatched_annotations: list[str] = field(default_factory=list)

    def summary(self) -> str:
        reasons: dict[str, int] = {}
        for s in self.skipped:
            reasons[s.reason] = reasons.get(s.reason, 0) + 1
        by_reason = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
        text = (
            f"{len(self.imported)} image(s) imported into {self.dataset}, "
            f"{len(self.skipped)} skipped{f' ({by_reason})' if by_reason else ''}; "
            f"{self.boxes} ground-truth box(es), {self.predictions} prediction(s)"
        )
        if self.box_problems:
            text += f"; {len(self.box_problems)} box(es) refused"
        if self.unmatched_annotations:
            text += f"; annotations for {len(self.unmatched_annotations)} file(s) with no image"
        return text


def ensure_dataset(*, name: str, created_by=None, **fields) -> tuple[Dataset, bool]:
    from django.core.validators import validate_slug

    validate_slug(name)
    with transaction.atomic():
        dataset, created = Dataset.objects.get_or_create(
            name=name, defaults={"created_by": created_by, "title": fields.pop("title", name), **fields}
        )
        if not created and fields:
            for key, value in fields.items():
                setattr(dataset, key, value)
            dataset.save()
    return dataset, created


def read_annotations(
    path: Path, *, image_sizes: dict[str, tuple[int, int]] | None = None, box_size: float = 100.0
) -> list[ImageRecord]:
    """Parse an annotation file of any supported format (raises formats.FormatError)."""
    kind = formats.detect_format(path)
    if kind == "coco":
        return formats.read_coco(path)
    if kind == "labelstudio":
        return formats.read_label_studio(path, image_sizes=image_sizes)
    if kind == "cric_json":
        return formats.read_cric_json(path, box_size=box_size)
    if kind == "cric_csv":
        return formats.read_cric_csv(path, image_sizes or {}, box_size=box_size, skip_missing=True)
    if kind == "yolo":
        return formats.read_yolo(path, image_sizes or {})
    raise formats.FormatError(f"{path}: unsupported format {kind}")


class _Matcher:
    """Find an annotation record for an imported file: exact relative name, else base name."""

    def __init__(self, records: list[ImageRecord]):
        self.by_name = {r.file_name.lstrip("./"): r for r in records}
        self.by_base: dict[str, ImageRecord | None] = {}
        for r in records:
            base = posixpath.basename(r.file_name)
            self.by_base[base] = None if base in self.by_base else r  # ambiguous -> None
        self.used: set[str] = set()

    def find(self, name: str) -> ImageRecord | None:
        record = self.by_name.get(name) or self.by_base.get(posixpath.basename(name))
        if record is not None:
            self.used.add(record.file_name)
        return record

    def unmatched(self) -> list[str]:
        return sorted(set(r.file_name for r in self.by_name.values()) - self.used)


def _storage_name(dataset: Dataset, valid: ValidImage) -> str:
    return f"images/{dataset.name}/{valid.checksum[:2]}/{valid.checksum}{valid.extension}"


def _save_image(
    *,
    dataset: Dataset,
    name: str,
    data: bytes,
    valid: ValidImage,
    source: str,
    created_by,
    record: ImageRecord | None,
    as_predictions: bool,
    model_version: str,
    gt_source: str,
    report: ImportReport,
) -> Image:
    """Store one image, its thumbnail and its boxes; on any failure nothing of it remains."""
    written: list[str] = []
    try:
        file_name = default_storage.save(_storage_name(dataset, valid), ContentFile(data))
        written.append(file_name)
        thumb_name = default_storage.save(
            f"thumbs/{dataset.name}/{valid.checksum[:2]}/{valid.checksum}.jpg",
            ContentFile(make_thumbnail(data)),
        )
        written.append(thumb_name)
        with transaction.atomic():
            image = Image.objects.create(
                dataset=dataset,
                file=file_name,
                thumbnail=thumb_name,
                original_name=name,
                width=valid.width,
                height=valid.height,
                format=valid.format,
                checksum=valid.checksum,
                source=source,
                created_by=created_by,
            )
            if record is not None:
                _add_boxes(image, record, as_predictions, model_version, gt_source, report)
        return image
    except BaseException:
        for stored in written:
            default_storage.delete(stored)
        raise


def _add_boxes(image, record, as_predictions, model_version, gt_source, report) -> None:
    good: list[Box] = []
    for box in record.boxes:
        try:
            good.append(box.validated(image.width, image.height))
        except InvalidBox as exc:
            report.box_problems.append(f"{image.original_name}: box refused: {exc}")
    if record.width != image.width or record.height != image.height:
        report.box_problems.append(
            f"{image.original_name}: the annotation file says {record.width}x{record.height}, "
            f"the image is {image.width}x{image.height}; boxes checked against the image"
        )
    if as_predictions:
        PredictionBox.objects.bulk_create(
            PredictionBox(image=image, x=b.x, y=b.y, width=b.width, height=b.height, label=b.label,
                          score=b.score, model_version=model_version)
            for b in good
        )
        report.predictions += len(good)
    else:
        from annotation import ground_truth

        # one current box per lesion: exact copies count once, a lesion already decided is kept
        report.boxes += ground_truth.add_imported(image=image, boxes=good, points=gt_source == "point")


def import_images(
    *,
    dataset: Dataset,
    path: str | Path,
    annotations: str | Path | None = None,
    as_predictions: bool = False,
    model_version: str = "imported",
    created_by=None,
    source: str = Image.Source.IMPORT,
    limits: Limits = Limits(),
    box_size: float = 100.0,
    progress: Progress | None = None,
    on_skip: Callable[[Skipped], None] | None = None,
) -> ImportReport:
    """Import a folder, zip or single image into ``dataset``, each file on its own.

    Bad files are skipped with their reason; good ones go in with their boxes (ground truth or,
    with ``as_predictions``, predictions). A malformed annotation file stops the import before
    anything is written (formats.FormatError).
    """
    path = Path(path)
    report = ImportReport(dataset=dataset.name)
    sources = _collect_sources(path, limits)

    records: list[ImageRecord] = []
    gt_source = "box"
    if annotations is not None:
        annotations = Path(annotations)
        kind = formats.detect_format(annotations)
        gt_source = "point" if kind in ("cric_json", "cric_csv") else "box"
        sizes = None
        if kind in ("yolo", "cric_csv", "labelstudio"):
            sizes = _sizes_of(sources, limits)  # these formats need image sizes to place boxes
        records = read_annotations(annotations, image_sizes=sizes, box_size=box_size)
    matcher = _Matcher(records)

    def skip(name: str, reason: str, message: str) -> None:
        item = Skipped(name, reason, message)
        report.skipped.append(item)
        if on_skip:
            on_skip(item)

    seen: dict[str, str] = dict(
        Image.objects.filter(dataset=dataset).values_list("checksum", "original_name")
    )
    known_names = set(seen.values())
    total = len(sources)
    for done, src in enumerate(sources, start=1):
        try:
            if src.error is not None:
                raise src.error
            data = src.read()
            valid = validate_image_bytes(src.name, data, limits)
            if valid.checksum in seen:
                raise ImageRejected(
                    "duplicate", f"{src.name}: duplicate of {seen[valid.checksum]} (same checksum)"
                )
            if src.name in known_names:
                raise ImageRejected(
                    "duplicate", f"{src.name}: an image of that name is already in {dataset.name}"
                )
            _save_image(
                dataset=dataset, name=src.name, data=data, valid=valid, source=source,
                created_by=created_by, record=matcher.find(src.name),
                as_predictions=as_predictions, model_version=model_version,
                gt_source=gt_source, report=report,
            )
            seen[valid.checksum] = src.name
            known_names.add(src.name)
            report.imported.append(src.name)
        except ImageRejected as exc:
            skip(src.name, exc.reason, str(exc))
        except Exception as exc:  # storage or database trouble with this one file
            log.exception("import of %s failed", src.name)
            skip(src.name, "error", f"{src.name}: could not be stored ({type(exc).__name__}: {exc})")
        if progress:
            progress(done, total)
    report.unmatched_annotations = [n for n in matcher.unmatched()]
    return report


def _collect_sources(path: Path, limits: Limits) -> list:
    """The image candidates in ``path``; a folder's .zip files (a browser upload of several zips,
    say) are opened too, their members named as inside the zip."""
    sources = list(iter_image_sources(path, limits))
    if path.is_dir():
        for archive in sorted(p for p in path.rglob("*") if p.suffix.lower() == ".zip" and p.is_file()):
            try:
                sources.extend(iter_image_sources(archive, limits))
            except ImageRejected as exc:
                from annotation.validation import Source

                sources.append(Source(name=archive.relative_to(path).as_posix(), error=exc))
    return sources


def _sizes_of(sources, limits) -> dict[str, tuple[int, int]]:
    sizes = {}
    for src in sources:
        if src.error is None:
            try:
                valid = validate_image_bytes(src.name, src.read(), limits)
            except ImageRejected:
                continue
            sizes[src.name] = (valid.width, valid.height)
    return sizes


def dataset_records(dataset: Dataset, *, which: str = "ground_truth") -> list[ImageRecord]:
    """The dataset as format records (file names = names at import), for export."""
    images = Image.objects.filter(dataset=dataset).order_by("original_name")
    related = "ground_truth" if which == "ground_truth" else "predictions"
    records = []
    for image in images.prefetch_related(related):
        boxes = tuple(b.as_box() for b in getattr(image, related).all())
        records.append(ImageRecord(image.original_name, image.width, image.height, boxes))
    return records


def export_dataset(*, dataset: Dataset, out_dir: str | Path, fmt: str, copy_images: bool = True) -> Path:
    """Write the dataset's ground truth in ``fmt`` (coco, yolo, labelstudio) under ``out_dir``,
    with the image files beside it so that the folder re-imports as it is."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = dataset_records(dataset)
    if fmt == "coco":
        target = out / "annotations.json"
        formats.write_coco(records, target, info={"dataset": dataset.name, "source": dataset.source,
                                                  "license": dataset.license})
    elif fmt == "yolo":
        target = out / "labels"
        formats.write_yolo(records, target)
    elif fmt == "labelstudio":
        target = out / "labelstudio.json"
        formats.write_label_studio(records, target)
    else:
        raise ValueError(f"unknown export format {fmt!r}; expected coco, yolo or labelstudio")
    if copy_images:
        for image in Image.objects.filter(dataset=dataset):
            dest = out / image.original_name
            dest.parent.mkdir(parents=True, exist_ok=True)
            with default_storage.open(image.file.name, "rb") as src:
                dest.write_bytes(src.read())
    return target


#: ``base_revision`` default of save_expert_annotation/submit_annotation: no concurrency check
#: (the simulation, the Label Studio mirror, tests); every save from an editor names its revision.
UNCHECKED = object()

#: a pre-annotation within this many pixels (each of x, y, width, height) and with its label is
#: "accepted unchanged"
PREDICTION_TOLERANCE_PX = 0.5


class StaleAnnotation(Exception):
    """A save from an editor opened on an older revision than the one saved now (Back, a second
    tab, another device): nothing was written. ``annotation`` is what is saved now (or None)."""

    def __init__(self, *, annotation, seen: int):
        self.annotation = annotation
        self.seen = seen
        self.revision = annotation.revision if annotation is not None else 0
        super().__init__(
            f"This image was saved elsewhere since you opened it (revision {self.revision}); "
            "reloaded what is saved now."
        )


def _prediction_provenance(image: Image, boxes: list[Box], predictions) -> list[dict]:
    """Per box: which model box it started from and whether the expert changed it."""
    if not predictions:
        return [{} for _ in boxes]
    if len(predictions) != len(boxes):
        raise AnnotationRejected([f"{len(predictions)} prediction ids for {len(boxes)} boxes"])
    wanted = {p for p in predictions if p is not None}
    rows = {p.pk: p for p in PredictionBox.objects.filter(image=image, pk__in=wanted)}
    errors = [f"box {i}: prediction {p} is not one of this image's predictions"
              for i, p in enumerate(predictions) if p is not None and p not in rows]
    if errors:
        raise AnnotationRejected(errors)
    out = []
    for box, pid in zip(boxes, predictions, strict=True):
        if pid is None:
            out.append({})
            continue
        row = rows[pid]
        same = row.label == box.label and all(
            abs(getattr(row, f) - getattr(box, f)) <= PREDICTION_TOLERANCE_PX for f in ("x", "y", "width", "height"))
        out.append({"prediction": row, "prediction_model": row.model_version, "prediction_changed": not same})
    return out


@transaction.atomic
def save_expert_annotation(*, image: Image, annotator, boxes: list[Box], origin: str,
                           base_revision=UNCHECKED, predictions: list[int | None] | None = None) -> ExpertAnnotation:
    """Create or replace one expert's boxes for one image (validated against the image size).

    Optimistic concurrency: ``base_revision`` is the revision the editor was opened on (0 or
    None: nothing was submitted then). A save from an older revision raises StaleAnnotation and
    writes nothing; every save bumps ``revision``. ``predictions`` (aligned with ``boxes``): the
    PredictionBox id each box started from (a pre-annotation), or None for a drawn box."""
    from django.db.models import F
    from django.utils import timezone

    checked = [b.validated(image.width, image.height) for b in boxes]
    provenance = _prediction_provenance(image, checked, predictions)
    existing = ExpertAnnotation.objects.select_for_update().filter(image=image, annotator=annotator).first()
    if existing is None:
        if base_revision is not UNCHECKED and (base_revision or 0) != 0:
            raise StaleAnnotation(annotation=None, seen=base_revision)
        annotation = ExpertAnnotation.objects.create(image=image, annotator=annotator, origin=origin, revision=1)
    else:
        rows = ExpertAnnotation.objects.filter(pk=existing.pk)
        if base_revision is not UNCHECKED:
            rows = rows.filter(revision=base_revision or 0)
        if not rows.update(origin=origin, revision=F("revision") + 1, updated_at=timezone.now()):
            raise StaleAnnotation(annotation=existing, seen=base_revision or 0)
        annotation = ExpertAnnotation.objects.get(pk=existing.pk)
    annotation.boxes.all().delete()
    ExpertBox.objects.bulk_create(
        ExpertBox(annotation=annotation, x=b.x, y=b.y, width=b.width, height=b.height, label=b.label, **extra)
        for b, extra in zip(checked, provenance, strict=True)
    )
    return annotation


UPLOADS = "uploads"


def start_import_job(*, dataset: Dataset, files, annotations_file=None, as_predictions: bool = False,
                     created_by=None) -> ImportJob:
    """Keep the uploaded files (images and/or zips) and queue their import on a worker.

    ``files`` and ``annotations_file`` are Django UploadedFile objects. The job row and the
    upload folder exist before the task is queued (on commit), so nothing is lost if the broker
    is slow or down (the enqueue is then kept and sent when the broker is back).
    """
    import uuid

    from annotation.validation import safe_member_name

    if not files:
        raise ValueError("no files were uploaded")
    folder = f"{UPLOADS}/{uuid.uuid4().hex}"
    base = Path(default_storage.path(folder))
    (base / "files").mkdir(parents=True, exist_ok=True)
    for upload in files:
        try:
            name = safe_member_name(upload.name)
        except ImageRejected:
            name = f"unsafe-name-{uuid.uuid4().hex[:8]}{Path(upload.name).suffix[:8]}"
        target = base / "files" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as out:
            for chunk in upload.chunks():
                out.write(chunk)
    annotations_name = ""
    if annotations_file is not None:
        annotations_name = Path(annotations_file.name).name
        with open(base / annotations_name, "wb") as out:
            for chunk in annotations_file.chunks():
                out.write(chunk)
    with transaction.atomic():
        job = ImportJob.objects.create(
            dataset=dataset, upload_dir=folder, annotations_name=annotations_name,
            as_predictions=as_predictions, created_by=created_by,
        )
        enqueue_on_commit("annotation.run_import_job", job.pk, job=job)
    return job


def run_import_job(job_id: int) -> ImportJob:
    """Run a queued browser import (idempotent: a finished job is left as it is)."""
    import shutil

    from django.utils import timezone

    job = ImportJob.objects.select_related("dataset", "created_by").get(pk=job_id)
    if job.status in (ImportJob.Status.SUCCEEDED, ImportJob.Status.FAILED):
        return job
    base = Path(default_storage.path(job.upload_dir))
    ImportJob.objects.filter(pk=job.pk).update(status=ImportJob.Status.RUNNING, started_at=timezone.now())

    def progress(done: int, total: int) -> None:
        if done == total or done % 5 == 0 or done == 1:
            ImportJob.objects.filter(pk=job.pk).update(processed=done, total=total)

    try:
        report = import_images(
            dataset=job.dataset,
            path=base / "files",
            annotations=(base / job.annotations_name) if job.annotations_name else None,
            as_predictions=job.as_predictions,
            created_by=job.created_by,
            source=Image.Source.UPLOAD,
            progress=progress,
        )
    except (formats.FormatError, FileNotFoundError, ImageRejected, ValueError) as exc:
        ImportJob.objects.filter(pk=job.pk).update(
            status=ImportJob.Status.FAILED, error=str(exc), finished_at=timezone.now()
        )
    else:
        ImportJob.objects.filter(pk=job.pk).update(
            status=ImportJob.Status.SUCCEEDED,
            imported=len(report.imported),
            boxes=report.boxes + report.predictions,
            skipped=[{"name": s.name, "reason": s.reason, "message": s.message} for s in report.skipped]
            + [{"name": "", "reason": "box", "message": m} for m in report.box_problems],
            error="",
            finished_at=timezone.now(),
        )
    shutil.rmtree(base, ignore_errors=True)
    job.refresh_from_db()
    return job


def simulated_expert_user(name: str):
    """The account of a simulated expert: a pathologist who cannot log in."""
    from django.contrib.auth import get_user_model

    from cytoloop.roles import Role, set_roles

    email = f"sim-{name}@cytoloop.local"
    user, created = get_user_model().objects.get_or_create(
        username=email, defaults={"email": email, "first_name": f"Simulated {name}"}
    )
    if created:
        user.set_unusable_password()
        user.save()
        set_roles(user, [Role.PATHOLOGIST])
    return user


class ImageHeld(Exception):
    """Someone else (a pathologist) holds the image now."""


def _hold_for(image: Image, user) -> None:
    """Hand ``image`` to a simulated expert the way next_assignment would; ImageHeld if a person
    holds it (the one-active-assignment constraint), nothing written then."""
    from datetime import timedelta

    from django.db import IntegrityError
    from django.utils import timezone

    from annotation.models import Assignment

    try:
        with transaction.atomic():
            Assignment.objects.update_or_create(
                image=image, annotator=user,
                defaults={"status": Assignment.Status.ACTIVE, "expires_at": timezone.now() + timedelta(minutes=5),
                          "finished_at": None},
            )
    except IntegrityError:
        raise ImageHeld(f"image {image.pk} is held by someone else") from None


def simulate_dataset_experts(*, dataset: Dataset, n_experts: int, seed: int, progress: Progress | None = None) -> dict:
    """Simulated blind annotations for every image of ``dataset`` from its ground truth.

    Each image's annotations go through ``submit_annotation`` (the path real ones take), all of
    one image's experts in one transaction; deterministic for (seed, image checksum, expert).
    An image a pathologist holds now is skipped whole (their work is never raced or outvoted
    half-way) and listed under ``held``; running again later fills it in. Returns
    ``{"experts": {name: {"annotations", "boxes", "profile"}}, "held": [image ids]}``."""
    from annotation.models import Assignment
    from annotation.simulation import default_panel, simulate_panel

    panel = default_panel(n_experts, seed)
    users = {p.name: simulated_expert_user(p.name) for p in panel}
    summary = {p.name: {"annotations": 0, "boxes": 0, "profile": p.role or "expert"} for p in panel}
    held: list[int] = []
    release_expired_assignments()
    images = list(Image.objects.filter(dataset=dataset).order_by("pk").prefetch_related("ground_truth"))
    sim_ids = [u.pk for u in users.values()]
    for done, image in enumerate(images, start=1):
        truth = [b.as_box() for b in image.ground_truth.all()]
        panel_boxes = simulate_panel(truth, image.width, image.height, panel, seed, image.checksum)
        if Assignment.objects.filter(image=image, status=Assignment.Status.ACTIVE).exclude(
                annotator__in=sim_ids).exists():
            held.append(image.pk)
        else:
            try:
                # the path real annotations take: an assignment, then submit (outbox to Label
                # Studio, consensus once the image has its N annotations)
                with transaction.atomic():
                    for name, boxes in panel_boxes.items():
                        _hold_for(image, users[name])
                        submit_annotation(image=image, annotator=users[name], boxes=boxes,
                                          origin=ExpertAnnotation.Origin.SIMULATED)
            except ImageHeld:  # a pathologist took it between the check and the hold
                held.append(image.pk)
            else:
                for name, boxes in panel_boxes.items():
                    summary[name]["annotations"] += 1
                    summary[name]["boxes"] += len(boxes)
        if progress:
            progress(done, len(images))
    return {"experts": summary, "held": held}


def ensure_thumbnail(*, image: Image) -> bool:
    """Give ``image`` a thumbnail if it has none yet (made once from its file, then kept).

    Returns whether the image has a thumbnail afterwards; an unreadable file is logged and
    left without one (the gallery shows a placeholder) rather than breaking the page.
    """
    if image.thumbnail:
        return True
    try:
        with default_storage.open(image.file.name, "rb") as handle:
            data = handle.read()
        thumb = make_thumbnail(data)
    except Exception:  # missing file, unreadable image: the page shows a placeholder
        log.exception("no thumbnail for image %s (%s)", image.pk, image.file.name)
        return False
    name = default_storage.save(
        f"thumbs/{image.dataset.name}/{image.checksum[:2]}/{image.checksum}.jpg", ContentFile(thumb)
    )
    with transaction.atomic():
        row = Image.objects.select_for_update().only("id", "thumbnail").get(pk=image.pk)
        if row.thumbnail:  # another request made it meanwhile: keep theirs
            default_storage.delete(name)
            image.thumbnail = row.thumbnail.name
            return True
        Image.objects.filter(pk=image.pk).update(thumbnail=name)
    image.thumbnail = name
    return True


# --- the annotation workflow: queue, submission, outbox, Label Studio mirror ----------------------


class NotAssigned(Exception):
    """The image is not assigned to this annotator (or the assignment was released)."""


class AnnotationRejected(ValueError):
    """Submitted boxes that cannot be stored; ``errors`` lists what is wrong with each."""

    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


def _lock_timeout():
    from datetime import timedelta

    from django.conf import settings

    return timedelta(minutes=settings.ANNOTATION_LOCK_MINUTES)


def release_expired_assignments() -> int:
    """Hand back images whose holder went quiet past the lock timeout."""
    from django.utils import timezone

    from annotation.models import Assignment

    return Assignment.objects.filter(
        status=Assignment.Status.ACTIVE, expires_at__lt=timezone.now()
    ).update(status=Assignment.Status.RELEASED, finished_at=timezone.now())


def _queue_candidates(annotator, dataset=None):
    """Images this annotator may be handed next, in queue order (see next_assignment)."""
    from django.db.models import Count, F, OuterRef, Subquery, Value
    from django.db.models.functions import Coalesce

    from annotation.models import Assignment

    done = (
        ExpertAnnotation.objects.filter(image=OuterRef("pk")).order_by().values("image")
        .annotate(n=Count("id")).values("n")
    )
    extra = (
        Assignment.objects.filter(image=OuterRef("pk"), extra=True).order_by().values("image")
        .annotate(n=Count("id")).values("n")
    )
    candidates = (
        Image.objects.annotate(
            n_done=Coalesce(Subquery(done), Value(0)), n_extra=Coalesce(Subquery(extra), Value(0))
        )
        .filter(n_done__lt=F("dataset__experts_per_image") + F("n_extra"))
        .exclude(assignments__status=Assignment.Status.ACTIVE)
        .exclude(assignments__annotator=annotator, assignments__status__in=[
            Assignment.Status.SUBMITTED, Assignment.Status.SKIPPED])
        .exclude(expert_annotations__annotator=annotator)
        .order_by(F("queue_rank").asc(nulls_last=True), "created_at", "id")
    )
    if dataset is not None:
        candidates = candidates.filter(dataset=dataset)
    return candidates


def next_assignment(*, annotator, dataset: Dataset | None = None):
    """Lock the next image needing ``annotator``'s annotation, or return their current one.

    Each image goes to its dataset's N distinct experts, one expert at a time (an active
    assignment is exclusive), in ranking order (queue_rank, then age). Concurrent requests skip
    rows another transaction holds (select_for_update(skip_locked=True))."""
    from django.db import IntegrityError
    from django.utils import timezone

    from annotation.models import Assignment

    release_expired_assignments()
    now = timezone.now()
    current = Assignment.objects.filter(annotator=annotator, status=Assignment.Status.ACTIVE)
    if dataset is not None:
        current = current.filter(image__dataset=dataset)
    current = current.select_related("image", "image__dataset").first()
    if current:
        Assignment.objects.filter(pk=current.pk).update(expires_at=now + _lock_timeout())
        return current

    candidates = _queue_candidates(annotator, dataset)
    for _ in range(5):  # a racing request may take the same image between our read and insert
        with transaction.atomic():
            image = candidates.select_for_update(skip_locked=True, of=("self",)).first()
            if image is None:
                return None
            try:
                with transaction.atomic():
                    assignment, _ = Assignment.objects.update_or_create(
                        image=image, annotator=annotator,
                        defaults={"status": Assignment.Status.ACTIVE, "expires_at": now + _lock_timeout(),
                                  "finished_at": None},
                    )
            except IntegrityError:
                continue
            assignment.image = image
            return assignment
    return None


def queue_progress(*, annotator) -> dict:
    from annotation.models import Assignment

    rows = Assignment.objects.filter(annotator=annotator)
    remaining = _queue_candidates(annotator).count()
    held = rows.filter(status=Assignment.Status.ACTIVE).count()
    return {
        "done": rows.filter(status=Assignment.Status.SUBMITTED).count(),
        "skipped": rows.filter(status=Assignment.Status.SKIPPED).count(),
        "assigned": rows.exclude(status=Assignment.Status.RELEASED).count(),
        # images still waiting for this annotator (not counting one they hold now)
        "remaining": remaining,
        "held": held,
        # what a person reads: images still to do, the one they hold included
        "waiting": remaining + held,
    }


def validate_boxes(boxes: list, image: Image) -> list[Box]:
    """Box objects checked against the image: every problem listed, nothing stored."""
    errors, checked = [], []
    for i, box in enumerate(boxes):
        try:
            checked.append(box.validated(image.width, image.height))
        except InvalidBox as exc:
            errors.append(f"box {i}: {exc}")
    if errors:
        raise AnnotationRejected(errors)
    return checked


def submit_annotation(*, image: Image, annotator, boxes: list[Box], origin: str = ExpertAnnotation.Origin.EDITOR,
                      base_revision=UNCHECKED, predictions: list[int | None] | None = None):
    """Store an expert's boxes for an image they were assigned, and queue the Label Studio push.

    ``base_revision``: the revision the editor was opened on (see save_expert_annotation; a
    stale one raises StaleAnnotation, nothing written). The assignment's draft is removed.
    The database write is the acknowledgement: Label Studio and the broker may be down; the
    outbox keeps the push until it succeeds."""
    from django.utils import timezone

    from annotation.models import AnnotationDraft, Assignment, OutboxMessage

    checked = validate_boxes(boxes, image)
    with transaction.atomic():
        assignment = (
            Assignment.objects.select_for_update()
            .filter(image=image, annotator=annotator,
                    status__in=[Assignment.Status.ACTIVE, Assignment.Status.SUBMITTED])
            .first()
        )
        if assignment is None:
            raise NotAssigned(f"image {image.pk} is not assigned to {annotator.get_username()}")
        annotation = save_expert_annotation(image=image, annotator=annotator, boxes=checked, origin=origin,
                                            base_revision=base_revision, predictions=predictions)
        AnnotationDraft.objects.filter(assignment=assignment).delete()
        assignment.status = Assignment.Status.SUBMITTED
        assignment.finished_at = timezone.now()
        assignment.save(update_fields=["status", "finished_at"])
        enqueue_outbox(kind=OutboxMessage.Kind.PUSH_ANNOTATION, object_id=annotation.pk)
        queue_consensus(image.pk)
    return annotation


def skip_assignment(*, image: Image, annotator) -> None:
    from django.utils import timezone

    from annotation.models import Assignment

    updated = Assignment.objects.filter(
        image=image, annotator=annotator, status=Assignment.Status.ACTIVE
    ).update(status=Assignment.Status.SKIPPED, finished_at=timezone.now())
    if not updated:
        raise NotAssigned(f"image {image.pk} is not assigned to {annotator.get_username()}")


def enqueue_outbox(*, kind: str, object_id: int) -> None:
    """Record work for Label Studio (inside the caller's transaction) and ask a worker to flush
    it after commit. If the broker is down the row stays; the periodic flush sends it later.

    One pending message per object: a second change before the push is folded into it and makes
    it due at once (next_attempt_at cleared), which also tells a flush that is sending the older
    content right now not to mark it done (see flush_outbox)."""
    from django.db import IntegrityError

    from annotation.models import OutboxMessage

    pending = OutboxMessage.objects.filter(kind=kind, object_id=object_id, status=OutboxMessage.Status.PENDING)
    if not pending.update(next_attempt_at=None):
        try:
            with transaction.atomic():
                OutboxMessage.objects.create(kind=kind, object_id=object_id)
        except IntegrityError:  # another transaction queued it meanwhile
            pending.update(next_attempt_at=None)
    enqueue_on_commit("annotation.flush_outbox")


OUTBOX_MAX_ATTEMPTS = 12
#: back-off after a failed push: base * 2**(attempts - 1) seconds, at most OUTBOX_RETRY_MAX_S
OUTBOX_RETRY_BASE_S = 10
OUTBOX_RETRY_MAX_S = 600
#: a claimed message is left to its flush this long (a flush that died is retried after it)
OUTBOX_LEASE_S = 300


def _outbox_backoff(attempts: int) -> float:
    return min(OUTBOX_RETRY_MAX_S, OUTBOX_RETRY_BASE_S * 2 ** max(0, min(attempts, 30) - 1))


def _claim_outbox(msg_id: int):
    """Take one due message for this flush (its own short transaction). Returns (msg, lease):
    next_attempt_at is set to the lease's end, which marks the claim."""
    from datetime import timedelta

    from django.db.models import Q
    from django.utils import timezone

    from annotation.models import OutboxMessage

    now = timezone.now()
    with transaction.atomic():
        msg = (
            OutboxMessage.objects.select_for_update(skip_locked=True)
            .filter(Q(next_attempt_at=None) | Q(next_attempt_at__lte=now), pk=msg_id,
                    status=OutboxMessage.Status.PENDING)
            .first()
        )
        if msg is None:
            return None, None
        lease = now + timedelta(seconds=OUTBOX_LEASE_S)
        OutboxMessage.objects.filter(pk=msg.pk).update(next_attempt_at=lease)
    return msg, lease


def _finish_outbox(msg, lease, *, error: Exception | None = None, unavailable: bool = False) -> bool:
    """Record how one delivery went, in one statement of its own (never in a transaction that a
    failure may have aborted). Only the claim's holder finishes it: if the object changed while
    it was being sent (enqueue_outbox cleared the claim), the message stays pending and due.
    Returns whether the message is done."""
    from datetime import timedelta

    from django.db.models import F
    from django.utils import timezone

    from annotation.models import OutboxMessage

    now = timezone.now()
    claimed = OutboxMessage.objects.filter(pk=msg.pk, status=OutboxMessage.Status.PENDING, next_attempt_at=lease)
    if error is None:
        if claimed.update(status=OutboxMessage.Status.DONE, done_at=now, attempts=F("attempts") + 1,
                          last_error=""):
            return True
        OutboxMessage.objects.filter(pk=msg.pk).update(attempts=F("attempts") + 1)
        return False
    attempts = msg.attempts + 1
    text = f"{type(error).__name__}: {error}"[:2000] if not unavailable else str(error)[:2000]
    dead = not unavailable and attempts >= OUTBOX_MAX_ATTEMPTS
    if not claimed.update(
        attempts=F("attempts") + 1, last_error=text,
        status=OutboxMessage.Status.DEAD if dead else OutboxMessage.Status.PENDING,
        next_attempt_at=now + timedelta(seconds=_outbox_backoff(attempts)),
    ):
        OutboxMessage.objects.filter(pk=msg.pk).update(attempts=F("attempts") + 1, last_error=text)
    return False


def flush_outbox(*, limit: int = 200) -> dict:
    """Send due outbox messages to Label Studio, oldest first. Idempotent per message.

    Each message is claimed in a short transaction, delivered with no transaction and no row
    lock held (Label Studio answers our pushes only after calling our own webhook), and its
    outcome recorded in a statement of its own. A message that fails is retried with
    exponential back-off and the flush goes on with the next one; only "Label Studio is down"
    stops the flush (the rest wait for the next one). Call it outside any transaction."""
    from annotation import labelstudio
    from annotation.models import OutboxMessage

    stats = {"done": 0, "failed": 0, "waiting": 0}
    if not labelstudio.is_configured():
        stats["waiting"] = OutboxMessage.objects.filter(status=OutboxMessage.Status.PENDING).count()
        return stats
    from django.db.models import Q
    from django.utils import timezone

    ids = list(
        OutboxMessage.objects.filter(Q(next_attempt_at=None) | Q(next_attempt_at__lte=timezone.now()),
                                     status=OutboxMessage.Status.PENDING)
        .order_by("id").values_list("id", flat=True)[:limit]
    )
    for msg_id in ids:
        msg, lease = _claim_outbox(msg_id)
        if msg is None:  # another flush has it, or it is done
            continue
        try:
            _deliver(msg)
        except labelstudio.LabelStudioUnavailable as exc:
            _finish_outbox(msg, lease, error=exc, unavailable=True)
            stats["waiting"] += 1
            break
        except Exception as exc:
            log.warning("outbox message %s (%s %s) failed: %s: %s", msg.pk, msg.kind, msg.object_id,
                        type(exc).__name__, exc)
            _finish_outbox(msg, lease, error=exc)
            stats["failed"] += 1
        else:
            stats["done" if _finish_outbox(msg, lease) else "waiting"] += 1
    return stats


def _deliver(msg) -> None:
    from annotation import labelstudio
    from annotation.models import OutboxMessage

    if msg.kind == OutboxMessage.Kind.PUSH_ANNOTATION:
        annotation = ExpertAnnotation.objects.select_related("image", "image__dataset", "annotator").filter(
            pk=msg.object_id).first()
        if annotation is not None:  # deleted meanwhile: nothing to send
            labelstudio.push_annotation(annotation)
    elif msg.kind == OutboxMessage.Kind.PUSH_GROUND_TRUTH:
        image = Image.objects.select_related("dataset").filter(pk=msg.object_id).first()
        if image is not None:
            # the image's current ground truth, one box per lesion whatever its source (the
            # default manager leaves superseded rows out): Label Studio shows what CytoLoop trains on
            truth = [b.as_box() for b in image.ground_truth.order_by("id")]
            reviewer = (image.clusters.exclude(resolved_by=None).order_by("-resolved_at")
                        .values_list("resolved_by", flat=True).first())
            from django.contrib.auth import get_user_model

            labelstudio.push_ground_truth(
                image, truth, reviewer=get_user_model().objects.filter(pk=reviewer).first() if reviewer else None)
    elif msg.kind == OutboxMessage.Kind.PUSH_TASKS:
        labelstudio.push_images(Dataset.objects.get(pk=msg.object_id))
    else:
        raise ValueError(f"no handler for outbox kind {msg.kind}")


class WebhookPayloadError(ValueError):
    """A Label Studio event that does not say what CytoLoop needs; the message says what."""


ANNOTATION_ACTIONS = {"ANNOTATION_CREATED", "ANNOTATION_UPDATED"}
DELETE_ACTIONS = {"ANNOTATIONS_DELETED", "ANNOTATION_DELETED"}


def _ref_id(value, what: str) -> int:
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, bool) or not isinstance(value, int):
        raise WebhookPayloadError(f"{what} must be an id (integer), got {value!r}")
    return value


def mirror_ls_event(payload) -> str:
    """Apply one Label Studio webhook event; returns what happened. Same event twice: no change."""
    if not isinstance(payload, dict):
        raise WebhookPayloadError("the event must be a JSON object")
    action = payload.get("action")
    if action in DELETE_ACTIONS:
        items = payload.get("annotations")
        if items is None and isinstance(payload.get("annotation"), dict):
            items = [payload["annotation"]]
        if not isinstance(items, list):
            raise WebhookPayloadError(f"{action} needs a list 'annotations'")
        ids = [_ref_id(item, "annotations[].id") for item in items]
        return mirror_ls_deletions(ids)
    if action not in ANNOTATION_ACTIONS:
        raise WebhookPayloadError(
            f"unsupported action {action!r}; expected one of "
            f"{', '.join(sorted(ANNOTATION_ACTIONS | DELETE_ACTIONS))}"
        )
    ann = payload.get("annotation")
    if not isinstance(ann, dict):
        raise WebhookPayloadError("the event has no 'annotation' object")
    task = payload.get("task")
    task_id = _ref_id(task if task is not None else ann.get("task"), "task id")
    return mirror_ls_annotation(ann, task_id=task_id, task_data=(task or {}).get("data") if isinstance(task, dict) else None)


def mirror_ls_annotation(ann: dict, *, task_id: int, task_data: dict | None = None) -> str:
    from annotation import labelstudio
    from annotation.models import Assignment, OutboxMessage

    ls_id = _ref_id(ann.get("id"), "annotation id")
    result = ann.get("result")
    if not isinstance(result, list):
        raise WebhookPayloadError("annotation 'result' must be a list")
    if ann.get("ground_truth"):
        return "ignored: ground truth is CytoLoop's own"
    if ann.get("was_cancelled"):
        return mirror_ls_deletions([ls_id])
    image = Image.objects.filter(ls_task_id=task_id).first()
    if image is None and task_data and isinstance(task_data.get("cytoloop_image_id"), int):
        image = Image.objects.filter(pk=task_data["cytoloop_image_id"]).first()
    if image is None:
        return f"ignored: task {task_id} is not a CytoLoop image"
    user = labelstudio.user_for_ls_id(_ref_id(ann.get("completed_by"), "completed_by"))
    if user is None:
        return "ignored: annotator unknown to CytoLoop"
    try:
        boxes = labelstudio.result_to_boxes(result, image.width, image.height)
        boxes = validate_boxes(boxes, image)
    except (ValueError, InvalidBox) as exc:
        raise WebhookPayloadError(f"annotation {ls_id}: {exc}") from None

    with transaction.atomic():
        # submit_annotation's lock order (the assignment, then the annotation): a webhook and a
        # submit for the same image and expert wait for each other, never deadlock
        Assignment.objects.select_for_update().filter(image=image, annotator=user).first()
        existing = (
            ExpertAnnotation.objects.select_for_update().filter(ls_annotation_id=ls_id).first()
            or ExpertAnnotation.objects.select_for_update().filter(image=image, annotator=user).first()
        )
        if existing is not None and OutboxMessage.objects.filter(
            kind=OutboxMessage.Kind.PUSH_ANNOTATION, object_id=existing.pk, status=OutboxMessage.Status.PENDING
        ).exists():
            return "ignored: a newer local edit is waiting to be pushed"
        if existing is not None:
            same = sorted((b.as_box() for b in existing.boxes.all()), key=Box.sort_key) == sorted(boxes, key=Box.sort_key)
            if same and existing.ls_annotation_id == ls_id:
                return "unchanged"
            if not same:
                save_expert_annotation(image=image, annotator=user, boxes=boxes, origin=existing.origin)
            ExpertAnnotation.objects.filter(pk=existing.pk).update(ls_annotation_id=ls_id)
            outcome = "updated" if not same else "linked"
        else:
            created = save_expert_annotation(
                image=image, annotator=user, boxes=boxes, origin=ExpertAnnotation.Origin.LABEL_STUDIO)
            ExpertAnnotation.objects.filter(pk=created.pk).update(ls_annotation_id=ls_id)
            outcome = "created"
        from django.utils import timezone

        Assignment.objects.update_or_create(
            image=image, annotator=user,
            defaults={"status": Assignment.Status.SUBMITTED, "finished_at": timezone.now(),
                      "expires_at": timezone.now()},
        )
        queue_consensus(image.pk)
    return outcome


def mirror_ls_deletions(ls_ids: list[int]) -> str:
    from annotation.models import Assignment

    with transaction.atomic():
        doomed = list(ExpertAnnotation.objects.select_for_update().filter(ls_annotation_id__in=ls_ids))
        for annotation in doomed:
            Assignment.objects.filter(image=annotation.image_id, annotator=annotation.annotator_id).update(
                status=Assignment.Status.RELEASED)
            annotation.delete()
            queue_consensus(annotation.image_id)
    return f"deleted {len(doomed)}" if doomed else "unchanged"


def reconcile_label_studio(*, dataset: Dataset | None = None) -> dict:
    """Pull every annotation from Label Studio that the webhook may have missed, drop local
    copies of annotations deleted there, then flush the outbox. Idempotent."""
    from annotation import labelstudio
    from annotation.models import OutboxMessage

    stats: dict[str, int] = {}
    if not labelstudio.is_configured():
        return {"skipped": 1}
    datasets = [dataset] if dataset else list(Dataset.objects.exclude(ls_project_id=None))
    ls = labelstudio.client()
    for ds in datasets:
        seen: set[int] = set()
        with labelstudio._translate_errors():
            tasks = list(ls.tasks.list(project=ds.ls_project_id, fields="all"))
        for task in tasks:
            for ann in task.annotations or []:
                data = ann if isinstance(ann, dict) else ann.model_dump()
                if data.get("ground_truth"):
                    continue
                seen.add(data["id"])
                try:
                    outcome = mirror_ls_annotation(data, task_id=task.id, task_data=task.data)
                except WebhookPayloadError as exc:
                    log.warning("reconcile: %s", exc)
                    outcome = "invalid"
                key = outcome.split(":")[0]
                stats[key] = stats.get(key, 0) + 1
        pending = OutboxMessage.objects.filter(
            kind=OutboxMessage.Kind.PUSH_ANNOTATION, status=OutboxMessage.Status.PENDING
        ).values_list("object_id", flat=True)
        gone = (
            ExpertAnnotation.objects.filter(image__dataset=ds).exclude(ls_annotation_id=None)
            .exclude(ls_annotation_id__in=seen).exclude(pk__in=list(pending))
            .values_list("ls_annotation_id", flat=True)
        )
        gone = list(gone)
        if gone:
            mirror_ls_deletions(gone)
            stats["deleted"] = stats.get("deleted", 0) + len(gone)
    flushed = flush_outbox()
    stats["pushed"] = flushed["done"]
    return stats


# --- consensus ------------------------------------------------------------------------------------


def consensus_config():
    from django.conf import settings

    from annotation.consensus import ConsensusConfig

    return ConsensusConfig(
        iou_threshold=settings.CONSENSUS_IOU_THRESHOLD,
        quorum=settings.CONSENSUS_QUORUM,
        weak_iou=settings.CONSENSUS_WEAK_IOU,
        box_method=settings.CONSENSUS_BOX_METHOD,
        model_boxes=settings.CONSENSUS_MODEL_BOXES,
    )


def required_experts(image: Image) -> int:
    """N for this image: the dataset's experts per image plus extra experts reviewers asked for."""
    from annotation.models import Assignment

    return image.dataset.experts_per_image + Assignment.objects.filter(image=image, extra=True).count()


def _annotation_rows(image_ids) -> dict[int, list]:
    """{image_id: [(annotation_id, annotator_id, [(box_id, Box, model), ...]), ...]} in two
    queries; ``model`` is the model version of a pre-annotation accepted unchanged, else None."""
    rows: dict[int, dict[int, tuple]] = {}
    for ann_id, image_id, annotator_id in ExpertAnnotation.objects.filter(image_id__in=image_ids).values_list(
        "id", "image_id", "annotator_id"
    ):
        rows.setdefault(image_id, {})[ann_id] = (ann_id, annotator_id, [])
    boxes = ExpertBox.objects.filter(annotation__image_id__in=image_ids).values_list(
        "id", "annotation_id", "annotation__image_id", "x", "y", "width", "height", "label",
        "prediction_model", "prediction_changed",
    ).order_by("annotation_id", "id")
    for box_id, ann_id, image_id, x, y, w, h, label, model, changed in boxes:
        accepted = model if model and changed is False else None
        rows[image_id][ann_id][2].append((box_id, Box(x, y, w, h, label), accepted))
    return {image_id: sorted(anns.values()) for image_id, anns in rows.items()}


def _signature(rows, model_boxes: str = "model") -> str:
    """What the image's consensus depends on; ``model_boxes`` (CONSENSUS_MODEL_BOXES) only enters
    for boxes accepted unchanged from the model, so switching it recomputes exactly those images."""
    import hashlib

    digest = hashlib.sha256()
    for ann_id, annotator_id, boxes in rows:
        digest.update(f"{ann_id}:{annotator_id};".encode())
        for box_id, b, model in boxes:
            digest.update(f"{box_id},{b.x!r},{b.y!r},{b.width!r},{b.height!r},{b.label}|".encode())
            if model is not None:  # boxes without model help keep the signatures they had
                digest.update(f"model={model};{model_boxes}|".encode())
    return digest.hexdigest()


def _reliability_weights(dataset_id: int) -> dict[str, float] | None:
    from django.conf import settings

    from annotation.models import ExpertReliability

    if settings.CONSENSUS_WEIGHTING != "reliability":
        return None
    weights = dict(ExpertReliability.objects.filter(dataset_id=dataset_id).values_list("user_id", "reliability"))
    return {str(k): max(v, 1e-6) for k, v in weights.items()} or None


CLUSTER_COLUMNS = ("image_id", "x", "y", "width", "height", "label", "votes", "members", "status", "reasons",
                   "vote_share", "mean_iou", "n_experts_found", "n_experts", "risk")
TRUTH_COLUMNS = ("image_id", "x", "y", "width", "height", "label", "source")


def _build_consensus(image_id: int, rows, config, weights):
    """Cluster rows (CLUSTER_COLUMNS) and consensus ground-truth rows (TRUTH_COLUMNS) for one
    image, as plain tuples: the bulk path writes hundreds of thousands of them."""
    from annotation.bethesda import BETHESDA, disagreement_risk
    from annotation.consensus import MODEL_VOTER, group_model_boxes, merge_assisted

    # model help (CONSENSUS_MODEL_BOXES="model"): a pre-annotation accepted unchanged is the model's
    # vote, one per distinct model box however many experts accepted it, never an expert's
    assisted = config.model_boxes == "model"
    by_expert: dict[str, list[Box]] = {}
    box_ids: dict[str, list[tuple]] = {}
    accepted: list[tuple] = []  # (expert, annotation id, box id, Box, model version)
    for ann_id, annotator_id, boxes in rows:
        expert = str(annotator_id)
        by_expert[expert], box_ids[expert] = [], []
        for box_id, b, model in boxes:
            if assisted and model is not None:
                accepted.append((expert, ann_id, box_id, b, model))
            else:
                by_expert[expert].append(b)
                box_ids[expert].append((ann_id, box_id, model))
    groups = group_model_boxes([(a[4], a[3]) for a in accepted])
    expert_weights = None
    if weights:
        expert_weights = {e: weights.get(e, 1.0) for e in by_expert}
    results = merge_assisted(by_expert, [accepted[g[0]][3] for g in groups], n_experts=len(by_expert),
                             weights=expert_weights, config=config)
    n_experts = len(by_expert)
    clusters, truth = [], []
    for r in results:
        members = []
        labels = set()
        for expert, index in r.members:
            if expert == MODEL_VOTER:  # the model's one vote, shown on each expert who accepted it
                for j in groups[index]:
                    e, ann_id, box_id, b, model = accepted[j]
                    members.append({"annotation": ann_id, "box": box_id, "expert": int(e), "label": b.label,
                                    "x": b.x, "y": b.y, "width": b.width, "height": b.height,
                                    "model": model, "model_vote": True})
                    labels.add(BETHESDA.index(b.label))
                continue
            ann_id, box_id, model = box_ids[expert][index]
            b = by_expert[expert][index]
            member = {"annotation": ann_id, "box": box_id, "expert": int(expert), "label": b.label,
                      "x": b.x, "y": b.y, "width": b.width, "height": b.height}
            if model is not None:  # accepted unchanged, counted as the expert's own ("expert" setting)
                member["model"] = model
            members.append(member)
            labels.add(BETHESDA.index(b.label))
        if r.n_experts_found < n_experts:
            labels.add(0)  # an expert who drew nothing there called it negative
        box = r.box
        clusters.append((image_id, box.x, box.y, box.width, box.height, r.label, list(r.votes), members,
                         r.status, list(r.reasons), r.vote_share, r.mean_iou, r.n_experts_found, n_experts,
                         0.0 if r.agreed else disagreement_risk(labels)))
        if r.agreed:
            truth.append((image_id, box.x, box.y, box.width, box.height, r.label,
                          GroundTruthBox.Source.CONSENSUS.value))
    return clusters, truth


_COPY_SPECIAL = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_value(value) -> str:
    """One value in PostgreSQL's COPY text format."""
    kind = type(value)
    if kind is float:
        return repr(value)
    if kind is int:
        return str(value)
    if value is None:
        return "\\N"
    if kind is list or kind is dict:
        import json

        value = json.dumps(value, separators=(",", ":"))
    text = str(value)
    return text.translate(_COPY_SPECIAL) if ("\\" in text or "\t" in text or "\n" in text or "\r" in text) else text


def _insert_rows(model, columns: tuple[str, ...], rows: list[tuple], extra: dict) -> None:
    """Insert many rows: COPY on PostgreSQL (the ORM's INSERT compiler costs more than the
    database here), bulk_create elsewhere. ``extra`` are constant columns (created_at...)."""
    from django.db import connection

    if not rows:
        return
    if connection.vendor == "postgresql":
        import io

        names = list(columns) + list(extra)
        constants = "\t".join(_copy_value(v) for v in extra.values())
        buffer = io.StringIO()
        for row in rows:
            buffer.write("\t".join(_copy_value(v) for v in row))
            if constants:
                buffer.write("\t" + constants)
            buffer.write("\n")
        buffer.seek(0)
        table = connection.ops.quote_name(model._meta.db_table)
        cols = ", ".join(connection.ops.quote_name(model._meta.get_field(c).column) for c in names)
        with connection.cursor() as cursor:
            cursor.cursor.copy_expert(f"COPY {table} ({cols}) FROM STDIN", buffer)
    else:
        model.objects.bulk_create([model(**dict(zip(columns, row, strict=True)), **extra) for row in rows],
                                  batch_size=2000)


def _store_consensus(built: dict[int, tuple], signatures: dict[int, str]) -> None:
    """Replace the computed (not reviewed) clusters of these images; a reviewer's decision stands:
    a new cluster over a resolved or rejected one is dropped. The agreed clusters become the
    images' consensus ground truth, superseding (never duplicating) the lesions' current boxes
    (annotation.ground_truth.apply_consensus)."""
    from django.utils import timezone

    from annotation import ground_truth
    from annotation.geometry import iou
    from annotation.models import Cluster, ConsensusState

    image_ids = list(built)
    now = timezone.now()
    # plain DELETEs: nothing cascades from computed clusters (the audit log keeps bare ids)
    Cluster.objects.filter(image_id__in=image_ids, status__in=[Cluster.Status.AGREED, Cluster.Status.DISPUTED]
                           )._raw_delete(Cluster.objects.db)
    reviewed: dict[int, list[Box]] = {}
    for image_id, x, y, w, h, label in Cluster.objects.filter(image_id__in=image_ids).values_list(
            "image_id", "x", "y", "width", "height", "label"):
        reviewed.setdefault(image_id, []).append(Box(x, y, w, h, label))
    new_clusters, new_truth = [], {}
    threshold = consensus_config().iou_threshold
    for image_id, (clusters, truth) in built.items():
        done = reviewed.get(image_id)
        if done:
            clusters = [c for c in clusters
                        if not any(iou(Box(c[1], c[2], c[3], c[4], c[5]), d) >= threshold for d in done)]
            kept = {c[1:5] for c in clusters}
            truth = [t for t in truth if t[1:5] in kept]
        new_clusters += clusters
        new_truth[image_id] = [Box(*t[1:6]) for t in truth]
    _insert_rows(Cluster, CLUSTER_COLUMNS, new_clusters, {"created_at": now})
    # the agreed boxes replace the previous computation's, supersede the imported boxes of their
    # lesions and never a reviewer's decision (annotation.ground_truth)
    ground_truth.apply_consensus(new_truth, now=now)
    ConsensusState.objects.bulk_create(
        [ConsensusState(image_id=i, signature=s) for i, s in signatures.items()], batch_size=2000,
        update_conflicts=True, unique_fields=["image"], update_fields=["signature", "computed_at"],
    )
    Image.objects.filter(pk__in=image_ids, consensus_at=None).update(consensus_at=now)


def compute_consensus(*, image: Image, force: bool = False) -> str:
    """Merge the image's expert annotations into clusters once it has its N annotations.

    Idempotent: the same annotations give "unchanged". Returns "not_ready", "unchanged" or
    "computed". Agreed clusters become ground truth (source consensus)."""
    from annotation.models import ConsensusState

    with transaction.atomic():
        Image.objects.select_for_update().filter(pk=image.pk).first()  # one computation per image at a time
        rows = _annotation_rows([image.pk]).get(image.pk, [])
        if len(rows) < required_experts(image) and not force:
            return "not_ready"
        signature = _signature(rows, consensus_config().model_boxes)
        state = ConsensusState.objects.filter(image=image).first()
        if state is not None and state.signature == signature and not force:
            from django.utils import timezone

            ConsensusState.objects.filter(pk=state.pk).update(computed_at=timezone.now())
            return "unchanged"
        built = _build_consensus(image.pk, rows, consensus_config(), _reliability_weights(image.dataset_id))
        _store_consensus({image.pk: built}, {image.pk: signature})
    return "computed"


def recompute_dataset(*, dataset: Dataset, force: bool = False, chunk: int = 2000, progress: Progress | None = None) -> dict:
    """Consensus for every image of ``dataset`` that has its N annotations, in bulk: two queries
    and a few bulk writes per chunk of images. Unchanged images are skipped unless ``force``."""
    from django.db.models import Count

    from annotation.models import Assignment, ConsensusState

    config = consensus_config()
    weights = _reliability_weights(dataset.pk)
    extra = dict(Assignment.objects.filter(image__dataset=dataset, extra=True).values("image_id")
                 .annotate(n=Count("id")).values_list("image_id", "n"))
    counts = dict(ExpertAnnotation.objects.filter(image__dataset=dataset).values("image_id")
                  .annotate(n=Count("id")).values_list("image_id", "n"))
    ready = sorted(i for i, n in counts.items() if n >= dataset.experts_per_image + extra.get(i, 0))
    stats = {"images": len(ready), "computed": 0, "unchanged": 0,
             "not_ready": Image.objects.filter(dataset=dataset).count() - len(ready)}
    for start in range(0, len(ready), chunk):
        ids = ready[start:start + chunk]
        rows = _annotation_rows(ids)
        old = dict(ConsensusState.objects.filter(image_id__in=ids).values_list("image_id", "signature"))
        signatures = {i: _signature(rows.get(i, []), config.model_boxes) for i in ids}
        todo = [i for i in ids if force or old.get(i) != signatures[i]]
        stats["unchanged"] += len(ids) - len(todo)
        built = {i: _build_consensus(i, rows.get(i, []), config, weights) for i in todo}
        with transaction.atomic():
            if todo:
                _store_consensus(built, {i: signatures[i] for i in todo})
        stats["computed"] += len(todo)
        if progress:
            progress(min(start + chunk, len(ready)), len(ready))
    return stats


def queue_consensus(image_id: int) -> None:
    """After commit: compute the image's consensus on a worker (kept and sent later if the
    broker is down; the periodic sweep catches up too)."""
    enqueue_on_commit("annotation.compute_consensus", image_id)


def consensus_sweep(*, limit: int = 500) -> dict:
    """Images with their N annotations whose consensus is missing or older than an annotation."""
    from django.db.models import Count, F, Max, OuterRef, Q, Subquery, Value
    from django.db.models.functions import Coalesce

    from annotation.models import ConsensusState

    per_image = ExpertAnnotation.objects.filter(image=OuterRef("pk")).order_by().values("image")
    stale = (
        Image.objects.annotate(
            n=Coalesce(Subquery(per_image.annotate(c=Count("id")).values("c")), Value(0)),
            last=Subquery(per_image.annotate(m=Max("updated_at")).values("m")),
            computed=Subquery(ConsensusState.objects.filter(image=OuterRef("pk")).values("computed_at")),
        )
        .filter(n__gte=F("dataset__experts_per_image"))
        .filter(Q(computed__isnull=True) | Q(computed__lt=F("last")))
        .values_list("pk", flat=True)[:limit]
    )
    outcome: dict[str, int] = {}
    for image in Image.objects.filter(pk__in=list(stale)).select_related("dataset"):
        result = compute_consensus(image=image)
        outcome[result] = outcome.get(result, 0) + 1
    return outcome


# --- review: reviewers resolve disputed clusters; every decision is audited ------------------------


class ReviewRefused(Exception):
    """A review action that is not allowed (the message says why)."""


def _cluster_state(cluster) -> dict:
    return {"status": cluster.status, "label": cluster.label, "x": cluster.x, "y": cluster.y,
            "width": cluster.width, "height": cluster.height}


def _check_reviewer(cluster_or_image, reviewer) -> None:
    from django.conf import settings

    from cytoloop.roles import Role, has_role

    if not has_role(reviewer, Role.REVIEWER):
        raise ReviewRefused("only reviewers resolve clusters")
    image_id = getattr(cluster_or_image, "image_id", None) or cluster_or_image.pk
    if not settings.REVIEWERS_MAY_RESOLVE_OWN_IMAGES and ExpertAnnotation.objects.filter(
        image_id=image_id, annotator=reviewer
    ).exists():
        raise ReviewRefused("you annotated this image yourself: another reviewer must resolve it")


def _audit(*, actor, action, image_id, cluster=None, before=None, after=None, comment=""):
    from annotation.models import AuditEntry

    return AuditEntry.objects.create(actor=actor, action=action, image_id=image_id, cluster=cluster,
                                     before=before, after=after, comment=comment)


def _queue_ground_truth_push(image_id: int) -> None:
    from annotation.models import OutboxMessage

    enqueue_outbox(kind=OutboxMessage.Kind.PUSH_GROUND_TRUTH, object_id=image_id)


def resolve_cluster(*, cluster, reviewer, label: str | None = None, box: Box | None = None, comment: str = ""):
    """The reviewer's decision on a cluster: its label (default: the vote's winner) and, when
    given, an adjusted box. It becomes ground truth (source review), is written to Label Studio
    as the ground-truth annotation (outbox) and is recorded in the audit log."""
    from django.utils import timezone

    from annotation.bethesda import normalize_label
    from annotation.models import AuditEntry, Cluster

    with transaction.atomic():
        cluster = Cluster.objects.select_for_update().select_related("image").get(pk=cluster.pk)
        _check_reviewer(cluster, reviewer)
        image = cluster.image
        before = _cluster_state(cluster)
        try:
            new_label = normalize_label(label) if label else cluster.label
            new_box = (box or cluster.as_box())
            new_box = Box(new_box.x, new_box.y, new_box.width, new_box.height, new_label).validated(
                image.width, image.height)
        except (ValueError, InvalidBox) as exc:
            raise AnnotationRejected([str(exc)]) from None
        # the reviewer's truth supersedes the lesion's current box, whatever its source (an earlier
        # decision included): kept as history, never duplicated (annotation.ground_truth)
        from annotation import ground_truth

        now = timezone.now()
        ground_truth.apply_review(image=image, cluster=cluster, before=cluster.as_box(), box=new_box,
                                  reviewer=reviewer, now=now)
        cluster.x, cluster.y, cluster.width, cluster.height = new_box.x, new_box.y, new_box.width, new_box.height
        cluster.label = new_box.label
        cluster.status = Cluster.Status.RESOLVED
        cluster.resolved_at, cluster.resolved_by = now, reviewer
        cluster.save()
        changed_box = (before["x"], before["y"], before["width"], before["height"]) != (
            new_box.x, new_box.y, new_box.width, new_box.height)
        action = AuditEntry.Action.ADJUST_BOX if changed_box else (
            AuditEntry.Action.SET_LABEL if new_label != before["label"] else AuditEntry.Action.ACCEPT)
        _audit(actor=reviewer, action=action, image_id=image.pk, cluster=cluster, before=before,
               after=_cluster_state(cluster), comment=comment)
        _queue_ground_truth_push(image.pk)
    return cluster


def reject_cluster(*, cluster, reviewer, comment: str = ""):
    """Not a lesion: the lesion's current ground truth is retired (kept as history); recorded in
    the audit log. A later decision on the cluster supersedes this one."""
    from django.utils import timezone

    from annotation.models import AuditEntry, Cluster

    with transaction.atomic():
        cluster = Cluster.objects.select_for_update().get(pk=cluster.pk)
        _check_reviewer(cluster, reviewer)
        before = _cluster_state(cluster)
        # the lesion's current box (imported, consensus or an earlier decision) is retired, kept
        # as history; the rejected cluster keeps later imports and recomputes off it
        from annotation import ground_truth

        now = timezone.now()
        ground_truth.retire_for_rejection(image_id=cluster.image_id, cluster=cluster, now=now)
        cluster.status = Cluster.Status.REJECTED
        cluster.resolved_at, cluster.resolved_by = now, reviewer
        cluster.save(update_fields=["status", "resolved_at", "resolved_by"])
        _audit(actor=reviewer, action=AuditEntry.Action.REJECT, image_id=cluster.image_id, cluster=cluster,
               before=before, after=_cluster_state(cluster), comment=comment)
        _queue_ground_truth_push(cluster.image_id)
    return cluster


def comment_on_cluster(*, cluster, reviewer, text: str):
    from annotation.models import AuditEntry
    from cytoloop.roles import Role, has_role

    if not has_role(reviewer, Role.REVIEWER):
        raise ReviewRefused("only reviewers comment on clusters")
    text = (text or "").strip()
    if not text:
        raise ReviewRefused("a comment needs some text")
    with transaction.atomic():
        _audit(actor=reviewer, action=AuditEntry.Action.COMMENT, image_id=cluster.image_id, cluster=cluster,
               comment=text[:5000])


def request_another_expert(*, image: Image, reviewer, comment: str = "", cluster=None):
    """Assign the image to one more pathologist (one who has not annotated it, with the fewest
    open assignments), as Label Studio Enterprise does on low agreement. Consensus then waits for
    N+1 annotations.

    The image is held for them EXTRA_EXPERT_LOCK_MINUTES (stated in the audit row with its
    reason); after that it goes back to the queue of any pathologist who has not annotated it.
    ``cluster``: the cluster the reviewer asked from; the audit row is shown on it."""
    from datetime import timedelta

    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db.models import Count, Q
    from django.utils import timezone

    from annotation.models import Assignment, AuditEntry
    from cytoloop.roles import Role

    release_expired_assignments()  # a lapsed hold does not block the request
    with transaction.atomic():
        Image.objects.select_for_update().filter(pk=image.pk).first()
        _check_reviewer(image, reviewer)
        if Assignment.objects.filter(image=image, status=Assignment.Status.ACTIVE).exists():
            raise ReviewRefused("an expert is annotating this image right now; wait for them first")
        busy = Q(assignments__status=Assignment.Status.ACTIVE)
        candidate = (
            get_user_model().objects.filter(groups__name=Role.PATHOLOGIST.value, is_active=True)
            .exclude(annotations__image=image).exclude(assignments__image=image).exclude(pk=reviewer.pk)
            .exclude(password__startswith="!")  # simulated experts cannot log in
            .annotate(open=Count("assignments", filter=busy)).order_by("open", "id").first()
        )
        if candidate is None:
            raise ReviewRefused("every pathologist has already annotated this image")
        minutes = settings.EXTRA_EXPERT_LOCK_MINUTES
        assignment = Assignment.objects.create(
            image=image, annotator=candidate, extra=True, expires_at=timezone.now() + timedelta(minutes=minutes),
        )
        _audit(actor=reviewer, action=AuditEntry.Action.REQUEST_EXPERT, image_id=image.pk,
               cluster=cluster if cluster is not None and cluster.image_id == image.pk else None,
               after={"assigned_to": candidate.get_username(), "held_until": assignment.expires_at.isoformat(),
                      "hold_minutes": minutes,
                      "hold_reason": "EXTRA_EXPERT_LOCK_MINUTES: held for the asked expert, then open to "
                                     "any pathologist who has not annotated the image"},
               comment=comment)
    return assignment


# --- agreement statistics on stored clusters -------------------------------------------------------


def cluster_label_matrix(dataset: Dataset):
    """Items (non-rejected clusters) x experts label matrix (-1 = the expert did not draw it, or
    only accepted the model's box there),
    the consensus label of each cluster, and the experts' user ids (column order)."""
    import numpy as np

    from annotation.bethesda import BETHESDA
    from annotation.models import Cluster

    clusters = list(
        Cluster.objects.filter(image__dataset=dataset).exclude(status=Cluster.Status.REJECTED)
        .values_list("members", "label", "created_at", "status")
    )
    # a model box an expert accepted unchanged is the model's vote, not the expert's: left out
    # of the expert's agreement (as if not labelled by them)
    experts = sorted({m["expert"] for members, *_ in clusters for m in members if not m.get("model_vote")})
    column = {e: j for j, e in enumerate(experts)}
    labels = np.full((len(clusters), len(experts)), -1, dtype=np.int64)
    consensus = np.full(len(clusters), -1, dtype=np.int64)
    for i, (members, label, _, _) in enumerate(clusters):
        for m in members:
            if not m.get("model_vote"):
                labels[i, column[m["expert"]]] = BETHESDA.index(m["label"])
        consensus[i] = BETHESDA.index(label)
    return labels, consensus, experts, clusters


def update_reliability(*, dataset: Dataset) -> list:
    """Each expert's agreement with consensus, confusion against it, and Dawid-Skene reliability
    on this dataset's clusters (stored; consensus may weight by it)."""
    from annotation.agreement import agreement_with_consensus, confusion_against, dawid_skene
    from annotation.models import ExpertReliability

    labels, consensus, experts, _ = cluster_label_matrix(dataset)
    if not experts or len(labels) == 0:
        return []
    ds = dawid_skene(labels)
    agree = agreement_with_consensus(labels, consensus)
    rows = []
    with transaction.atomic():
        for j, user_id in enumerate(experts):
            confusion = confusion_against(labels[:, j], consensus).tolist()
            row, _ = ExpertReliability.objects.update_or_create(
                dataset=dataset, user_id=user_id,
                defaults={"reliability": float(ds.reliability[j]) if ds.reliability[j] == ds.reliability[j] else 0.0,
                          "agreement": float(agree[j]) if agree[j] == agree[j] else 0.0,
                          "n_clusters": int((labels[:, j] >= 0).sum()), "confusion": confusion},
            )
            rows.append(row)
    return rows
