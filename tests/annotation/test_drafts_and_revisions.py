"""Saved work is never lost or overwritten: revisions (409 for a stale editor), drafts per
assignment, the explicit "no findings" answer, skip, model help, and release on log-out.
The API on the real PostgreSQL."""

import json
import re

import pytest
from django.test import Client

from annotation.geometry import Box
from annotation.models import (
    AnnotationDraft,
    Assignment,
    ExpertAnnotation,
    ExpertBox,
    Image,
    OutboxMessage,
    PredictionBox,
)
from annotation.services import next_assignment, submit_annotation
from tests.annotation.conftest import import_pngs

pytestmark = pytest.mark.django_db

BOX = {"x": 10, "y": 10, "width": 30, "height": 20, "label": "HSIL"}


@pytest.fixture
def image(tmp_path):
    return import_pngs(tmp_path / "imgs", "drafts", 2, seed=900, prefix="d")[0]


@pytest.fixture
def expert(make_user, image):
    user = make_user("dora@example.org", roles=["pathologist"])
    assert next_assignment(annotator=user).image == image
    return user


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _submit(client, image, **body):
    return client.post("/api/annotations/", data=json.dumps({"image": image.pk, **body}),
                       content_type="application/json")


def _draft(client, image, **body):
    return client.put(f"/api/images/{image.pk}/draft/", data=json.dumps(body),
                      content_type="application/json")


def _editor_data(client, image) -> dict:
    html = client.get(f"/annotate/{image.pk}/editor/").content.decode()
    match = re.search(r'<script id="editor-data" type="application/json">(.*?)</script>', html, re.S)
    return json.loads(match.group(1))


def test_a_save_from_a_stale_editor_gets_409_with_what_is_saved_and_changes_nothing(image, expert):
    client = _client(expert)
    first = _submit(client, image, boxes=[BOX, {**BOX, "x": 100, "label": "LSIL"}], revision=0)
    assert first.status_code == 201, first.content
    assert first.json()["revision"] == 1
    # the Back button's (or a second tab's) editor, opened before that submit, saves no box
    stale = _submit(client, image, boxes=[], no_findings=True, revision=0)
    assert stale.status_code == 409
    body = stale.json()
    assert body["detail"] == (
        "This image was saved elsewhere since you opened it (revision 1); reloaded what is saved now.")
    assert body["revision"] == 1
    assert sorted(b["label"] for b in body["annotation"]["boxes"]) == ["HSIL", "LSIL"]
    assert len(body["result"]) == 2
    annotation = ExpertAnnotation.objects.get(annotator=expert)
    assert (annotation.revision, annotation.boxes.count()) == (1, 2)
    assert OutboxMessage.objects.filter(kind="push_annotation").count() == 1


def test_an_update_naming_the_saved_revision_replaces_the_boxes_and_bumps_it(image, expert):
    client = _client(expert)
    assert _submit(client, image, boxes=[BOX], revision=None).status_code == 201
    again = _submit(client, image, boxes=[{**BOX, "label": "SCC"}], revision=1)
    assert again.status_code == 201, again.content
    annotation = ExpertAnnotation.objects.get(annotator=expert)
    assert annotation.revision == 2
    assert [b.label for b in annotation.boxes.all()] == ["SCC"]


def test_an_old_client_without_a_revision_cannot_overwrite_a_submitted_annotation(image, expert):
    submit_annotation(image=image, annotator=expert, boxes=[Box(1, 1, 5, 5, "NILM")])
    response = _submit(_client(expert), image, boxes=[BOX])
    assert response.status_code == 409
    assert [b.label for b in ExpertAnnotation.objects.get(annotator=expert).boxes.all()] == ["NILM"]


def test_an_empty_submit_without_the_no_findings_flag_is_a_400_saying_so(image, expert):
    response = _submit(_client(expert), image, boxes=[], revision=0)
    assert response.status_code == 400
    assert '"no_findings": true' in response.json()["no_findings"][0]
    assert not ExpertAnnotation.objects.exists()
    assert Assignment.objects.get(annotator=expert).status == Assignment.Status.ACTIVE


