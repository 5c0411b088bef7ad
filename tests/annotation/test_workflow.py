"""Queue, submission, blind reads and bad input: the API on the real PostgreSQL."""

import json
import threading

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from annotation.geometry import Box
from annotation.models import Assignment, ExpertAnnotation, ExpertBox, Image, OutboxMessage
from annotation.services import (
    NotAssigned,
    next_assignment,
    submit_annotation,
)
from tests.annotation.conftest import import_pngs

pytestmark = pytest.mark.django_db


@pytest.fixture
def images(tmp_path):
    return import_pngs(tmp_path / "imgs", "wf", 4, seed=500, prefix="i")


@pytest.fixture
def experts(make_user):
    return [make_user(f"p{i}@example.org", roles=["pathologist"]) for i in range(3)]


def _client(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


def _post(client, data):
    return client.post("/api/annotations/", data=json.dumps(data), content_type="application/json")


def test_each_image_goes_to_n_distinct_experts_one_at_a_time(images, experts):
    a = next_assignment(annotator=experts[0])
    b = next_assignment(annotator=experts[1])
    assert a.image_id != b.image_id  # the first image is locked to expert 0
    assert next_assignment(annotator=experts[0]).pk == a.pk  # holding one: the same again
    submit_annotation(image=a.image, annotator=experts[0], boxes=[])
    c = next_assignment(annotator=experts[1])
    assert c.pk == b.pk
    submit_annotation(image=b.image, annotator=experts[1], boxes=[])
    # expert 1 can now take image a (done by expert 0 only); expert 0 never gets a again
    taken = {next_assignment(annotator=experts[1]).image_id}
    assert a.image_id in taken or len(taken) == 1
    seen0 = set()
    for _ in range(5):
        nxt = next_assignment(annotator=experts[0])
        if nxt is None:
            break
        seen0.add(nxt.image_id)
        submit_annotation(image=nxt.image, annotator=experts[0], boxes=[])
    assert a.image_id not in seen0


def test_an_image_with_its_n_annotations_leaves_every_queue(images, experts):
    target = images[0]
    for user in experts[:2]:
        Assignment.objects.create(image=target, annotator=user, expires_at=timezone.now())
        Assignment.objects.filter(image=target, annotator=user).update(status="active")
        submit_annotation(image=target, annotator=user, boxes=[])
        Assignment.objects.filter(image=target, annotator=user).update(status="submitted")
    for _ in range(len(images)):
        nxt = next_assignment(annotator=experts[2])
        if nxt is None:
            break
        assert nxt.image_id != target.pk
        submit_annotation(image=nxt.image, annotator=experts[2], boxes=[])


def test_locks_expire_and_the_image_returns_to_the_queue(images, experts, settings):
    first = next_assignment(annotator=experts[0])
    Assignment.objects.filter(pk=first.pk).update(expires_at=timezone.now() - timezone.timedelta(seconds=1))
    other = next_assignment(annotator=experts[1])
    assert other.image_id == first.image_id
    assert Assignment.objects.get(pk=first.pk).status == "released"


def test_queue_follows_the_ranking_order(images, experts):
    Image.objects.filter(pk=images[3].pk).update(queue_rank=1.0)
    Image.objects.filter(pk=images[2].pk).update(queue_rank=2.0)
    assert next_assignment(annotator=experts[0]).image_id == images[3].pk
    assert next_assignment(annotator=experts[1]).image_id == images[2].pk


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_never_hand_out_the_same_image(images, experts):
    results, errors = [], []
    barrier = threading.Barrier(3)

    def claim(user):
        try:
            barrier.wait()
            assignment = next_assignment(annotator=user)
            results.append(assignment.image_id if assignment else None)
        except Exception as exc:  # pragma: no cover - shown in the assertion
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=claim, args=(u,)) for u in experts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 3 and len(set(results)) == 3
    assert Assignment.objects.filter(status="active").count() == 3


def test_submit_through_the_api_stores_boxes_and_queues_the_push(images, experts):
    user = experts[0]
    assignment = next_assignment(annotator=user)
    response = _post(_client(user), {"image": assignment.image_id, "boxes": [
        {"x": 10, "y": 10, "width": 30, "height": 20, "label": "HSIL"},
        {"x": 100.5, "y": 40, "width": 50, "height": 50, "label": "asc-us"},
    ]})
    assert response.status_code == 201, response.content
    body = response.json()
    assert [b["label"] for b in body["boxes"]] == ["HSIL", "ASC-US"]
    assert Assignment.objects.get(pk=assignment.pk).status == "submitted"
    assert OutboxMessage.objects.filter(kind="push_annotation", status="pending").count() == 1


