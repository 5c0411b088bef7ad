"""Importing images: a folder, zip or upload into a dataset, with their boxes; thumbnails.

Each file goes in on its own (a bad one is skipped with its reason); a browser upload is kept
and imported on a worker (an ImportJob)."""

from __future__ import annotations

import logging
import posixpath
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction

from annotation import formats, ground_truth
from annotation.geometry import Box, ImageRecord, InvalidBox
from annotation.imaging import make_thumbnail
from annotation.models import Dataset, Image, ImportJob, PredictionBox
from annotation.services.common import Progress
from annotation.validation import (
    ImageRejected,
    Limits,
    Source,
    ValidImage,
    iter_image_sources,
    safe_member_name,
    validate_image_bytes,
)
from cytoloop.jobs import beat, enqueue_on_commit, mark_finished, mark_running

log = logging.getLogger(__name__)


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


UPLOADS = "uploads"


def start_import_job(*, dataset: Dataset, files, annotations_file=None, as_predictions: bool = False,
                     created_by=None) -> ImportJob:
    """Keep the uploaded files (images and/or zips) and queue their import on a worker.

    ``files`` and ``annotations_file`` are Django UploadedFile objects. The job row and the
    upload folder exist before the task is queued (on commit), so nothing is lost if the broker
    is slow or down (the enqueue is then kept and sent when the broker is back).
    """
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
    job = ImportJob.objects.select_related("dataset", "created_by").get(pk=job_id)
    if job.status in (ImportJob.Status.SUCCEEDED, ImportJob.Status.FAILED):
        return job
    base = Path(default_storage.path(job.upload_dir))
    mark_running(job)

    def progress(done: int, total: int) -> None:
        if done == total or done % 5 == 0 or done == 1:
            beat(job, processed=done, total=total)

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
        mark_finished(job, ImportJob.Status.FAILED, str(exc))
    else:
        mark_finished(
            job, ImportJob.Status.SUCCEEDED,
            imported=len(report.imported),
            boxes=report.boxes + report.predictions,
            skipped=[{"name": s.name, "reason": s.reason, "message": s.message} for s in report.skipped]
            + [{"name": "", "reason": "box", "message": m} for m in report.box_problems],
        )
    shutil.rmtree(base, ignore_errors=True)
    job.refresh_from_db()
    return job


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