def test_no_findings_is_stored_as_a_deliberate_empty_answer(image, expert):
    response = _submit(_client(expert), image, result=[], no_findings=True, revision=0)
    assert response.status_code == 201, response.content
    annotation = ExpertAnnotation.objects.get(annotator=expert)
    assert annotation.boxes.count() == 0
    assert Assignment.objects.get(annotator=expert).status == Assignment.Status.SUBMITTED


def test_no_findings_with_boxes_is_refused(image, expert):
    response = _submit(_client(expert), image, boxes=[BOX], no_findings=True, revision=0)
    assert response.status_code == 400
    assert "2" not in response.json()["no_findings"][0] and "1 boxes" in response.json()["no_findings"][0]
    assert not ExpertAnnotation.objects.exists()


def test_skip_costs_no_vote(image, expert):
    response = _client(expert).post(f"/api/images/{image.pk}/skip/")
    assert response.status_code == 200
    assert not ExpertAnnotation.objects.exists()
    assert Assignment.objects.get(annotator=expert).status == Assignment.Status.SKIPPED
    assert next_assignment(annotator=expert).image != image


def test_a_draft_is_kept_restored_in_the_editor_and_removed_by_the_submit(image, expert):
    client = _client(expert)
    saved = _draft(client, image, boxes=[BOX, {**BOX, "y": 50, "label": "ASC-H"}], revision=0)
    assert saved.status_code == 200, saved.content
    assert saved.json()["boxes"] == 2
    draft = AnnotationDraft.objects.get(assignment__annotator=expert)
    assert [b["label"] for b in draft.boxes] == ["HSIL", "ASC-H"]

    data = _editor_data(client, image)
    assert data["revision"] == 0 and data["submitted"] is False
    assert data["task"]["annotations"] == []  # nothing submitted: the draft comes on its own
    assert [r["value"]["rectanglelabels"] for r in data["draft"]["result"]] == [["HSIL"], ["ASC-H"]]
    assert re.fullmatch(r"Restored your unsaved draft from \d\d:\d\d, \d+ \w{3} \d{4} UTC\.",
                        data["draft"]["note"])

    assert _submit(client, image, boxes=[BOX], revision=0).status_code == 201
    assert not AnnotationDraft.objects.exists()
    assert _editor_data(client, image)["draft"] is None


def test_a_draft_over_a_submitted_annotation_replaces_its_boxes_in_the_editor(image, expert):
    client = _client(expert)
    assert _submit(client, image, boxes=[BOX], revision=0).status_code == 201
    assert _draft(client, image, boxes=[{**BOX, "label": "NILM"}], revision=1).status_code == 200
    data = _editor_data(client, image)
    assert data["revision"] == 1 and data["submitted"] is True
    (annotation,) = data["task"]["annotations"]
    assert [r["value"]["rectanglelabels"] for r in annotation["result"]] == [["NILM"]]


def test_a_draft_from_a_stale_editor_gets_409_and_a_stale_draft_is_never_restored(image, expert):
    client = _client(expert)
    assert _draft(client, image, boxes=[{**BOX, "label": "LSIL"}], revision=0).status_code == 200
    submit_annotation(image=image, annotator=expert, boxes=[Box(1, 1, 5, 5, "NILM")])  # elsewhere
    response = _draft(client, image, boxes=[BOX], revision=0)
    assert response.status_code == 409
    assert "revision 1" in response.json()["detail"]
    AnnotationDraft.objects.update(base_revision=None)  # a draft left over from before that save
    data = _editor_data(client, image)
    assert data["draft"] is None
    assert [r["value"]["rectanglelabels"] for r in data["task"]["annotations"][0]["result"]] == [["NILM"]]


def test_a_draft_for_an_image_not_assigned_to_you_is_refused(image, expert, make_user):
    other = make_user("otto@example.org", roles=["pathologist"])
    response = _draft(_client(other), image, boxes=[BOX], revision=0)
    assert response.status_code == 403
    assert not AnnotationDraft.objects.exists()


def test_a_malformed_draft_gets_a_400_saying_what_is_wrong(image, expert):
    response = _draft(_client(expert), image, boxes=[{**BOX, "width": "wide"}], revision=0)
    assert response.status_code == 400
    assert "width" in json.dumps(response.json()["boxes"]) and "valid number" in response.content.decode()
    assert not AnnotationDraft.objects.exists()


