"""The one place CytoLoop talks to Label Studio (label-studio-sdk 2.x).

Projects per dataset, images as tasks, users, annotations on a user's behalf, predictions,
ground truth. Boxes cross this boundary as Label Studio results in percent of the image; the
conversion itself is formats.pixels_to_ls_value / ls_value_to_box, used only from here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import httpx
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from annotation.bethesda import BETHESDA
from annotation.formats import ls_value_to_box, pixels_to_ls_value
from annotation.geometry import Box
from annotation.models import ExpertAnnotation, Image, LabelStudioAccount
from annotation.remote_locks import remote_lock

log = logging.getLogger(__name__)

FROM_NAME = "cluster"
TO_NAME = "image"
LABEL_COLOURS = {
    "NILM": "#4c8c4a", "ASC-US": "#c9a227", "LSIL": "#e07b24",
    "ASC-H": "#c24f8a", "HSIL": "#b3261e", "SCC": "#5b2a86",
}


def label_config() -> str:
    """RectangleLabels over the six Bethesda classes, hotkeys 1..6 in Bethesda order."""
    labels = "\n".join(
        f'    <Label value="{name}" background="{LABEL_COLOURS[name]}" hotkey="{i}"/>'
        for i, name in enumerate(BETHESDA, start=1)
    )
    return (
        "<View>\n"
        f'  <Image name="{TO_NAME}" value="$image" zoom="true" zoomControl="true" rotateControl="false"'
        ' maxWidth="100%"/>\n'
        f'  <RectangleLabels name="{FROM_NAME}" toName="{TO_NAME}" strokeWidth="2" opacity="0.25">\n'
        f"{labels}\n"
        "  </RectangleLabels>\n"
        "</View>"
    )


class LabelStudioNotConfigured(RuntimeError):
    pass


class LabelStudioUnavailable(RuntimeError):
    """Label Studio could not be reached (down, timing out): retry later."""


TRANSIENT = (httpx.TransportError, httpx.TimeoutException, ConnectionError, TimeoutError)

#: for every call that creates something: the SDK otherwise repeats a request that got a 5xx
#: (Label Studio under load answers 500 "database is locked" after it has created the project),
#: which made duplicate projects; the outbox retries instead, after looking up what exists
CREATE_ONCE = {"max_retries": 0}


def is_configured() -> bool:
    return bool(settings.LABEL_STUDIO_URL and settings.LABEL_STUDIO_TOKEN)


@lru_cache(maxsize=4)
def _client(url: str, token: str):
    from label_studio_sdk.client import LabelStudio  # heavy: only when Label Studio is used

    return LabelStudio(base_url=url, api_key=token, timeout=30)


def client():
    if not is_configured():
        raise LabelStudioNotConfigured("LABEL_STUDIO_URL and LABEL_STUDIO_TOKEN are not set")
    return _client(settings.LABEL_STUDIO_URL.rstrip("/"), settings.LABEL_STUDIO_TOKEN)


class translate_errors:
    """Turn transport failures into LabelStudioUnavailable (one exception to retry on)."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is not None and isinstance(exc, TRANSIENT):
            raise LabelStudioUnavailable(f"Label Studio unreachable: {exc}") from exc
        return False


# --- coordinates (the boundary) -------------------------------------------------------------------

def boxes_to_result(boxes: Iterable[Box], width: int, height: int, *, with_score: bool = False) -> list[dict]:
    result = []
    for box in boxes:
        item = {
            "from_name": FROM_NAME,
            "to_name": TO_NAME,
            "type": "rectanglelabels",
            "original_width": width,
            "original_height": height,
            "image_rotation": 0,
            "value": pixels_to_ls_value(box, width, height),
        }
        if with_score and box.score is not None:
            item["score"] = float(box.score)
        result.append(item)
    return result


def result_to_boxes(result: Sequence[dict], width: int, height: int) -> list[Box]:
    """Pixel boxes from Label Studio result items (rectangle labels only; others ignored).

    Raises ValueError (formats.FormatError / InvalidBox) with what is wrong."""
    boxes = []
    for item in result:
        if not isinstance(item, dict) or item.get("type") != "rectanglelabels":
            continue
        value = item.get("value")
        if not isinstance(value, dict):
            raise ValueError("a rectangle result has no value")
        boxes.append(ls_value_to_box(value, width, height, score=item.get("score")))
    return boxes