def test_the_editor_may_send_label_studio_results_in_percent(images, experts):
    user = experts[0]
    assignment = next_assignment(annotator=user)
    result = [{"from_name": "cluster", "to_name": "image", "type": "rectanglelabels",
               "original_width": 200, "original_height": 100,
               "value": {"x": 5.0, "y": 10.0, "width": 25.0, "height": 50.0, "rotation": 0,
                         "rectanglelabels": ["SCC"]}}]
    response = _post(_client(user), {"image": assignment.image_id, "result": result})
    assert response.status_code == 201, response.content
    box = ExpertBox.objects.get()
    assert (box.x, box.y, box.width, box.height, box.label) == (10.0, 10.0, 50.0, 50.0, "SCC")


@pytest.mark.parametrize(
    ("box", "message"),
    [
        ({"x": 190, "y": 10, "width": 30, "height": 20, "label": "HSIL"}, "past the image width"),
        ({"x": 10, "y": 10, "width": 0, "height": 20, "label": "HSIL"}, "size must be positive"),
        ({"x": 10, "y": 10, "width": -5, "height": 20, "label": "HSIL"}, "size must be positive"),
        ({"x": "nan", "y": 10, "width": 5, "height": 20, "label": "HSIL"}, "finite"),
        ({"x": 10, "y": 10, "width": 5, "height": 20, "label": "Carcinoid"}, "unknown label"),
        ({"x": 10, "y": 10, "width": 5, "label": "HSIL"}, "required"),
    ],
)
def test_bad_boxes_get_a_400_saying_what_is_wrong_and_nothing_is_stored(images, experts, box, message):
    user = experts[0]
    assignment = next_assignment(annotator=user)
    good = {"x": 1, "y": 1, "width": 5, "height": 5, "label": "NILM"}
    response = _post(_client(user), {"image": assignment.image_id, "boxes": [good, box]})
    assert response.status_code == 400
    assert message in json.dumps(response.json())
    assert not ExpertAnnotation.objects.exists() and not OutboxMessage.objects.exists()
    assert Assignment.objects.get(pk=assignment.pk).status == "active"


def test_a_nan_literal_in_json_is_refused(images, experts):
    user = experts[0]
    assignment = next_assignment(annotator=user)
    body = (f'{{"image": {assignment.image_id}, "boxes": '
            '[{"x": NaN, "y": 1, "width": 2, "height": 2, "label": "NILM"}]}')
    response = _client(user).post("/api/annotations/", data=body, content_type="application/json")
    assert response.status_code == 400
    assert not ExpertAnnotation.objects.exists()


def test_annotating_an_image_not_assigned_to_you_is_refused(images, experts):
    next_assignment(annotator=experts[0])
    response = _post(_client(experts[1]), {"image": images[0].pk, "boxes": [], "no_findings": True})
    assert response.status_code == 403
    assert "not assigned" in response.json()["detail"]
    with pytest.raises(NotAssigned):
        submit_annotation(image=images[0], annotator=experts[1], boxes=[])
    assert not ExpertAnnotation.objects.exists()


def test_reviewers_cannot_submit_expert_annotations(images, make_user):
    reviewer = make_user("r@example.org", roles=["reviewer"])
    response = _post(_client(reviewer), {"image": images[0].pk, "boxes": []})
    assert response.status_code == 403


def test_blind_annotator_cannot_read_another_experts_boxes_through_any_endpoint(images, experts, make_user):
    image = images[0]
    for user, label, x in ((experts[0], "HSIL", 11.0), (experts[1], "LSIL", 77.0)):
        Assignment.objects.create(image=image, annotator=user, expires_at=timezone.now() + timezone.timedelta(hours=1))
        submit_annotation(image=image, annotator=user, boxes=[Box(x, 5.0, 20.0, 20.0, label)])
    mine = _client(experts[0])
    paths = ["/api/annotations/", f"/api/images/{image.pk}/annotations/", "/api/schema/",
             f"/datasets/{image.dataset.name}/", f"/datasets/{image.dataset.name}/images/{image.pk}/",
             "/annotate/", "/"]
    for path in paths:
        response = mine.get(path)
        assert response.status_code == 200, path
        text = response.content.decode()
        assert "p1@example.org" not in text, path
        assert "LSIL" not in text or path.startswith("/datasets/") or path == "/api/schema/", path
        assert "77.0" not in text, path
    own = mine.get(f"/api/images/{image.pk}/annotations/").json()
    assert [a["annotator"] for a in own] == ["p0@example.org"]
    # a third pathologist who has not annotated sees nothing at all
    assert _client(experts[2]).get(f"/api/images/{image.pk}/annotations/").json() == []
    # once consensus exists, experts may compare
    Image.objects.filter(pk=image.pk).update(consensus_at=timezone.now())
    after = mine.get(f"/api/images/{image.pk}/annotations/").json()
    assert sorted(a["annotator"] for a in after) == ["p0@example.org", "p1@example.org"]


def test_the_api_refuses_anonymous_users(images):
    assert Client().get("/api/annotations/").status_code in (401, 403)
    assert Client().post("/api/queue/next/").status_code in (401, 403)
