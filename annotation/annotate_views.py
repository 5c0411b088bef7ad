"""The pathologist's pages: the queue and the embedded Label Studio editor.

The editor (Label Studio's front-end bundle, npm @heartexlabs/label-studio 1.4.0, vendored into
static/vendor/label-studio/) runs in a page of its own shown in an <iframe>: its stylesheet
carries antd's global reset, which would otherwise restyle the platform around it. The editor
page posts the boxes to /api/annotations/ and tells the annotate page, which moves on.

Blind rule: the editor receives the user's own annotation only (selectors.own_annotations),
never another expert's, and no model predictions unless the dataset's active ranking round
selected the image and allows pre-annotations (or ANNOTATE_SHOW_PREDICTIONS is set). The views
read only annotation's own state: the round writes ``Image.preannotation_model`` and
``annotation.access`` decides from it (annotation never imports inference).
"""

from __future__ import annotations

from django.contrib import messages
from django.middleware.csrf import get_token
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.formats import date_format
from django.utils.timezone import localtime
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_GET, require_POST

from annotation import access, drafts, labelstudio, selectors, services
from annotation.bethesda import BETHESDA, DESCRIPTIONS
from annotation.models import Assignment, Image
from cytoloop.roles import Role, role_required

RECENT = 12
#: Assignment states that let a pathologist open an image in the editor.
OPEN_STATES = (Assignment.Status.ACTIVE, Assignment.Status.SUBMITTED)


def _classes() -> list[dict]:
    return [
        {
            "label": name,
            "hotkey": str(i),
            "colour": labelstudio.LABEL_COLOURS[name],
            "description": DESCRIPTIONS[name],
        }
        for i, name in enumerate(BETHESDA, start=1)
    ]


def _assignment(request, image: Image) -> Assignment | None:
    """The user's assignment that lets them open ``image`` (active or submitted), or None."""
    return Assignment.objects.filter(
        image=image, annotator=request.user, status__in=OPEN_STATES
    ).first()


def _denied(request, template: str, image: Image):
    return render(request, template, {"denied": True, "image": image}, status=403)


def _go_next(request):
    """Claim the next image of the user's queue (or the one they hold) and open it."""
    assignment = services.next_assignment(annotator=request.user)
    if assignment is None:
        messages.info(
            request, "Nothing left in your queue: every image assigned to you is done. Thank you!"
        )
        return redirect("annotate:queue")
    return redirect("annotate:annotate", image_id=assignment.image_id)


def _image_url(image: Image) -> str:
    """The URL the editor loads (same origin, /media/). Browsers cannot draw TIFF: its JPEG
    preview keeps the aspect ratio, and Label Studio's boxes are in percent of the image."""
    if image.format == "TIFF" and services.ensure_thumbnail(image=image):
        return image.thumbnail.url
    return image.file.url


@role_required(Role.PATHOLOGIST)
@require_GET
def queue(request):
    progress = selectors.queue_progress(annotator=request.user)
    current = (
        Assignment.objects.filter(annotator=request.user, status=Assignment.Status.ACTIVE)
        .select_related("image", "image__dataset", "draft")
        .first()
    )
    recent = list(
        selectors.own_annotations(request.user).select_related("image", "image__dataset")[:RECENT]
    )
    return render(
        request,
        "annotation/queue.html",
        {
            "progress": progress,
            "percent": round(100 * progress["done"] / (progress["done"] + progress["waiting"]))
            if progress["done"] + progress["waiting"]
            else 0,
            "current": current,
            "recent": recent,
        },
    )


@role_required(Role.PATHOLOGIST)
@require_POST
def next_image(request):
    """Start / Continue, and where the annotate page goes after a submit (``saved``: the image
    just submitted, confirmed from the user's own annotations)."""
    saved = request.POST.get("saved", "")
    if saved.isdigit():
        own = (
            selectors.own_annotations(request.user)
            .filter(image_id=int(saved))
            .select_related("image")
            .first()
        )
        if own is not None:
            n = len(own.boxes.all())
            what = f"{n} box{'' if n == 1 else 'es'}" if n else "no abnormal cluster"
            messages.success(request, f"Saved {what} on {own.image.original_name}.")
    return _go_next(request)