def test_log_out_releases_the_held_image_and_keeps_its_draft(image, expert):
    client = _client(expert)
    assert _draft(client, image, boxes=[BOX], revision=0).status_code == 200
    client.post("/logout/")
    assignment = Assignment.objects.get(annotator=expert)
    assert assignment.status == Assignment.Status.RELEASED
    assert AnnotationDraft.objects.filter(assignment=assignment).exists()
    # coming back later: the same image, with the draft
    assert next_assignment(annotator=expert).image == image
    assert _editor_data(_client(expert), image)["draft"]["result"][0]["value"]["rectanglelabels"] == ["HSIL"]


def test_boxes_from_pre_annotations_record_the_model_and_whether_they_were_changed(image, expert):
    kept = PredictionBox.objects.create(image=image, x=10, y=10, width=30, height=20, label="HSIL",
                                        score=0.9, model_version="det-3+cls-2")
    moved = PredictionBox.objects.create(image=image, x=100, y=40, width=40, height=40, label="LSIL",
                                         score=0.7, model_version="det-3+cls-2")
    relabelled = PredictionBox.objects.create(image=image, x=150, y=5, width=20, height=20, label="ASC-US",
                                              score=0.6, model_version="det-3+cls-2")
    response = _submit(_client(expert), image, revision=0, boxes=[
        {**BOX, "x": 10.4, "prediction": kept.pk},  # within 0.5 px: unchanged
        {"x": 104, "y": 40, "width": 40, "height": 40, "label": "LSIL", "prediction": moved.pk},
        {"x": 150, "y": 5, "width": 20, "height": 20, "label": "ASC-H", "prediction": relabelled.pk},
        {"x": 60, "y": 60, "width": 10, "height": 10, "label": "SCC"},
    ])
    assert response.status_code == 201, response.content
    rows = {b.label: b for b in ExpertBox.objects.all()}
    assert (rows["HSIL"].prediction_id, rows["HSIL"].prediction_model, rows["HSIL"].prediction_changed) == (
        kept.pk, "det-3+cls-2", False)
    assert rows["HSIL"].accepted_unchanged
    assert rows["LSIL"].prediction_changed is True and rows["ASC-H"].prediction_changed is True
    assert (rows["SCC"].prediction_id, rows["SCC"].prediction_model, rows["SCC"].prediction_changed) == (
        None, "", None)


def test_a_region_id_naming_a_prediction_of_the_image_is_recorded_from_label_studio_results(image, expert):
    prediction = PredictionBox.objects.create(image=image, x=20, y=10, width=40, height=30, label="HSIL",
                                              score=0.9, model_version="m1")
    result = [{"id": f"pred-{prediction.pk}", "from_name": "cluster", "to_name": "image",
               "type": "rectanglelabels", "origin": "prediction",
               "value": {"x": 10.0, "y": 10.0, "width": 20.0, "height": 30.0, "rotation": 0,
                         "rectanglelabels": ["HSIL"]}}]
    assert _submit(_client(expert), image, result=result, revision=0).status_code == 201
    (box,) = ExpertBox.objects.all()
    assert (box.prediction_id, box.prediction_model, box.prediction_changed) == (prediction.pk, "m1", False)
    # re-opened, the box keeps its region id: a re-submit still knows where it came from
    (annotation,) = _editor_data(_client(expert), image)["task"]["annotations"]
    assert annotation["result"][0]["id"] == f"pred-{prediction.pk}"


def test_a_prediction_id_of_another_image_is_refused(image, expert):
    other_image = Image.objects.exclude(pk=image.pk).get()
    foreign = PredictionBox.objects.create(image=other_image, x=1, y=1, width=5, height=5, label="HSIL")
    response = _submit(_client(expert), image, boxes=[{**BOX, "prediction": foreign.pk}], revision=0)
    assert response.status_code == 400
    assert "not one of this image's predictions" in response.json()["boxes"][0]
    assert not ExpertAnnotation.objects.exists()


def test_annotate_and_editor_pages_are_never_cached(image, expert):
    client = _client(expert)
    for path in (f"/annotate/{image.pk}/", f"/annotate/{image.pk}/editor/"):
        cache_control = client.get(path)["Cache-Control"]
        assert "no-store" in cache_control and "no-cache" in cache_control, (path, cache_control)
