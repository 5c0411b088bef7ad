"""Dataset pages: list, gallery, image viewer, browser import and its job page.

Views check the role, read through ``annotation.selectors``, write only through
``annotation.services`` and render one template (its named partial for htmx requests).
Blind rule: what each user sees of an image (its ground truth, the model's predictions) is
decided by annotation.access, the one rule; nothing here shows ExpertAnnotation/ExpertBox.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from urllib.parse import urlencode

from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.core.validators import validate_slug
from django.http import HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods
from django_htmx.http import HttpResponseClientRedirect

from annotation import access, selectors, services
from annotation.bethesda import BETHESDA, DESCRIPTIONS
from annotation.models import Image, ImportJob
from cytoloop.roles import Role, role_required

EVERY_ROLE = tuple(Role)
PAGE_SIZE = 48
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".zip")
ANNOTATION_EXTENSIONS = (".json", ".csv")
#: Names that would collide with the pages under /datasets/.
RESERVED_NAMES = frozenset({"import"})
#: Django refuses more files than this in one request (DATA_UPLOAD_MAX_NUMBER_FILES default).
MAX_FILES = 100


def _label_bar(counts: dict[str, int]) -> list[dict]:
    total = sum(counts.values())
    return [
        {
            "label": label,
            "count": counts[label],
            "percent": round(100 * counts[label] / total, 2) if total else 0,
            "description": DESCRIPTIONS[label],
        }
        for label in BETHESDA
    ]


# ---------------------------------------------------------------------------------------------
# Datasets and gallery


@role_required(*EVERY_ROLE)
@require_GET
def datasets(request):
    rows = list(selectors.datasets_with_counts())
    shown = None if access.sees_everything(request.user) else access.images_with_ground_truth_shown(
        request.user, Image.objects.filter(dataset__in=rows))
    counts = selectors.ground_truth_label_counts([d.pk for d in rows], shown=shown)
    items = [
        {"dataset": d, "bar": _label_bar(counts[d.pk]), "boxes": sum(counts[d.pk].values())}
        for d in rows
    ]
    return render(request, "annotation/datasets.html", {"items": items})


def _ground_truth_shown(user, dataset):
    """The dataset's images whose ground truth ``user`` may see (None: all of them)."""
    if access.sees_everything(user):
        return None
    return access.images_with_ground_truth_shown(user, Image.objects.filter(dataset=dataset))


def _filters(request) -> tuple[str, str]:
    split = request.GET.get("split", "")
    label = request.GET.get("label", "")
    return (split if split in selectors.SPLITS else "", label if label in BETHESDA else "")


def _query(**params) -> str:
    kept = {k: v for k, v in params.items() if v not in ("", None, 1, "1")}
    return "?" + urlencode(kept) if kept else ""


@role_required(*EVERY_ROLE)
@require_GET
def gallery(request, name: str):
    dataset = get_object_or_404(selectors.dataset_by_name(name))
    split, label = _filters(request)
    shown = _ground_truth_shown(request.user, dataset)
    images = selectors.dataset_images(dataset, split=split, label=label, shown=shown)
    page = Paginator(images, PAGE_SIZE).get_page(request.GET.get("page"))
    for image in page.object_list:
        if not image.thumbnail:
            services.ensure_thumbnail(image=image)
    views = access.image_views(request.user, list(page.object_list))
    labels_by_image = selectors.ground_truth_labels_by_image(
        [i.pk for i in page.object_list if views[i.pk].ground_truth])
    base = reverse("annotation:gallery", args=[dataset.name])
    by_split = selectors.split_counts(dataset, label=label, shown=shown)
    by_label = selectors.label_image_counts(dataset, split=split, shown=shown)
    split_links = [{"value": "", "text": "All splits", "count": sum(by_split.values())}] + [
        {"value": s, "text": s, "count": n} for s, n in by_split.items()
    ]
    label_links = [{"value": "", "text": "All labels", "count": None}] + [
        {"value": lab, "text": lab, "count": n, "title": DESCRIPTIONS[lab]} for lab, n in by_label.items()
    ]
    for link in split_links:
        link["url"] = base + _query(split=link["value"], label=label)
        link["active"] = link["value"] == split
    for link in label_links:
        link["url"] = base + _query(split=split, label=link["value"])
        link["active"] = link["value"] == label
    image_query = _query(split=split, label=label)
    cards = [
        {
            "image": image,
            "labels": labels_by_image.get(image.pk, []),
            "url": reverse("annotation:image", args=[dataset.name, image.pk]) + image_query,
        }
        for image in page.object_list
    ]
    pages = {
        "previous": base + _query(split=split, label=label, page=page.previous_page_number())
        if page.has_previous() else None,
        "next": base + _query(split=split, label=label, page=page.next_page_number())
        if page.has_next() else None,
    }
    context = {
        "dataset": dataset,
        "split": split,
        "label": label,
        "split_links": split_links,
        "label_links": label_links,
        "page": page,
        "pages": pages,
        "cards": cards,
        "matching": page.paginator.count,
        "blind": shown is not None,  # some images' ground truth is hidden from this user
        "total": sum(selectors.split_counts(dataset).values()) if label else sum(by_split.values()),
    }
    if request.htmx:
        return render(request, "annotation/gallery.html#grid", context)
    return render(request, "annotation/gallery.html", context)


