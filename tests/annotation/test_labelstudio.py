"""The Label Studio backbone against a real Label Studio server (started once per session)."""

import json

import pytest
from django.test import Client
from django.utils import timezone

from annotation import labelstudio
from annotation.geometry import Box
from annotation.models import Assignment, ExpertAnnotation, Image, LabelStudioAccount, OutboxMessage
from annotation.services import (
    flush_outbox,
    reconcile_label_studio,
    submit_annotation,
)
from tests.annotation.conftest import import_pngs
from tests.helpers import wait_until

pytestmark = [pytest.mark.labelstudio, pytest.mark.django_db(transaction=True)]


def _dataset(tmp_path, name, n=2, experts=3):
    images = import_pngs(tmp_path / name, name, n, seed=sum(map(ord, name)) * 100, size=(320, 200), prefix=name,
                         experts_per_image=experts)
    return images[0].dataset, images


def _assign(image, user):
    Assignment.objects.create(image=image, annotator=user, expires_at=timezone.now() + timezone.timedelta(hours=1))


def _ls_boxes(image, ls_annotation):
    data = ls_annotation if isinstance(ls_annotation, dict) else ls_annotation.model_dump()
    return sorted(labelstudio.result_to_boxes(data["result"], image.width, image.height), key=Box.sort_key)


def test_coordinates_round_trip_exactly_through_label_studio_results():
    boxes = [Box(0.0, 0.0, 1636.0, 1088.0, "NILM"), Box(12.345678, 1000.1, 33.3, 7.25, "SCC"),
             Box(1.0 / 3.0, 2.0 / 3.0, 100.0 / 7.0, 9.999999, "ASC-H")]
    back = labelstudio.result_to_boxes(labelstudio.boxes_to_result(boxes, 1636, 1088), 1636, 1088)
    assert back == [Box(round(b.x, 6), round(b.y, 6), round(b.width, 6), round(b.height, 6), b.label) for b in boxes]


def test_project_per_dataset_has_the_bethesda_config_and_overlap(label_studio, tmp_path):
    ds, images = _dataset(tmp_path, "lsproj", experts=3)
    project_id = labelstudio.ensure_project(ds)
    assert labelstudio.ensure_project(ds) == project_id  # idempotent
    project = labelstudio.client().projects.get(id=project_id)
    assert project.maximum_annotations == 3
    for name in ("NILM", "ASC-US", "LSIL", "ASC-H", "HSIL", "SCC"):
        assert f'value="{name}"' in project.label_config
    assert labelstudio.push_images(ds) == 2
    assert labelstudio.push_images(ds) == 0  # each image becomes one task, once
    tasks = list(labelstudio.client().tasks.list(project=project_id))
    assert sorted(t.data["cytoloop_image_id"] for t in tasks) == sorted(im.pk for im in images)


def test_a_submission_reaches_label_studio_as_the_pathologists_own(label_studio, tmp_path, make_user):
    ds, images = _dataset(tmp_path, "lssubmit")
    expert = make_user("ada@example.org", roles=["pathologist"])
    image = images[0]
    _assign(image, expert)
    boxes = [Box(10.0, 20.0, 30.0, 40.0, "HSIL"), Box(100.0, 50.0, 60.0, 60.0, "LSIL")]
    annotation = submit_annotation(image=image, annotator=expert, boxes=boxes)
    assert flush_outbox()["done"] == 1
    annotation.refresh_from_db()
    image.refresh_from_db()
    remote = labelstudio.task_annotations(image.ls_task_id)
    assert len(remote) == 1
    assert remote[0].id == annotation.ls_annotation_id
    assert labelstudio._completed_by_id(remote[0]) == LabelStudioAccount.objects.get(user=expert).ls_user_id
    ls_user = labelstudio.client().users.get(id=labelstudio._completed_by_id(remote[0]))
    assert ls_user.email == "ada@example.org"
    assert _ls_boxes(image, remote[0]) == sorted(boxes, key=Box.sort_key)

    # an edit is pushed to the same Label Studio annotation, never a second one
    submit_annotation(image=image, annotator=expert, boxes=[Box(1.0, 2.0, 3.0, 4.0, "SCC")])
    assert flush_outbox()["done"] == 1
    assert flush_outbox()["done"] == 0
    remote = labelstudio.task_annotations(image.ls_task_id)
    assert len(remote) == 1 and _ls_boxes(image, remote[0]) == [Box(1.0, 2.0, 3.0, 4.0, "SCC")]