@role_required(Role.PATHOLOGIST)
@require_POST
def skip(request, image_id: int):
    image = get_object_or_404(Image, pk=image_id)
    try:
        services.skip_assignment(image=image, annotator=request.user)
    except services.NotAssigned:
        messages.error(
            request,
            f"{image.original_name} was not yours to skip (already submitted, skipped or released).",
        )
        return redirect("annotate:queue")
    messages.info(request, f"Skipped {image.original_name}.")
    return _go_next(request)


@role_required(Role.PATHOLOGIST)
@require_GET
@never_cache  # Back must fetch what is saved now, never show a cached editor (see annotate-page.js)
def annotate(request, image_id: int):
    image = get_object_or_404(Image.objects.select_related("dataset"), pk=image_id)
    assignment = _assignment(request, image)
    if assignment is None:
        return _denied(request, "annotation/annotate.html", image)
    return render(
        request,
        "annotation/annotate.html",
        {
            "image": image,
            "dataset": image.dataset,
            "assignment": assignment,
            "submitted": assignment.status == Assignment.Status.SUBMITTED,
            "classes": _classes(),
            "progress": selectors.queue_progress(annotator=request.user),
            "editor_url": reverse("annotate:editor", args=[image.pk]),
        },
    )


@role_required(Role.PATHOLOGIST)
@require_GET
@never_cache
@xframe_options_sameorigin
def editor(request, image_id: int):
    image = get_object_or_404(Image, pk=image_id)
    assignment = _assignment(request, image)
    if assignment is None:
        return _denied(request, "annotation/editor.html", image)
    user = request.user
    own = selectors.own_annotations(user).filter(image=image).first()
    # the draft (unsaved work) wins over the saved boxes, if it was edited from what is saved now
    draft = drafts.restorable_draft(assignment)
    items = drafts.draft_items(draft) if draft else drafts.annotation_items(own) if own else None
    annotations = []
    if own is not None:
        annotations.append(
            {"id": own.pk, "result": drafts.editor_result(items, image.width, image.height)}
        )
    predictions = []
    # the one access rule: only the model boxes offered to annotators (image.preannotation_model,
    # written by the active ranking round, or ANNOTATE_SHOW_PREDICTIONS); none for an extra expert
    rows = list(access.preannotations(access.image_view(user, image), image))
    if rows:
        predictions.append(
            {
                "id": rows[0].pk,  # Label Studio wants an integer id (parent_prediction)
                "model_version": rows[0].model_version,
                "result": labelstudio.boxes_to_result(
                    [b.as_box() for b in rows], image.width, image.height, with_score=True
                ),
            }
        )
    # a model box's id travels as its region id ("pred-N"): a box that started from it says so
    # on submit (ExpertBox.prediction / prediction_changed), even after it was moved or relabelled
    for prediction in predictions:
        for item, row in zip(prediction["result"], rows, strict=True):
            item["id"] = drafts.prediction_region_id(row.pk)
    editor_data = {
        "config": labelstudio.label_config(),
        "user": {
            "pk": user.pk,
            "firstName": user.first_name or user.get_username(),
            "lastName": user.last_name,
        },
        "task": {
            "id": image.pk,
            "data": {"image": _image_url(image)},
            "annotations": annotations,
            "predictions": predictions,
        },
        "image": {"id": image.pk, "width": image.width, "height": image.height},
        "fromName": labelstudio.FROM_NAME,
        "submitUrl": reverse("api-annotations"),
        "draftUrl": reverse("api-draft", args=[image.pk]),
        "csrfToken": get_token(request),
        # optimistic concurrency: every save names the revision this editor was opened on
        "revision": own.revision if own is not None else 0,
        "submitted": own is not None,
        # unsaved work restored over the saved boxes (or over an empty editor)
        "draft": None if draft is None else {
            "result": drafts.editor_result(items, image.width, image.height),
            "note": "Restored your unsaved draft from "
                    + date_format(localtime(draft.updated_at), "H:i, j M Y") + " UTC.",
        },
    }
    return render(request, "annotation/editor.html", {"image": image, "editor_data": editor_data})
