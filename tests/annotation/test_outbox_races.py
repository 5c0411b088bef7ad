"""The outbox against the real stack: PostgreSQL, a real Label Studio server, live webhooks.

A dataset imported after the last sync has no Label Studio project yet; its first pushes race
each other and Label Studio's webhooks (delivered synchronously while Label Studio answers our
own annotation pushes). Nothing may jam, multiply or be lost."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from annotation import labelstudio
from annotation.geometry import Box
from annotation.models import (
    Assignment,
    Dataset,
    ExpertAnnotation,
    Image,
    LabelStudioAccount,
    OutboxMessage,
)
from annotation.services import (
    OUTBOX_RETRY_BASE_S,
    flush_outbox,
    submit_annotation,
)
from tests.annotation.conftest import import_pngs
from tests.helpers import wait_until

pytestmark = [pytest.mark.labelstudio, pytest.mark.django_db(transaction=True)]


def _dataset(tmp_path, name, n):
    images = import_pngs(tmp_path / name, name, n, seed=sum(map(ord, name)) * 100, size=(160, 120), prefix=name)
    return images[0].dataset, images


def _submit(image, user, boxes):
    Assignment.objects.create(image=image, annotator=user, expires_at=timezone.now() + timedelta(hours=1))
    return submit_annotation(image=image, annotator=user, boxes=boxes)


def _in_threads(*targets):
    """Run each callable in its own thread (own database connection); re-raise the first error."""
    errors = []

    def run(fn):
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(fn,)) for fn in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]


def _projects_titled(title):
    return [p for p in labelstudio.client().projects.list() if p.title == title]


def test_a_new_dataset_gets_one_project_and_each_submission_once_while_webhooks_arrive(
        label_studio, live_server, settings, tmp_path, make_user):
    settings.LABEL_STUDIO_WEBHOOK_URL = live_server.url + "/api/labelstudio/webhook/"
    old, old_images = _dataset(tmp_path, "race-old", 2)
    labelstudio.push_images(old)  # synced before: project, webhook, tasks
    old_images = list(Image.objects.filter(dataset=old).order_by("original_name"))
    ls_only = make_user("ls-only@example.org", roles=["pathologist"])
    ls_only_id = labelstudio.ensure_ls_user(ls_only)
    experts = [make_user(f"race{i}@example.org", roles=["pathologist"]) for i in range(2)]
    for user in experts:
        labelstudio.ensure_ls_user(user)

    fresh, images = _dataset(tmp_path, "race-new", 3)  # imported after the last sync: no project
    expected = {}
    for i, image in enumerate(images):
        for k, user in enumerate(experts):
            boxes = [Box(5.0 + i + 10 * k, 6.0, 20.0, 15.0, "HSIL" if k else "LSIL")]
            annotation = _submit(image, user, boxes)
            expected[annotation.pk] = boxes
    assert OutboxMessage.objects.filter(status="pending").count() == len(expected)

    def ls_side_work():  # someone annotating in Label Studio itself: webhooks arrive meanwhile
        ls = labelstudio.client()
        for image in old_images:
            ls.annotations.create(id=image.ls_task_id, completed_by=ls_only_id,
                                  result=labelstudio.boxes_to_result([Box(1.0, 1.0, 9.0, 9.0, "ASC-US")],
                                                                     image.width, image.height))

    target = next(pk for pk in expected if ExpertAnnotation.objects.get(pk=pk).annotator == experts[0])
    edited = [Box(50.0, 40.0, 30.0, 30.0, "SCC"), Box(100.0, 10.0, 20.0, 20.0, "ASC-H")]

    def edit_while_its_push_is_in_flight():  # the pathologist changes their mind meanwhile
        def claimed_or_sent():
            msg = OutboxMessage.objects.filter(kind="push_annotation", object_id=target).order_by("-id").first()
            return msg.status == "done" or (msg.next_attempt_at and msg.next_attempt_at > timezone.now())

        wait_until(claimed_or_sent, timeout=60, interval=0.02, message="no flush claimed the push")
        annotation = ExpertAnnotation.objects.select_related("image", "annotator").get(pk=target)
        submit_annotation(image=annotation.image, annotator=annotation.annotator, boxes=edited)
        expected[target] = edited

    _in_threads(flush_outbox, flush_outbox, flush_outbox, ls_side_work, edit_while_its_push_is_in_flight)
    for _ in range(5):  # what a racing flush left due, and pushes Label Studio refused under load
        if not OutboxMessage.objects.filter(status="pending").exists():
            break
        OutboxMessage.objects.filter(status="pending").update(next_attempt_at=None)  # skip the back-off
        flush_outbox()

    title = labelstudio.project_title(fresh)
    projects = _projects_titled(title)
    assert len(projects) == 1, (f"{len(projects)} projects for one dataset",
                                [(p.id, p.title, p.created_at) for p in labelstudio.client().projects.list()],
                                list(OutboxMessage.objects.values("kind", "object_id", "status", "attempts", "last_error")))
    fresh.refresh_from_db()
    assert fresh.ls_project_id == projects[0].id
    tasks = list(labelstudio.client().tasks.list(project=fresh.ls_project_id, fields="all"))
    assert sorted(t.data["cytoloop_image_id"] for t in tasks) == sorted(im.pk for im in images)
    assert {Image.objects.get(pk=t.data["cytoloop_image_id"]).ls_task_id for t in tasks} == {t.id for t in tasks}

    assert not OutboxMessage.objects.exclude(status="done").exists(), list(
        OutboxMessage.objects.exclude(status="done").values("kind", "status", "attempts", "last_error"))
    owner = dict(LabelStudioAccount.objects.values_list("ls_user_id", "user_id"))
    for task in tasks:
        remote = [a for a in task.annotations if not a["ground_truth"]]
        by_user = sorted(owner[a["completed_by"]] for a in remote)
        assert by_user == sorted(u.pk for u in experts), "each submission exactly once per task"
        for a in remote:
            local = ExpertAnnotation.objects.get(ls_annotation_id=a["id"])
            image = local.image
            assert sorted(labelstudio.result_to_boxes(a["result"], image.width, image.height),
                          key=Box.sort_key) == sorted(expected[local.pk], key=Box.sort_key)
    # the Label Studio side's own work came back through the live webhook
    assert ExpertAnnotation.objects.filter(annotator=ls_only, image__dataset=old).count() == len(old_images)
    assert Dataset.objects.get(pk=old.pk).ls_project_id == old.ls_project_id


def test_a_failing_push_backs_off_and_never_blocks_later_messages(label_studio, tmp_path, make_user):
    ds, images = _dataset(tmp_path, "backoff", 2)
    labelstudio.push_images(ds)
    expert = make_user("bo@example.org", roles=["pathologist"])
    # the first submission's task was deleted in Label Studio: its push fails (404), the second's works
    Image.objects.filter(pk=images[0].pk).update(ls_task_id=2_000_000_000)
    first = _submit(Image.objects.get(pk=images[0].pk), expert, [Box(2.0, 3.0, 10.0, 10.0, "SCC")])
    good = _submit(images[1], expert, [Box(4.0, 3.0, 10.0, 10.0, "LSIL")])
    bad = OutboxMessage.objects.get(kind="push_annotation", object_id=first.pk)
    assert bad.pk < OutboxMessage.objects.get(kind="push_annotation", object_id=good.pk).pk

    stats = flush_outbox()
    assert (stats["done"], stats["failed"]) == (1, 1)
    good.refresh_from_db()
    assert good.ls_annotation_id is not None
    assert len(labelstudio.task_annotations(Image.objects.get(pk=images[1].pk).ls_task_id)) == 1
    bad.refresh_from_db()
    assert bad.status == "pending" and bad.attempts == 1 and bad.last_error
    first_wait = (bad.next_attempt_at - timezone.now()).total_seconds()
    assert OUTBOX_RETRY_BASE_S * 0.5 < first_wait <= OUTBOX_RETRY_BASE_S * 2 + 1

    assert flush_outbox()["failed"] == 0  # not retried before its time
    OutboxMessage.objects.filter(pk=bad.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    assert flush_outbox()["failed"] == 1
    bad.refresh_from_db()
    second_wait = (bad.next_attempt_at - timezone.now()).total_seconds()
    assert bad.attempts == 2 and second_wait > first_wait * 1.5  # exponential back-off


def test_a_push_that_died_half_way_is_resumed_not_repeated(label_studio, tmp_path):
    """Label Studio has the project and one task, CytoLoop never saved their ids (the push died)."""
    ds, images = _dataset(tmp_path, "half-way", 2)
    ls = labelstudio.client()
    made = ls.projects.create(title=labelstudio.project_title(ds), label_config=labelstudio.label_config())
    ls.projects.import_tasks(id=made.id, return_task_ids=True, request=[
        {"image": labelstudio.image_ls_url(images[0]), "cytoloop_image_id": images[0].pk}])

    assert labelstudio.push_images(ds) == 2
    ds.refresh_from_db()
    assert ds.ls_project_id == made.id and len(_projects_titled(labelstudio.project_title(ds))) == 1
    tasks = list(ls.tasks.list(project=made.id))
    assert sorted(t.data["cytoloop_image_id"] for t in tasks) == sorted(im.pk for im in images)
    assert sorted(Image.objects.filter(dataset=ds).values_list("ls_task_id", flat=True)) == sorted(t.id for t in tasks)