# ---------------------------------------------------------------------------------------------
# Image viewer


def _overlay(box, *, kind: str, font: float, width: int, height: int) -> dict:
    """Geometry of one box and its label tag, in image pixels."""
    score = getattr(box, "score", None)
    text = box.label if score is None else f"{box.label} {score:.2f}"
    tag_h = font * 1.4
    tag_w = font * (0.62 * len(text) + 0.9)
    if kind == "gt":  # tag above the box (inside when there is no room above)
        tag_y = box.y - tag_h if box.y >= tag_h else box.y
    else:  # predictions: below the box, so they do not hide the ground truth's tags
        bottom = box.y + box.height
        tag_y = bottom if bottom + tag_h <= height else bottom - tag_h
    tag_x = min(box.x, max(0.0, width - tag_w))
    point = None
    if kind == "gt" and box.point_x is not None:
        point = {"x": box.point_x, "y": box.point_y, "r": max(2.0, font * 0.28)}
    return {
        "kind": kind,
        "label": box.label,
        "text": text,
        "x": box.x, "y": box.y, "w": box.width, "h": box.height,
        "tag_x": tag_x, "tag_y": tag_y, "tag_w": tag_w, "tag_h": tag_h,
        "text_x": tag_x + font * 0.45, "text_y": tag_y + tag_h * 0.74,
        "point": point,
    }


@role_required(*EVERY_ROLE)
@require_GET
def image(request, name: str, pk: int):
    dataset = get_object_or_404(selectors.dataset_by_name(name))
    image, view = access.image_or_404(request.user, pk, selectors.image_in_dataset(dataset, pk))
    split, label = _filters(request)
    within = selectors.dataset_images(dataset, split=split, label=label,
                                      shown=_ground_truth_shown(request.user, dataset))
    before, after = selectors.neighbours(within, image)
    query = _query(split=split, label=label)
    ground_truth = list(access.ground_truth(view, image))
    predictions = list(access.predictions(view, image))
    font = max(image.width, image.height) / 52
    boxes = [_overlay(b, kind="gt", font=font, width=image.width, height=image.height)
             for b in ground_truth]
    preds = [_overlay(b, kind="pred", font=font, width=image.width, height=image.height)
             for b in predictions]
    legend = [
        {
            "label": lab,
            "description": DESCRIPTIONS[lab],
            "gt": sum(1 for b in ground_truth if b.label == lab),
            "pred": sum(1 for b in predictions if b.label == lab),
        }
        for lab in BETHESDA
    ]
    # Browsers other than Safari cannot draw TIFF: show its (smaller) JPEG preview instead.
    from_preview = image.format == "TIFF" and services.ensure_thumbnail(image=image)
    context = {
        "dataset": dataset,
        "image": image,
        "image_url": image.thumbnail.url if from_preview else image.file.url,
        "from_preview": from_preview,
        "ground_truth": ground_truth,
        "predictions": predictions,
        "view": view,
        "boxes": boxes,
        "preds": preds,
        "legend": legend,
        "points": sum(1 for b in ground_truth if b.point_x is not None),
        "font": font,
        "split": split,
        "label": label,
        "gallery_url": reverse("annotation:gallery", args=[dataset.name]) + query,
        "previous_url": reverse("annotation:image", args=[dataset.name, before.pk]) + query
        if before else None,
        "next_url": reverse("annotation:image", args=[dataset.name, after.pk]) + query
        if after else None,
        "position": selectors.position_in(within, image),
        "count": within.count(),
    }
    return render(request, "annotation/image.html", context)


# ---------------------------------------------------------------------------------------------
# Browser import