# --- projects, storage, tasks ---------------------------------------------------------------------

def project_title(dataset) -> str:
    """The dataset's Label Studio project title (stable: how an existing project is found)."""
    return f"CytoLoop: {dataset.name}"[:50]


def ensure_project(dataset) -> int:
    """The dataset's Label Studio project (created with the Bethesda config and overlap N).

    Idempotent and safe to race: callers take turns per dataset (remote_lock, no row lock, no
    transaction held across the HTTP calls); inside, the database is read again, then Label
    Studio is searched by the project's stable title before anything is created, so a push
    that died after creating the project adopts it instead of making another one."""
    if dataset.ls_project_id:
        return dataset.ls_project_id
    ls = client()
    model = type(dataset)
    with remote_lock("ls-project", dataset.pk):
        project_id, storage_id = model.objects.filter(pk=dataset.pk).values_list(
            "ls_project_id", "ls_storage_id").get()
        if project_id:
            dataset.ls_project_id, dataset.ls_storage_id = project_id, storage_id
            return project_id
        with translate_errors():
            project_id = _find_project(ls, dataset)
            if project_id is None:
                try:
                    ls.projects.create(
                        title=project_title(dataset),
                        description=dataset.title or dataset.name,
                        label_config=label_config(),
                        maximum_annotations=dataset.experts_per_image,
                        overlap_cohort_percentage=100,
                        show_overlap_first=True,
                        show_skip_button=True,
                        request_options=CREATE_ONCE,
                    )
                except Exception:
                    # Label Studio on SQLite may answer 500 "database is locked" after it has
                    # stored the project: adopt what it kept rather than create another
                    if _find_project(ls, dataset) is None:
                        raise
                project_id = _one_project(ls, dataset)
            _ensure_webhook(ls, project_id)
            storage_id = _ensure_local_storage(ls, project_id, dataset)
        model.objects.filter(pk=dataset.pk).update(ls_project_id=project_id, ls_storage_id=storage_id)
    dataset.ls_project_id, dataset.ls_storage_id = project_id, storage_id
    return project_id


def _one_project(ls, dataset) -> int:
    """After a create: the oldest project with the dataset's title; any newer copy Label Studio
    made of it (a create repeated after a 5xx it had already acted on) is deleted while it is
    still empty, so a dataset always ends with exactly one project."""
    title = project_title(dataset)
    ids = sorted(p.id for p in ls.projects.list(title=title, include="id,title") if p.title == title)
    if not ids:
        raise LabelStudioUnavailable(f"Label Studio did not keep the project {title!r}")
    for extra in ids[1:]:
        log.warning("deleting duplicate Label Studio project %s (%r kept as %s)", extra, title, ids[0])
        ls.projects.delete(id=extra)
    return ids[0]


def _find_project(ls, dataset) -> int | None:
    """The id of the dataset's existing project (its title; the oldest if there are several)."""
    title = project_title(dataset)
    ids = [p.id for p in ls.projects.list(title=title, include="id,title") if p.title == title]
    return min(ids) if ids else None


def _ensure_local_storage(ls, project_id: int, dataset) -> int | None:
    """Let Label Studio serve the dataset's image files itself (its own UI needs them).

    Needs Label Studio's LOCAL_FILES_DOCUMENT_ROOT to be the platform's MEDIA_ROOT."""
    folder = Path(settings.MEDIA_ROOT) / "images" / dataset.name
    folder.mkdir(parents=True, exist_ok=True)
    try:
        existing = next((st.id for st in ls.import_storage.local.list(project=project_id)
                         if st.path == str(folder)), None)
        if existing is not None:
            return existing
        storage = ls.import_storage.local.create(
            project=project_id, path=str(folder), title="CytoLoop media", use_blob_urls=True,
            regex_filter=r"^$",  # tasks are pushed by CytoLoop, never synced from the folder
            request_options=CREATE_ONCE,
        )
        return storage.id
    except Exception as exc:  # serving images to Label Studio's own UI is optional
        if isinstance(exc, TRANSIENT):
            raise
        log.warning("Label Studio local-files storage not created for %s: %s", dataset.name, exc)
        return None


