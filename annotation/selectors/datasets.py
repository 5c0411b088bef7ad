"""Reads for the dataset pages: datasets, their images and ground-truth counts, import jobs,
and a dataset as format records for export.

Nothing here decides who sees what: annotation.access does (the readers of ground truth take a
``shown`` queryset of the images whose ground truth the user may see)."""

from __future__ import annotations

from collections import Counter, defaultdict

from django.db.models import Count, Exists, OuterRef, Q, QuerySet

from annotation.bethesda import BETHESDA
from annotation.geometry import ImageRecord
from annotation.models import Dataset, GroundTruthBox, Image, ImportJob, PredictionBox
from annotation.validation import REASONS

SPLITS: tuple[str, ...] = tuple(Image.Split.values)


def datasets_with_counts() -> QuerySet[Dataset]:
    """Every dataset with ``image_count`` (ordered by name)."""
    return Dataset.objects.annotate(image_count=Count("images", distinct=True)).order_by("name")


def ground_truth_label_counts(dataset_ids, *, shown: QuerySet[Image] | None = None) -> dict[int, dict[str, int]]:
    """{dataset id: {label: ground-truth box count}} with every Bethesda label present (0 if none),
    counting only the images in ``shown`` when given (those whose ground truth the user may see)."""
    counts: dict[int, dict[str, int]] = {pk: dict.fromkeys(BETHESDA, 0) for pk in dataset_ids}
    boxes = GroundTruthBox.objects.filter(image__dataset_id__in=list(counts))
    if shown is not None:
        boxes = boxes.filter(image__in=shown)
    rows = (
        boxes
        .values_list("image__dataset_id", "label")
        .annotate(n=Count("id"))
        .order_by()
    )
    for dataset_id, label, n in rows:
        counts[dataset_id][label] = n
    return counts


def dataset_by_name(name: str) -> QuerySet[Dataset]:
    return Dataset.objects.filter(name=name)


def _with_label(images: QuerySet[Image], label: str, shown: QuerySet[Image] | None = None) -> QuerySet[Image]:
    images = images.filter(
        Exists(GroundTruthBox.objects.filter(image=OuterRef("pk"), label=label))
    )
    return images if shown is None else images.filter(pk__in=shown.values("pk"))


def dataset_images(dataset: Dataset, *, split: str = "", label: str = "",
                   shown: QuerySet[Image] | None = None) -> QuerySet[Image]:
    """The dataset's images in page order, narrowed to one split and/or to images holding at
    least one ground-truth box of ``label`` (unknown values are ignored by the caller); the label
    filter looks only at the ground truth of the images in ``shown`` when given."""
    images = Image.objects.filter(dataset=dataset)
    if split:
        images = images.filter(split=split)
    if label:
        images = _with_label(images, label, shown)
    return images.order_by("original_name", "id")


def split_counts(dataset: Dataset, *, label: str = "", shown: QuerySet[Image] | None = None) -> dict[str, int]:
    """{split: image count} for every split (0 if none), within the label filter if any."""
    images = Image.objects.filter(dataset=dataset)
    if label:
        images = _with_label(images, label, shown)
    counts = dict.fromkeys(SPLITS, 0)
    for split, n in images.values_list("split").annotate(n=Count("id")).order_by():
        counts[split] = n
    return counts


def label_image_counts(dataset: Dataset, *, split: str = "", shown: QuerySet[Image] | None = None) -> dict[str, int]:
    """{label: number of images with at least one ground-truth box of it}, within the split filter
    (and among the images in ``shown`` when given)."""
    boxes = GroundTruthBox.objects.filter(image__dataset=dataset)
    if shown is not None:
        boxes = boxes.filter(image__in=shown)
    if split:
        boxes = boxes.filter(image__split=split)
    counts = dict.fromkeys(BETHESDA, 0)
    rows = boxes.values_list("label").annotate(n=Count("image_id", distinct=True)).order_by()
    for label, n in rows:
        counts[label] = n
    return counts


def ground_truth_labels_by_image(image_ids) -> dict[int, list[tuple[str, int]]]:
    """{image id: [(label, count), ...] in Bethesda order} for the given images."""
    found: dict[int, Counter] = defaultdict(Counter)
    rows = (
        GroundTruthBox.objects.filter(image_id__in=list(image_ids))
        .values_list("image_id", "label")
        .annotate(n=Count("id"))
        .order_by()
    )
    for image_id, label, n in rows:
        found[image_id][label] = n
    return {
        image_id: [(label, counter[label]) for label in BETHESDA if counter[label]]
        for image_id, counter in found.items()
    }


def image_in_dataset(dataset: Dataset, pk: int) -> QuerySet[Image]:
    return Image.objects.filter(dataset=dataset, pk=pk).select_related("dataset")


def neighbours(images: QuerySet[Image], image: Image) -> tuple[Image | None, Image | None]:
    """The images before and after ``image`` in ``images`` (ordered by original name, id)."""
    name, pk = image.original_name, image.pk
    before = (
        images.filter(Q(original_name__lt=name) | Q(original_name=name, id__lt=pk))
        .order_by("-original_name", "-id")
        .only("id")
        .first()
    )
    after = (
        images.filter(Q(original_name__gt=name) | Q(original_name=name, id__gt=pk))
        .order_by("original_name", "id")
        .only("id")
        .first()
    )
    return before, after


def position_in(images: QuerySet[Image], image: Image) -> int:
    """1-based position of ``image`` in ``images``."""
    name = image.original_name
    return images.filter(Q(original_name__lt=name) | Q(original_name=name, id__lt=image.pk)).count() + 1


def image_predictions(image: Image) -> QuerySet[PredictionBox]:
    """Every model box of the image, unguarded: for pages only reviewers reach after consensus
    (the review page); anything else reads them through annotation.access.predictions."""
    return PredictionBox.objects.filter(image=image).order_by("-score", "id")


def import_job(pk: int) -> QuerySet[ImportJob]:
    return ImportJob.objects.filter(pk=pk).select_related("dataset", "created_by")


def recent_import_jobs(limit: int = 8) -> QuerySet[ImportJob]:
    return ImportJob.objects.select_related("dataset").order_by("-created_at")[:limit]


def dataset_names() -> list[str]:
    return list(Dataset.objects.order_by("name").values_list("name", flat=True))


def skipped_by_reason(job: ImportJob) -> list[dict]:
    """[{reason, label, count}] for a job's skipped files, most frequent first (refused boxes,
    reason "box", are not files and are left out)."""
    counts = Counter(
        entry.get("reason", "error") for entry in (job.skipped or []) if entry.get("reason") != "box"
    )
    labels = {**REASONS, "error": "could not be stored"}
    return [
        {"reason": reason, "label": labels.get(reason, reason), "count": n}
        for reason, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    ]


def dataset_records(dataset: Dataset, *, which: str = "ground_truth") -> list[ImageRecord]:
    """The dataset as format records (file names = names at import), for export."""
    images = Image.objects.filter(dataset=dataset).order_by("original_name")
    related = "ground_truth" if which == "ground_truth" else "predictions"
    records = []
    for image in images.prefetch_related(related):
        boxes = tuple(b.as_box() for b in getattr(image, related).all())
        records.append(ImageRecord(image.original_name, image.width, image.height, boxes))
    return records