def _wants_json(request) -> bool:
    return (
        request.headers.get("x-requested-with") == "XMLHttpRequest"
        or "application/json" in request.headers.get("accept", "")
    )


def _import_context(**extra) -> dict:
    return {
        "dataset_names": selectors.dataset_names(),
        "jobs": selectors.recent_import_jobs(),
        "image_extensions": ",".join(IMAGE_EXTENSIONS),
        "annotation_extensions": ",".join(ANNOTATION_EXTENSIONS),
        "max_files": MAX_FILES,
        "values": {},
        **extra,
    }


def _check_import(post, files) -> tuple[str, list[str]]:
    """The dataset name the request asks for, and every problem with the request."""
    errors: list[str] = []
    existing = post.get("dataset", "").strip()
    new = post.get("new_dataset", "").strip()
    name = new or existing
    if not name:
        errors.append("Choose a dataset or type a name for a new one.")
    elif new:
        try:
            validate_slug(new)
        except ValidationError:
            errors.append(
                f"“{new}” is not a valid dataset name: use letters, digits, hyphens and "
                "underscores only (no spaces)."
            )
        if new.lower() in RESERVED_NAMES:
            errors.append(f"“{new}” is reserved; choose another dataset name.")
    elif existing not in selectors.dataset_names():
        errors.append(f"There is no dataset named “{existing}”.")
    images = files.getlist("files")
    if not images:
        errors.append("No files were uploaded: add images (PNG, JPEG, TIFF) or .zip files.")
    wrong = [f.name for f in images if PurePosixPath(f.name).suffix.lower() not in IMAGE_EXTENSIONS]
    if wrong:
        errors.append(
            "Not an image or .zip file: " + ", ".join(wrong[:5]) + (" …" if len(wrong) > 5 else "")
            + ". Accepted: " + " ".join(IMAGE_EXTENSIONS) + "."
        )
    annotations = files.get("annotations")
    if annotations is not None and PurePosixPath(annotations.name).suffix.lower() not in ANNOTATION_EXTENSIONS:
        errors.append(
            f"The annotations file {annotations.name} is not .json or .csv "
            "(COCO, Label Studio JSON or CRIC)."
        )
    return name, errors


@role_required(Role.ADMIN)
@require_http_methods(["GET", "POST"])
def import_images(request):
    if request.method == "GET":
        values = {"dataset": request.GET.get("dataset", "")}
        return render(request, "annotation/import.html", _import_context(values=values))
    name, errors = _check_import(request.POST, request.FILES)
    if errors:
        if request.htmx:  # the page's hx-post upload: the list of what is wrong replaces #import-errors
            return render(request, "annotation/import.html#errors", {"errors": errors}, status=400)
        if _wants_json(request):
            return JsonResponse({"error": " ".join(errors), "errors": errors}, status=400)
        return render(
            request, "annotation/import.html",
            _import_context(errors=errors, values=request.POST), status=400,
        )
    extra = {}
    if request.POST.get("new_dataset", "").strip():
        extra = {k: request.POST.get(k, "").strip() for k in ("title", "source", "license", "citation")}
        extra = {k: v for k, v in extra.items() if v}
    dataset, _ = services.ensure_dataset(name=name, created_by=request.user, **extra)
    job = services.start_import_job(
        dataset=dataset,
        files=request.FILES.getlist("files"),
        annotations_file=request.FILES.get("annotations"),
        as_predictions=request.POST.get("as_predictions") == "on",
        created_by=request.user,
    )
    job_url = reverse("annotation:import_job", args=[job.pk])
    if request.htmx:
        return HttpResponseClientRedirect(job_url)
    if _wants_json(request):
        return JsonResponse({"job_url": job_url, "job": job.pk}, status=202)
    return HttpResponseRedirect(job_url)


@role_required(Role.ADMIN)
@require_GET
def import_job(request, pk: int):
    job = get_object_or_404(selectors.import_job(pk))
    active = job.status in (ImportJob.Status.QUEUED, ImportJob.Status.RUNNING)
    skipped = job.skipped or []
    files_skipped = [s for s in skipped if s.get("reason") != "box"]
    context = {
        "job": job,
        "active": active,
        "by_reason": selectors.skipped_by_reason(job),
        "files_skipped": files_skipped,
        "box_problems": [s for s in skipped if s.get("reason") == "box"],
        "skipped_count": len(files_skipped),
        "gallery_url": reverse("annotation:gallery", args=[job.dataset.name]),
    }
    if request.htmx:
        return render(request, "annotation/import_job.html#progress", context)
    return render(request, "annotation/import_job.html", context)