def _ensure_webhook(ls, project_id: int) -> None:
    url = settings.LABEL_STUDIO_WEBHOOK_URL
    if not url:
        return
    if any(hook.url == url for hook in ls.webhooks.list(project=str(project_id))):
        return
    ls.webhooks.create(
        url=url,
        project=project_id,
        send_payload=True,
        send_for_all_actions=False,
        actions=["ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED"],
        headers={"X-CytoLoop-Secret": settings.LABEL_STUDIO_WEBHOOK_SECRET},
        request_options=CREATE_ONCE,
    )


def image_ls_url(image) -> str:
    return "/data/local-files/?d=" + image.file.name


def push_images(dataset, images: Iterable | None = None) -> int:
    """Give each image (default: every image of the dataset) that has no Label Studio task one.

    Idempotent and safe to race (one pusher per dataset at a time, remote_lock; the database is
    read again inside it). Tasks that exist in Label Studio but whose ids were never saved (a
    push that died half-way) are adopted by their cytoloop_image_id, never created twice.
    Returns how many images got a task now. Sets ``ls_task_id`` on the given image objects."""
    given = list(images) if images is not None else None
    project_id = ensure_project(dataset)
    ls = client()
    with remote_lock("ls-tasks", dataset.pk):
        todo = Image.objects.filter(dataset=dataset, ls_task_id=None)
        if given is not None:
            todo = todo.filter(pk__in=[im.pk for im in given])
        todo = list(todo.order_by("pk"))
        found: dict[int, int] = {}
        if todo:
            with translate_errors():
                wanted = {im.pk: image_ls_url(im) for im in todo}
                for task in ls.tasks.list(project=project_id, fields="task_only"):
                    data = task.data or {}
                    image_id = data.get("cytoloop_image_id")
                    if image_id in wanted and data.get("image") == wanted[image_id]:
                        found.setdefault(image_id, task.id)
                missing = [im for im in todo if im.pk not in found]
                if missing:
                    response = ls.projects.import_tasks(
                        id=project_id,
                        request=[{"image": image_ls_url(im), "cytoloop_image_id": im.pk,
                                  "width": im.width, "height": im.height} for im in missing],
                        return_task_ids=True,
                        request_options=CREATE_ONCE,
                    )
                    task_ids = list(response.task_ids or [])
                    if len(task_ids) != len(missing):
                        raise RuntimeError(
                            f"Label Studio returned {len(task_ids)} task ids for {len(missing)} images")
                    found.update(zip((im.pk for im in missing), task_ids, strict=True))
            with transaction.atomic():
                for image_id, task_id in found.items():
                    Image.objects.filter(pk=image_id, ls_task_id=None).update(ls_task_id=task_id)
    if given is not None:
        saved = dict(Image.objects.filter(pk__in=[im.pk for im in given]).values_list("pk", "ls_task_id"))
        for image in given:
            image.ls_task_id = saved.get(image.pk, image.ls_task_id)
    return len(found)


def _ensure_task(image) -> None:
    """Give ``image`` its task; an image without one means its dataset was imported after the
    last sync, so every missing task of the dataset is created in the same call."""
    if not image.ls_task_id:
        push_images(image.dataset)
        image.ls_task_id = type(image).objects.filter(pk=image.pk).values_list("ls_task_id", flat=True).get()


# --- users ------------------------------------------------------------------------------------------

def ensure_ls_user(user) -> int:
    """The Label Studio user id CytoLoop annotates as for ``user`` (created on first use)."""
    account = LabelStudioAccount.objects.filter(user=user).first()
    if account:
        return account.ls_user_id
    ls = client()
    email = (user.email or user.username).lower()
    with remote_lock("ls-user", user.pk):  # two pushers never create the same user twice
        account = LabelStudioAccount.objects.filter(user=user).first()
        if account:
            return account.ls_user_id
        with translate_errors():
            existing = next((u for u in ls.users.list() if (u.email or "").lower() == email), None)
            ls_user = existing or ls.users.create(
                username=email, email=email, first_name=user.first_name or "", last_name=user.last_name or "",
                request_options=CREATE_ONCE,
            )
        account, _ = LabelStudioAccount.objects.get_or_create(user=user, defaults={"ls_user_id": ls_user.id})
    return account.ls_user_id