def test_nothing_is_lost_or_duplicated_while_label_studio_is_down(label_studio, tmp_path, make_user):
    ds, images = _dataset(tmp_path, "lsdown")
    labelstudio.push_images(ds)
    experts = [make_user(f"e{i}@example.org", roles=["pathologist"]) for i in range(2)]
    for user in experts:
        labelstudio.ensure_ls_user(user)

    label_studio.stop()
    try:
        for i, user in enumerate(experts):
            _assign(images[0], user)
            submit_annotation(image=images[0], annotator=user, boxes=[Box(5.0 + i, 5.0, 20.0, 20.0, "ASC-US")])
        stats = flush_outbox()
        assert stats["done"] == 0 and stats["waiting"] == 1
        pending = OutboxMessage.objects.filter(status="pending")
        assert pending.count() == 2
        assert "unreachable" in pending.order_by("id").first().last_error
        assert ExpertAnnotation.objects.filter(image=images[0]).count() == 2  # acknowledged and kept
    finally:
        label_studio.start()
    labelstudio._client.cache_clear()
    OutboxMessage.objects.update(next_attempt_at=None)  # do not wait for the back-off here
    assert flush_outbox()["done"] == 2
    assert flush_outbox()["done"] == 0
    images[0].refresh_from_db()
    remote = labelstudio.task_annotations(images[0].ls_task_id)
    owners = sorted(labelstudio._completed_by_id(a) for a in remote)
    assert owners == sorted(LabelStudioAccount.objects.filter(user__in=experts).values_list("ls_user_id", flat=True))


def test_annotations_made_in_label_studio_are_mirrored_by_the_webhook(label_studio, live_server, settings,
                                                                      tmp_path, make_user):
    settings.LABEL_STUDIO_WEBHOOK_URL = live_server.url + "/api/labelstudio/webhook/"
    ds, images = _dataset(tmp_path, "lshook")
    labelstudio.push_images(ds)  # creates the project, its webhook and the tasks
    image = Image.objects.get(pk=images[1].pk)
    expert = make_user("grace@example.org", roles=["pathologist"])
    ls_user = labelstudio.ensure_ls_user(expert)
    ls = labelstudio.client()
    box = Box(40.0, 30.0, 50.0, 25.0, "ASC-H")
    created = ls.annotations.create(id=image.ls_task_id, completed_by=ls_user,
                                    result=labelstudio.boxes_to_result([box], image.width, image.height))

    mirrored = wait_until(lambda: ExpertAnnotation.objects.filter(ls_annotation_id=created.id).first(),
                          timeout=30, message="the webhook did not mirror the new annotation")
    assert mirrored.annotator == expert and mirrored.origin == "label_studio"
    assert [b.as_box() for b in mirrored.boxes.all()] == [box]
    assert Assignment.objects.get(image=image, annotator=expert).status == "submitted"

    moved = Box(41.0, 30.0, 50.0, 25.0, "HSIL")
    ls.annotations.update(id=created.id, result=labelstudio.boxes_to_result([moved], image.width, image.height))
    wait_until(lambda: [b.as_box() for b in ExpertAnnotation.objects.get(pk=mirrored.pk).boxes.all()] == [moved],
               timeout=30, message="the webhook did not mirror the moved box")

    ls.annotations.delete(id=created.id)
    wait_until(lambda: not ExpertAnnotation.objects.filter(pk=mirrored.pk).exists(),
               timeout=30, message="the webhook did not delete the mirrored annotation")


