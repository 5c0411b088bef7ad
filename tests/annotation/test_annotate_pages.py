"""The pathologist's annotate pages: queue, start/next, skip, the annotate page and the
embedded Label Studio editor page (blind: only the user's own boxes reach the editor)."""

import json
import re

import pytest
from django.test import Client

from annotation.geometry import Box
from annotation.models import Assignment, PredictionBox
from annotation.services import next_assignment, submit_annotation
from tests.annotation.conftest import import_pngs

pytestmark = pytest.mark.django_db


@pytest.fixture
def images(tmp_path):
    return import_pngs(tmp_path / "imgs", "pages", 3, seed=700, prefix="smear-")


@pytest.fixture
def pathologist(make_user):
    return make_user("ada@example.org", roles=["pathologist"])


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _editor_data(response) -> dict:
    match = re.search(
        r'<script id="editor-data" type="application/json">(.*?)</script>',
        response.content.decode(),
        re.S,
    )
    assert match, "the editor page passes its data with json_script"
    return json.loads(match.group(1))


def _text(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def test_queue_page_says_on_first_visit_how_many_images_wait_and_offers_start(images, pathologist):
    response = _client(pathologist).get("/annotate/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="queue-progress"' in html
    assert "3 images waiting for you; none done yet." in _text(html)
    assert "0 / 0" not in _text(html)
    assert re.search(r'<button class="primary" type="submit" id="start">Start annotating</button>', html)


def test_queue_page_counts_done_and_waiting_after_a_submit(images, pathologist):
    image = next_assignment(annotator=pathologist).image
    submit_annotation(image=image, annotator=pathologist, boxes=[Box(10, 20, 30, 40, "HSIL")])
    text = _text(_client(pathologist).get("/annotate/").content.decode())
    assert "1 done, 2 waiting for you." in text and "Continue" in text


def test_queue_page_with_nothing_to_do_says_so_and_offers_no_start(pathologist):
    html = _client(pathologist).get("/annotate/").content.decode()
    assert "No images are waiting for you yet." in _text(html)
    assert 'id="start"' not in html


def test_queue_page_is_refused_to_a_reviewer(client_as):
    assert client_as("reviewer").get("/annotate/").status_code == 403


def test_start_claims_the_next_image_and_opens_its_annotate_page(images, pathologist):
    response = _client(pathologist).post("/annotate/next/")
    assignment = Assignment.objects.get(annotator=pathologist)
    assert assignment.status == Assignment.Status.ACTIVE
    assert response.status_code == 302
    assert response["Location"] == f"/annotate/{assignment.image_id}/"


def test_start_is_a_post_only(images, pathologist):
    assert _client(pathologist).get("/annotate/next/").status_code == 405
    assert not Assignment.objects.exists()


def test_start_says_nothing_left_when_the_queue_is_empty(pathologist):
    response = _client(pathologist).post("/annotate/next/", follow=True)
    assert response.redirect_chain == [("/annotate/", 302)]
    assert "Nothing left in your queue" in response.content.decode()


def test_annotate_page_embeds_the_editor_in_an_iframe_beside_the_side_panel(images, pathologist):
    image = next_assignment(annotator=pathologist).image
    response = _client(pathologist).get(f"/annotate/{image.pk}/")
    assert response.status_code == 200
    html = response.content.decode()
    assert f'<iframe id="editor" src="/annotate/{image.pk}/editor/"' in html
    assert image.original_name in html and "pages" in html
    for hotkey, label in enumerate(("NILM", "ASC-US", "LSIL", "ASC-H", "HSIL", "SCC"), start=1):
        assert f'data-hotkey="{hotkey}" data-label="{label}"' in html
    assert 'id="submit-annotation"' in html and f'action="/annotate/{image.pk}/skip/"' in html
    assert "Ctrl</kbd>+<kbd>Enter" in html
    assert "label-studio/main.css" not in html  # antd's global reset stays inside the iframe


def test_annotate_and_editor_pages_refuse_an_image_not_assigned_to_the_user(
    images, pathologist, make_user
):
    other = make_user("bob@example.org", roles=["pathologist"])
    theirs = next_assignment(annotator=other).image
    client = _client(pathologist)
    page = client.get(f"/annotate/{theirs.pk}/")
    assert page.status_code == 403
    assert "not assigned to you" in page.content.decode()
    editor = client.get(f"/annotate/{theirs.pk}/editor/")
    assert editor.status_code == 403
    assert "not assigned to you" in editor.content.decode()
    assert "editor-data" not in editor.content.decode()


def test_annotate_pages_are_refused_to_a_reviewer(images, client_as):
    client = client_as("reviewer")
    assert client.get(f"/annotate/{images[0].pk}/").status_code == 403
    assert client.get(f"/annotate/{images[0].pk}/editor/").status_code == 403


def test_editor_holds_the_users_own_boxes_and_not_another_experts(images, pathologist, make_user):
    other = make_user("bob@example.org", roles=["pathologist"])
    image = next_assignment(annotator=pathologist).image
    submit_annotation(image=image, annotator=pathologist, boxes=[Box(10, 20, 30, 40, "LSIL")])
    assert next_assignment(annotator=other).image == image  # the second expert of the same image
    submit_annotation(
        image=image, annotator=other, boxes=[Box(100, 50, 60, 30, "SCC"), Box(5, 5, 9, 9, "SCC")]
    )

    response = _client(pathologist).get(f"/annotate/{image.pk}/editor/")
    assert response.status_code == 200
    data = _editor_data(response)
    annotations = data["task"]["annotations"]
    assert len(annotations) == 1
    (item,) = annotations[0]["result"]
    assert item["value"]["rectanglelabels"] == ["LSIL"]
    assert item["value"]["x"] == pytest.approx(5.0) and item["value"]["width"] == pytest.approx(
        15.0
    )
    assert "SCC" not in json.dumps(data["task"])
    assert data["task"]["predictions"] == []
    assert data["task"]["id"] == image.pk
    assert data["task"]["data"]["image"] == f"/media/{image.file.name}"
    assert data["user"]["pk"] == pathologist.pk
    assert 'hotkey="1"' in data["config"] and 'zoom="true"' in data["config"]


def test_editor_is_blind_to_predictions_unless_pre_annotations_are_allowed(
    images, pathologist, settings
):
    image = next_assignment(annotator=pathologist).image
    PredictionBox.objects.create(
        image=image, x=1, y=2, width=30, height=20, label="HSIL", score=0.9
    )
    client = _client(pathologist)
    assert _editor_data(client.get(f"/annotate/{image.pk}/editor/"))["task"]["predictions"] == []
    settings.ANNOTATE_SHOW_PREDICTIONS = True
    (prediction,) = _editor_data(client.get(f"/annotate/{image.pk}/editor/"))["task"]["predictions"]
    assert prediction["result"][0]["value"]["rectanglelabels"] == ["HSIL"]


def test_editor_page_is_standalone_with_vendored_files_only(images, pathologist):
    image = next_assignment(annotator=pathologist).image
    response = _client(pathologist).get(f"/annotate/{image.pk}/editor/")
    html = response.content.decode()
    assert response["X-Frame-Options"] == "SAMEORIGIN"  # the annotate page may frame it
    assert "/static/vendor/label-studio/main.css" in html
    assert "/static/vendor/label-studio/main.js" in html
    assert "/static/js/annotate-editor.js" in html
    assert 'class="topbar"' not in html  # not the platform layout
    assert not re.search(r"(src|href)=\"(https?:)?//", html), "nothing from a CDN"
    assert "unpkg" not in html and "jsdelivr" not in html and "cdn" not in html.lower()


def test_skip_hands_the_image_back_and_opens_the_next_one(images, pathologist):
    first = next_assignment(annotator=pathologist).image
    response = _client(pathologist).post(f"/annotate/{first.pk}/skip/")
    assert (
        Assignment.objects.get(image=first, annotator=pathologist).status
        == Assignment.Status.SKIPPED
    )
    current = Assignment.objects.get(annotator=pathologist, status=Assignment.Status.ACTIVE)
    assert current.image != first
    assert response["Location"] == f"/annotate/{current.image_id}/"


def test_a_submitted_image_can_be_reopened_from_the_queue(images, pathologist):
    image = next_assignment(annotator=pathologist).image
    submit_annotation(image=image, annotator=pathologist, boxes=[Box(10, 20, 30, 40, "HSIL")])
    client = _client(pathologist)
    queue = client.get("/annotate/").content.decode()
    assert f'href="/annotate/{image.pk}/"' in queue
    assert "1 done, 2 waiting for you." in _text(queue)
    page = client.get(f"/annotate/{image.pk}/")
    assert page.status_code == 200
    assert 'id="resubmit-note"' in page.content.decode()
    assert '>Update</button>' in page.content.decode()


def test_next_after_a_submit_confirms_what_was_saved(images, pathologist):
    image = next_assignment(annotator=pathologist).image
    submit_annotation(
        image=image,
        annotator=pathologist,
        boxes=[Box(10, 20, 30, 40, "HSIL"), Box(1, 1, 5, 5, "NILM")],
    )
    response = _client(pathologist).post("/annotate/next/", {"saved": str(image.pk)}, follow=True)
    assert f"Saved 2 boxes on {image.original_name}." in response.content.decode()
    assert response.redirect_chain[-1][0] != f"/annotate/{image.pk}/"