def user_for_ls_id(ls_user_id: int):
    """The CytoLoop user behind a Label Studio user id (mapped, else matched by email), or None."""
    account = LabelStudioAccount.objects.select_related("user").filter(ls_user_id=ls_user_id).first()
    if account:
        return account.user
    ls = client()
    with translate_errors():
        try:
            ls_user = ls.users.get(id=ls_user_id)
        except Exception as exc:
            if isinstance(exc, TRANSIENT):
                raise
            return None
    email = (ls_user.email or "").lower()
    user = get_user_model().objects.filter(email__iexact=email).first() if email else None
    if user is not None:
        LabelStudioAccount.objects.get_or_create(user=user, defaults={"ls_user_id": ls_user_id})
    return user


# --- annotations, predictions, ground truth ---------------------------------------------------------

def push_annotation(annotation) -> int:
    """Create or update ``annotation`` in Label Studio as its annotator's (completed_by).

    Idempotent: an annotation already there (by id, or by the same user on the same task when a
    previous push died before its id was saved) is updated, never duplicated."""
    image = annotation.image
    _ensure_task(image)
    ls_user_id = ensure_ls_user(annotation.annotator)
    ls = client()
    # one push of this annotation at a time (a second flush may pick up an edit made while the
    # first was sending); its id and boxes are read again inside, so the later push sends the
    # latest boxes to the annotation the first one created
    with remote_lock("ls-annotation", annotation.pk):
        ls_id = ExpertAnnotation.objects.filter(pk=annotation.pk).values_list("ls_annotation_id", flat=True).first()
        result = boxes_to_result([b.as_box() for b in annotation.boxes.all()], image.width, image.height)
        with translate_errors():
            if not ls_id:
                ls_id = next(
                    (a.id for a in ls.annotations.list(id=image.ls_task_id)
                     if _completed_by_id(a) == ls_user_id and not a.ground_truth),
                    None,
                )
            if ls_id:
                ls.annotations.update(id=ls_id, result=result, completed_by=ls_user_id)
            else:
                ls_id = ls.annotations.create(id=image.ls_task_id, result=result, completed_by=ls_user_id,
                                              request_options=CREATE_ONCE).id
        ExpertAnnotation.objects.filter(pk=annotation.pk).update(ls_annotation_id=ls_id)
    annotation.ls_annotation_id = ls_id
    return ls_id


def _completed_by_id(ls_annotation) -> int | None:
    value = getattr(ls_annotation, "completed_by", None)
    if isinstance(value, dict):
        return value.get("id")
    return getattr(value, "id", value)


def push_predictions(image, boxes: Sequence[Box], *, model_version: str, score: float | None = None) -> int:
    """Model pre-annotations for the image's task (score per box and overall). Idempotent per
    (task, model_version): a push whose reply was lost is found, not made twice."""
    _ensure_task(image)
    ls = client()
    result = boxes_to_result(boxes, image.width, image.height, with_score=True)
    overall = score if score is not None else (max((b.score or 0.0) for b in boxes) if boxes else 0.0)
    with remote_lock("ls-predictions", image.pk), translate_errors():
        existing = next((p for p in ls.predictions.list(task=image.ls_task_id) if p.model_version == model_version),
                        None)
        if existing is not None:
            return existing.id
        prediction = ls.predictions.create(
            task=image.ls_task_id, result=result, score=overall, model_version=model_version,
            request_options=CREATE_ONCE,
        )
    return prediction.id


def push_ground_truth(image, boxes: Sequence[Box], *, reviewer=None) -> int:
    """Write the image's ground truth as a Label Studio annotation marked ground_truth."""
    _ensure_task(image)
    ls = client()
    result = boxes_to_result(boxes, image.width, image.height)
    kwargs = {"completed_by": ensure_ls_user(reviewer)} if reviewer is not None else {}
    with remote_lock("ls-ground-truth", image.pk), translate_errors():  # never two ground truths
        existing = next((a for a in ls.annotations.list(id=image.ls_task_id) if a.ground_truth), None)
        if existing:
            ls.annotations.update(id=existing.id, result=result, ground_truth=True, **kwargs)
            return existing.id
        return ls.annotations.create(id=image.ls_task_id, result=result, ground_truth=True,
                                     request_options=CREATE_ONCE, **kwargs).id


def task_annotations(task_id: int) -> list:
    ls = client()
    with translate_errors():
        return list(ls.annotations.list(id=task_id))