def test_reconcile_pulls_what_the_webhook_missed_and_is_idempotent(label_studio, tmp_path, make_user):
    ds, images = _dataset(tmp_path, "lsrec")
    labelstudio.push_images(ds)  # no webhook configured: only reconcile can see LS-side work
    image = Image.objects.get(pk=images[0].pk)
    expert = make_user("lin@example.org", roles=["pathologist"])
    ls_user = labelstudio.ensure_ls_user(expert)
    ls = labelstudio.client()
    box = Box(3.0, 4.0, 10.0, 10.0, "LSIL")
    created = ls.annotations.create(id=image.ls_task_id, completed_by=ls_user,
                                    result=labelstudio.boxes_to_result([box], image.width, image.height))
    stats = reconcile_label_studio(dataset=ds)
    assert stats.get("created") == 1
    assert reconcile_label_studio(dataset=ds).get("unchanged") == 1
    assert ExpertAnnotation.objects.filter(ls_annotation_id=created.id).count() == 1
    ls.annotations.delete(id=created.id)
    assert reconcile_label_studio(dataset=ds).get("deleted") == 1
    assert not ExpertAnnotation.objects.filter(ls_annotation_id=created.id).exists()


def test_ground_truth_is_marked_in_label_studio(label_studio, tmp_path, make_user):
    ds, images = _dataset(tmp_path, "lsgt")
    reviewer = make_user("rev@example.org", roles=["reviewer"])
    image = images[0]
    first = labelstudio.push_ground_truth(image, [Box(1.0, 1.0, 9.0, 9.0, "NILM")], reviewer=reviewer)
    again = labelstudio.push_ground_truth(image, [Box(2.0, 1.0, 9.0, 9.0, "HSIL")], reviewer=reviewer)
    assert first == again
    image.refresh_from_db()
    remote = labelstudio.task_annotations(image.ls_task_id)
    assert len(remote) == 1 and remote[0].ground_truth
    assert _ls_boxes(image, remote[0]) == [Box(2.0, 1.0, 9.0, 9.0, "HSIL")]


def test_predictions_are_pushed_with_score_and_model_version(label_studio, tmp_path):
    ds, images = _dataset(tmp_path, "lspred")
    image = images[0]
    labelstudio.push_predictions(image, [Box(5.0, 5.0, 20.0, 20.0, "HSIL", 0.91)], model_version="det-1+cls-1")
    image.refresh_from_db()
    preds = labelstudio.client().predictions.list(task=image.ls_task_id)
    assert len(preds) == 1 and preds[0].model_version == "det-1+cls-1"
    assert preds[0].score == pytest.approx(0.91) and preds[0].result[0]["score"] == pytest.approx(0.91)


# --- the webhook endpoint's own checks (no Label Studio call needed) ---------------------------


@pytest.fixture
def webhook_setup(settings, tmp_path, make_user):
    settings.LABEL_STUDIO_WEBHOOK_SECRET = "s3cret"
    ds, images = _dataset(tmp_path, "hookunit")
    image = images[0]
    Image.objects.filter(pk=image.pk).update(ls_task_id=9001)
    expert = make_user("hook@example.org", roles=["pathologist"])
    LabelStudioAccount.objects.create(user=expert, ls_user_id=4242)
    event = {"action": "ANNOTATION_CREATED", "project": {"id": 1}, "task": {"id": 9001, "data": {}},
             "annotation": {"id": 777, "completed_by": 4242, "ground_truth": False, "task": 9001,
                            "result": labelstudio.boxes_to_result([Box(1.0, 2.0, 3.0, 4.0, "LSIL")], image.width, image.height)}}
    return event, expert


