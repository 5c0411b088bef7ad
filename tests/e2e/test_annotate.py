"""A pathologist annotates in a real browser: My queue -> Start -> the Label Studio editor
(npm @heartexlabs/label-studio, vendored, in an iframe) -> two labelled boxes -> Submit -> the
boxes are in the database in image pixels. No Label Studio server is involved."""

import io
import re

import pytest
from PIL import Image as PILImage
from playwright.sync_api import expect

from annotation.models import Assignment, ExpertAnnotation, Image
from annotation.services import ensure_dataset, import_images
from annotation.synthetic import SyntheticConfig, generate_image
from tests.helpers import choose_label, drag

pytestmark = pytest.mark.e2e

WIDTH, HEIGHT = 1200, 800


@pytest.fixture
def smears(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    folder = tmp_path / "smears"
    folder.mkdir()
    for seed in (21, 22):
        out = io.BytesIO()
        PILImage.fromarray(
            generate_image(seed, SyntheticConfig(width=WIDTH, height=HEIGHT)).image
        ).save(out, "PNG")
        (folder / f"smear-{seed}.png").write_bytes(out.getvalue())
    dataset, _ = ensure_dataset(name="e2e-annotate", experts_per_image=2)
    import_images(dataset=dataset, path=folder)
    return dataset


def _start_annotating(page, live_server) -> int:
    """Open My queue, press Start annotating and return the id of the image handed out."""
    page.goto(live_server.url + "/annotate/")
    page.get_by_role("button", name="Start annotating").click()
    page.wait_for_url(re.compile(r".*/annotate/\d+/$"))
    return int(re.search(r"/annotate/(\d+)/$", page.url).group(1))


def test_pathologist_draws_two_labelled_boxes_and_submits(
    label_studio, make_user, login, live_server, smears, artifacts_dir
):
    user = make_user("path@example.org", roles=["pathologist"], password="browser-pass-1")
    page = login("path@example.org", "browser-pass-1")
    console = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    requests = []
    page.on("request", lambda r: requests.append(r.url))

    page.locator("nav.mainnav").get_by_role("link", name="My queue").click()
    expect(page.get_by_role("heading", name="My queue")).to_be_visible()
    page.get_by_role("button", name="Start annotating").click()
    page.wait_for_url(re.compile(r".*/annotate/\d+/$"))
    image_id = int(re.search(r"/annotate/(\d+)/$", page.url).group(1))
    assert Assignment.objects.get(annotator=user).image_id == image_id

    # the editor loads in the iframe: Label Studio ready, its canvas and the image drawn
    editor = page.frame_locator("#editor")
    expect(editor.locator("body[data-editor=ready]")).to_have_count(1, timeout=30_000)
    expect(page.locator("#submit-annotation")).to_be_enabled()
    canvas = editor.locator(".konvajs-content canvas").first
    expect(canvas).to_be_visible()
    frame = page.frame(url=re.compile(r"/editor/$"))
    frame.wait_for_function(
        "[...document.querySelectorAll('#root img')].some(i => i.complete && i.naturalWidth > 0)"
    )
    image_el = frame.locator("#root img").first
    box = image_el.bounding_box()
    # the editor gets the screen: on a 1440 x 900 window the image is drawn over 1100 px wide
    assert box and box["width"] >= 1100, box
    # one Submit (the page's), none in Label Studio's bars; each box shows its class
    expect(page.locator("#submit-annotation")).to_have_text("Submit")
    expect(editor.locator("button[aria-label=submit], button[aria-label=update]")).to_have_count(0)
    assert frame.evaluate("window.cytoloopEditor.store.settings.showLabels") is True
    scale = WIDTH / box["width"]  # image pixels per screen pixel

    # label 1 (NILM) then a box, label 5 (HSIL) then another
    choose_label(page, editor, "1", "NILM")
    w1, h1 = drag(page, box, (0.10, 0.15), (0.30, 0.40))
    regions = editor.locator("li[aria-label=region]")
    expect(regions).to_have_count(1)  # the box is made (Label Studio then lets go of the label)
    choose_label(page, editor, "5", "HSIL")
    w2, h2 = drag(page, box, (0.55, 0.50), (0.85, 0.85))
    expect(regions).to_have_count(2)
    assert [t.split()[-1] for t in regions.all_inner_texts()] == ["NILM", "HSIL"]
    page.screenshot(path=str(artifacts_dir / "annotate-editor-boxes.png"))

    # zoom (the image's zoom control) and pan (the hand tool): the view moves, not the boxes
    transform = "document.querySelector('#root img').style.transform"
    editor.locator("button[aria-label='zoom-in']").click()
    editor.locator("button[aria-label='zoom-in']").click()
    frame.wait_for_function(f"{transform}.includes('scale(1.21')")
    assert image_el.bounding_box()["width"] == pytest.approx(box["width"] * 1.21, rel=0.02)
    editor.locator("button[aria-label='pan']").click()
    before = frame.evaluate(transform)
    drag(page, box, (0.5, 0.5), (0.6, 0.6))
    frame.wait_for_function(f"{transform} !== {before!r}")
    page.screenshot(path=str(artifacts_dir / "annotate-zoomed.png"))
    editor.locator("button[aria-label='zoom-out']").click()
    editor.locator("button[aria-label='zoom-out']").click()
    frame.wait_for_function(f"!{transform}.includes('scale(')")
    expect(editor.locator("li[aria-label=region]")).to_have_count(2, timeout=1000)

    page.click("#submit-annotation")
    page.wait_for_url(lambda url: not url.endswith(f"/annotate/{image_id}/"))
    expect(page.locator(".msg-success")).to_contain_text("Saved 2 boxes on smear-")
    expect(page.frame_locator("#editor").locator("body[data-editor=ready]")).to_have_count(
        1, timeout=30_000
    )
    page.screenshot(path=str(artifacts_dir / "annotate-after-submit.png"))

    annotation = ExpertAnnotation.objects.get(annotator=user, image_id=image_id)
    boxes = sorted(annotation.boxes.all(), key=lambda b: b.x)
    assert [b.label for b in boxes] == ["NILM", "HSIL"], (boxes, console)
    for b, (w, h) in zip(boxes, [(w1, h1), (w2, h2)], strict=True):
        assert b.width == pytest.approx(w * scale, rel=0.1), (b.width, w * scale)
        assert b.height == pytest.approx(h * scale, rel=0.1), (b.height, h * scale)
        assert 0 <= b.x and b.x + b.width <= WIDTH and 0 <= b.y and b.y + b.height <= HEIGHT
    assert boxes[0].x == pytest.approx(0.10 * WIDTH, abs=0.03 * WIDTH)
    assert boxes[1].y == pytest.approx(0.50 * HEIGHT, abs=0.03 * HEIGHT)
    assert (
        Assignment.objects.get(annotator=user, image_id=image_id).status
        == Assignment.Status.SUBMITTED
    )
    # on to the next image of the queue, nothing fetched from outside the platform
    assert page.url != live_server.url + f"/annotate/{image_id}/"
    assert all(
        u.startswith(live_server.url) or u.startswith("data:") or u.startswith("blob:")
        for u in requests
    ), [u for u in requests if not u.startswith(live_server.url)]
    assert not [line for line in console if line.startswith("pageerror")], console

    # ... and in Label Studio, as this pathologist's own annotation (the outbox pushes it)
    from annotation import labelstudio
    from annotation.services import flush_outbox

    assert flush_outbox()["done"] >= 1
    task_id = Image.objects.get(pk=image_id).ls_task_id
    remote = labelstudio.task_annotations(task_id)
    assert len(remote) == 1
    ls_user = labelstudio.client().users.get(id=labelstudio._completed_by_id(remote[0]))
    assert ls_user.email == "path@example.org"
    assert sorted(r["value"]["rectanglelabels"][0] for r in remote[0].result) == ["HSIL", "NILM"]


def test_keys_from_the_page_reach_the_editor_and_a_refused_submit_keeps_the_boxes(
    make_user, login, live_server, smears, artifacts_dir, open_editor
):
    user = make_user("keys@example.org", roles=["pathologist"], password="browser-pass-1")
    page = login("keys@example.org", "browser-pass-1")
    image_id = _start_annotating(page, live_server)
    editor, frame, box = open_editor(page)

    # the focus is on the platform page (its side panel), not in the editor: "3" still picks LSIL
    page.locator("#image-name").click()
    choose_label(page, editor, "3", "LSIL")
    drag(page, box, (0.40, 0.20), (0.60, 0.45))
    expect(editor.locator("li[aria-label=region]")).to_have_count(1)

    # the image's assignment ran out meanwhile: the server refuses, the editor says why and keeps the box
    Assignment.objects.filter(annotator=user, image_id=image_id).update(
        status=Assignment.Status.RELEASED
    )
    page.click("#submit-annotation")
    status = editor.locator("#editor-status[data-kind=error]")
    expect(status).to_be_visible()
    expect(status).to_contain_text("Not saved")
    expect(status).to_contain_text("is not assigned to")
    expect(page.locator("#annotate-state")).to_contain_text("Not saved")
    expect(page.locator("#submit-annotation")).to_be_enabled()
    page.screenshot(path=str(artifacts_dir / "annotate-refused.png"))
    assert page.url.endswith(f"/annotate/{image_id}/")
    expect(editor.locator("li[aria-label=region]")).to_have_count(1)
    assert not ExpertAnnotation.objects.filter(annotator=user).exists()

    # given back to the user, Ctrl+Enter on the page submits the same box and moves on
    Assignment.objects.filter(annotator=user, image_id=image_id).update(
        status=Assignment.Status.ACTIVE
    )
    page.locator("#image-name").click()
    page.keyboard.press("Control+Enter")
    page.wait_for_url(lambda url: not url.endswith(f"/annotate/{image_id}/"))
    (saved,) = ExpertAnnotation.objects.get(annotator=user, image_id=image_id).boxes.all()
    assert saved.label == "LSIL"
    assert saved.x == pytest.approx(0.40 * WIDTH, abs=0.03 * WIDTH)
    assert saved.width == pytest.approx(0.20 * WIDTH, rel=0.1)


def test_pre_annotations_start_the_editor_when_a_round_allows_them(
    make_user, login, live_server, smears, settings, artifacts_dir
):
    from annotation.models import Image, PredictionBox

    settings.ANNOTATE_SHOW_PREDICTIONS = True
    for image in Image.objects.filter(dataset=smears):
        PredictionBox.objects.create(
            image=image, x=120, y=80, width=240, height=160, label="ASC-H", score=0.8
        )
    user = make_user("pre@example.org", roles=["pathologist"], password="browser-pass-1")
    page = login("pre@example.org", "browser-pass-1")
    image_id = _start_annotating(page, live_server)
    editor = page.frame_locator("#editor")
    expect(editor.locator("body[data-editor=ready]")).to_have_count(1, timeout=30_000)
    regions = editor.locator("li[aria-label=region]")
    expect(regions).to_have_count(1)
    # an editable copy of the model's box (not the read-only prediction) is what gets submitted
    frame = page.frame(url=re.compile(r"/editor/$"))
    assert (
        frame.evaluate("window.cytoloopEditor.store.annotationStore.selected.type") == "annotation"
    )
    expect(page.locator("#submit-annotation")).to_have_text("Submit")
    page.screenshot(path=str(artifacts_dir / "annotate-pre-annotation.png"))
    page.click("#submit-annotation")
    page.wait_for_url(lambda url: not url.endswith(f"/annotate/{image_id}/"))
    (saved,) = ExpertAnnotation.objects.get(annotator=user, image_id=image_id).boxes.all()
    # recorded as the model's box, accepted unchanged
    assert saved.prediction_id == PredictionBox.objects.get(image_id=image_id).pk
    assert (saved.prediction_model, saved.prediction_changed) == ("imported", False)
    assert (saved.label, saved.x, saved.y, saved.width, saved.height) == (
        "ASC-H",
        pytest.approx(120),
        pytest.approx(80),
        pytest.approx(240),
        pytest.approx(160),
    )


def test_a_reopened_image_shows_the_users_own_boxes_and_update_replaces_them(
    make_user, login, live_server, smears, artifacts_dir
):
    from annotation.geometry import Box
    from annotation.services import next_assignment, submit_annotation

    user = make_user("again@example.org", roles=["pathologist"], password="browser-pass-1")
    other = make_user("other@example.org", roles=["pathologist"])
    image = next_assignment(annotator=user).image
    submit_annotation(
        image=image,
        annotator=user,
        boxes=[Box(100, 100, 200, 150, "LSIL"), Box(700, 400, 300, 200, "SCC")],
    )
    assert next_assignment(annotator=other).image == image
    submit_annotation(image=image, annotator=other, boxes=[Box(50, 50, 80, 80, "ASC-US")])

    page = login("again@example.org", "browser-pass-1")
    page.goto(live_server.url + "/annotate/")
    page.screenshot(path=str(artifacts_dir / "annotate-queue.png"), full_page=True)
    page.locator("#recent").get_by_role("link", name="Re-open").click()
    page.wait_for_url(f"**/annotate/{image.pk}/")
    editor = page.frame_locator("#editor")
    expect(editor.locator("body[data-editor=ready]")).to_have_count(1, timeout=30_000)
    regions = editor.locator("li[aria-label=region]")
    expect(regions).to_have_count(2)  # own boxes only: the other expert's ASC-US is not there
    assert [t.split()[-1] for t in regions.all_inner_texts()] == ["LSIL", "SCC"]
    expect(page.locator("#submit-annotation")).to_have_text("Update")
    page.screenshot(path=str(artifacts_dir / "annotate-reopened.png"))

    regions.nth(1).click()
    page.keyboard.press("Backspace")
    expect(regions).to_have_count(1)
    page.keyboard.press("Control+Enter")
    page.wait_for_url(lambda url: not url.endswith(f"/annotate/{image.pk}/"))
    (kept,) = ExpertAnnotation.objects.get(annotator=user, image=image).boxes.all()
    assert (kept.label, kept.x, kept.y, kept.width, kept.height) == (
        "LSIL",
        pytest.approx(100),
        pytest.approx(100),
        pytest.approx(200),
        pytest.approx(150),
    )