def _hook(event, secret="s3cret", raw=None):
    headers = {"HTTP_X_CYTOLOOP_SECRET": secret} if secret is not None else {}
    return Client().post("/api/labelstudio/webhook/", data=raw if raw is not None else json.dumps(event),
                         content_type="application/json", **headers)


def test_the_same_webhook_event_twice_changes_nothing(webhook_setup):
    event, expert = webhook_setup
    assert _hook(event).json() == {"outcome": "created"}
    before = list(ExpertAnnotation.objects.values_list("pk", "updated_at"))
    assert _hook(event).json() == {"outcome": "unchanged"}
    assert list(ExpertAnnotation.objects.values_list("pk", "updated_at")) == before


@pytest.mark.parametrize("secret", [None, "", "wrong"])
def test_the_webhook_refuses_a_missing_or_wrong_secret(webhook_setup, secret):
    event, _ = webhook_setup
    response = _hook(event, secret=secret)
    assert response.status_code == 403 and "X-CytoLoop-Secret" in response.json()["detail"]
    assert not ExpertAnnotation.objects.exists()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda e: "not json{", "not JSON"),
        (lambda e: {**e, "action": "PROJECT_DELETED"}, "unsupported action"),
        (lambda e: {k: v for k, v in e.items() if k != "annotation"}, "no 'annotation'"),
        (lambda e: {**e, "annotation": {**e["annotation"], "result": "boxes"}}, "must be a list"),
        (lambda e: {**e, "annotation": {**e["annotation"], "completed_by": "ada"}}, "completed_by"),
        (lambda e: {**e, "annotation": {**e["annotation"], "result": [{**e["annotation"]["result"][0],
            "value": {**e["annotation"]["result"][0]["value"], "x": 99.0, "width": 5.0}}]}}, "past the image width"),
        (lambda e: {**e, "annotation": {**e["annotation"], "result": [{**e["annotation"]["result"][0],
            "value": {**e["annotation"]["result"][0]["value"], "rectanglelabels": ["Koilocyte"]}}]}}, "unknown label"),
    ],
)
def test_a_malformed_webhook_gets_a_400_and_stores_nothing(webhook_setup, mutate, message):
    event, _ = webhook_setup
    changed = mutate(event)
    response = _hook(None, raw=changed) if isinstance(changed, str) else _hook(changed)
    assert response.status_code == 400, response.content
    assert message in response.json()["detail"]
    assert not ExpertAnnotation.objects.exists()


def test_a_submission_is_kept_and_answers_at_once_when_the_broker_is_down(tmp_path, make_user):
    """The pathologist's submit succeeds with Redis unreachable, in well under a second (it
    used to wait ~6 s per enqueue for kombu's reconnect loop); the outbox row waits."""
    import subprocess
    import sys

    from tests.helpers import ROOT, child_env

    ds, images = _dataset(tmp_path, "nobroker")
    expert = make_user("rb@example.org", roles=["pathologist"])
    _assign(images[0], expert)
    code = (
        "from annotation.models import Image; from django.contrib.auth import get_user_model;"
        "from annotation.services import submit_annotation; from annotation.geometry import Box;"
        f"import time; image = Image.objects.get(pk={images[0].pk});"
        " user = get_user_model().objects.get(username='rb@example.org'); t = time.monotonic();"
        " a = submit_annotation(image=image, annotator=user, boxes=[Box(1.0, 1.0, 5.0, 5.0, 'HSIL')]);"
        " print('stored', a.pk, 'in', time.monotonic() - t)"
    )
    env = {**child_env(), "REDIS_URL": "redis://127.0.0.1:1/0", "MEDIA_ROOT": str(tmp_path)}
    result = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "stored" in result.stdout
    assert float(result.stdout.split()[-1]) < 1.0, result.stdout  # both enqueues (outbox, consensus) gave up at once
    assert ExpertAnnotation.objects.filter(annotator=expert).count() == 1
    assert OutboxMessage.objects.filter(kind="push_annotation", status="pending").count() == 1
