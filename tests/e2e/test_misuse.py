"""A pathologist's misuse paths in a real Chromium on the real stack (live server on PostgreSQL,
the real Label Studio server, the outbox flushed): Back after submit, reload mid-drawing, an
empty submit, the same image open in two tabs, a held image released on log-out. Each ends with
the saved boxes in PostgreSQL and in Label Studio exactly as the pathologist last meant them."""

import io
import re

import pytest
from PIL import Image as PILImage
from playwright.sync_api import expect

from annotation.models import AnnotationDraft, Assignment, ExpertAnnotation, Image
from annotation.services import ensure_dataset, import_images
from annotation.synthetic import SyntheticConfig, generate_image
from tests.helpers import drag

pytestmark = pytest.mark.e2e

WIDTH, HEIGHT = 900, 600
PASSWORD = "browser-pass-1"
ANNOTATE = re.compile(r".*/annotate/(\d+)/$")


@pytest.fixture
def five_smears(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    folder = tmp_path / "smears"
    folder.mkdir()
    for seed in range(31, 36):
        out = io.BytesIO()
        PILImage.fromarray(generate_image(seed, SyntheticConfig(width=WIDTH, height=HEIGHT)).image).save(out, "PNG")
        (folder / f"misuse-{seed}.png").write_bytes(out.getvalue())
    dataset, _ = ensure_dataset(name="e2e-misuse", experts_per_image=2)
    import_images(dataset=dataset, path=folder)
    return dataset


def _image_id(page) -> int:
    return int(ANNOTATE.match(page.url).group(1))


def _draw(page, box, key, start, end):
    page.keyboard.press(key)
    drag(page, box, start, end, steps=4)


def _labels(editor) -> list[str]:
    return sorted(t.split()[-1] for t in editor.locator("li[aria-label=region]").all_inner_texts())


def _saved(user, image_id) -> list[str]:
    return sorted(b.label for b in ExpertAnnotation.objects.get(annotator=user, image_id=image_id).boxes.all())


def _wait_for_draft(editor):
    expect(editor.locator("body[data-draft=saved]")).to_have_count(1, timeout=10_000)


def test_misuse_paths_end_with_the_boxes_the_pathologist_last_meant_in_postgres_and_label_studio(
    label_studio, make_user, login, live_server, five_smears, artifacts_dir, open_editor
):
    from annotation import labelstudio
    from annotation.services import flush_outbox

    user = make_user("misuse@example.org", roles=["pathologist"], password=PASSWORD)
    page = login(user.email, PASSWORD)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    editor_loads = []
    page.on("request", lambda r: editor_loads.append(r.url) if r.url.endswith("/editor/") else None)

    # 1. Back after submit: the browser fetches the editor again, with the saved boxes and Update
    page.goto(live_server.url + "/annotate/")
    page.get_by_role("button", name="Start annotating").click()
    page.wait_for_url(ANNOTATE)
    a = _image_id(page)
    editor, _, box = open_editor(page)
    _draw(page, box, "1", (0.10, 0.15), (0.30, 0.40))
    expect(editor.locator("li[aria-label=region]")).to_have_count(1)
    _draw(page, box, "5", (0.55, 0.50), (0.85, 0.85))
    expect(editor.locator("li[aria-label=region]")).to_have_count(2)
    page.click("#submit-annotation")
    page.wait_for_url(lambda url: not url.endswith(f"/annotate/{a}/"))
    b = _image_id(page)
    assert _saved(user, a) == ["HSIL", "NILM"]
    assert flush_outbox()["done"] >= 1  # in Label Studio now: the Update below must replace it

    loads = len(editor_loads)
    page.go_back()
    page.wait_for_url(f"**/annotate/{a}/")
    editor, _, box = open_editor(page)
    assert len(editor_loads) > loads, "Back showed a cached editor"
    assert _labels(editor) == ["HSIL", "NILM"]
    expect(page.locator("#submit-annotation")).to_have_text("Update")
    page.screenshot(path=str(artifacts_dir / "misuse-back-after-submit.png"))
    editor.locator("li[aria-label=region]", has_text="HSIL").click()
    page.keyboard.press("Backspace")
    expect(editor.locator("li[aria-label=region]")).to_have_count(1)
    page.click("#submit-annotation")
    page.wait_for_url(f"**/annotate/{b}/")
    assert _saved(user, a) == ["NILM"]
    assert ExpertAnnotation.objects.get(annotator=user, image_id=a).revision == 2

    # 2. reload mid-drawing: the draft comes back, with when it was kept
    editor, _, box = open_editor(page)
    _draw(page, box, "3", (0.40, 0.20), (0.60, 0.45))
    expect(editor.locator("li[aria-label=region]")).to_have_count(1)
    _wait_for_draft(editor)
    page.reload()
    editor, _, box = open_editor(page)
    assert _labels(editor) == ["LSIL"]
    expect(editor.locator("#editor-status")).to_contain_text("Restored your unsaved draft from")
    page.click("#submit-annotation")
    page.wait_for_url(lambda url: not url.endswith(f"/annotate/{b}/"))
    c = _image_id(page)
    assert _saved(user, b) == ["LSIL"]
    assert not AnnotationDraft.objects.filter(assignment__image_id=b).exists()

    # 3. an empty submit asks once; "keep annotating" saves nothing, "yes" is a deliberate answer
    editor, _, _ = open_editor(page)
    page.click("#submit-annotation")
    question = editor.locator("#confirm-empty")
    expect(question).to_be_visible()
    expect(question).to_contain_text("No abnormal cluster on this image?")
    page.screenshot(path=str(artifacts_dir / "misuse-empty-submit.png"))
    question.get_by_role("button", name="Keep annotating").click()
    expect(question).to_be_hidden()
    assert not ExpertAnnotation.objects.filter(annotator=user, image_id=c).exists()
    page.click("#submit-annotation")
    question.get_by_role("button", name="Yes, no abnormal cluster").click()
    page.wait_for_url(lambda url: not url.endswith(f"/annotate/{c}/"))
    d = _image_id(page)
    assert _saved(user, c) == []
    expect(page.locator(".msg-success")).to_contain_text("Saved no abnormal cluster on")

    # 4. the same image in two tabs: the second tab saves first; the first tab's save is refused
    # (409), it reloads what is saved and says so; the pathologist adds their box and updates
    editor, _, box = open_editor(page)
    second = page.context.new_page()
    second.goto(live_server.url + f"/annotate/{d}/")
    editor2, _, box2 = open_editor(second)
    _draw(second, box2, "6", (0.15, 0.15), (0.35, 0.35))
    expect(editor2.locator("li[aria-label=region]")).to_have_count(1)
    second.click("#submit-annotation")
    second.wait_for_url(lambda url: not url.endswith(f"/annotate/{d}/"))
    second.close()
    assert _saved(user, d) == ["SCC"]
    _draw(page, box, "4", (0.60, 0.60), (0.80, 0.80))
    expect(editor.locator("li[aria-label=region]")).to_have_count(1)
    page.keyboard.press("Control+Enter")
    editor = page.frame_locator("#editor")
    expect(editor.locator("#editor-status")).to_contain_text(
        "This image was saved elsewhere since you opened it (revision 1); reloaded what is saved now.",
        timeout=30_000)
    editor, _, box = open_editor(page)
    assert _labels(editor) == ["SCC"]
    assert _saved(user, d) == ["SCC"]
    expect(page.locator("#submit-annotation")).to_have_text("Update")
    page.screenshot(path=str(artifacts_dir / "misuse-two-tabs.png"))
    _draw(page, box, "4", (0.60, 0.60), (0.80, 0.80))
    expect(editor.locator("li[aria-label=region]")).to_have_count(2)
    page.click("#submit-annotation")
    page.wait_for_url(lambda url: not url.endswith(f"/annotate/{d}/"))
    e = _image_id(page)
    assert _saved(user, d) == ["ASC-H", "SCC"]

    # 5. log out while holding an image: it is released, the draft stays and comes back with it
    editor, _, box = open_editor(page)
    _draw(page, box, "2", (0.30, 0.30), (0.50, 0.55))
    expect(editor.locator("li[aria-label=region]")).to_have_count(1)
    _wait_for_draft(editor)
    page.locator(".who").get_by_role("button", name="Log out").click()
    page.wait_for_url("**/login/**")
    held = Assignment.objects.get(annotator=user, image_id=e)
    assert held.status == Assignment.Status.RELEASED
    assert AnnotationDraft.objects.filter(assignment=held).exists()
    page = login(user.email, PASSWORD)
    page.goto(live_server.url + "/annotate/")
    page.locator("#start").click()
    page.wait_for_url(f"**/annotate/{e}/")
    editor, _, _ = open_editor(page)
    assert _labels(editor) == ["ASC-US"]
    page.click("#submit-annotation")
    page.wait_for_url(lambda url: "/annotate/" in url and not url.endswith(f"/annotate/{e}/"))
    assert _saved(user, e) == ["ASC-US"]
    assert not errors, errors

    # Label Studio holds exactly what PostgreSQL holds: one annotation per image, the final boxes
    assert flush_outbox()["failed"] == 0
    for image_id in (a, b, c, d, e):
        image = Image.objects.get(pk=image_id)
        saved = ExpertAnnotation.objects.get(annotator=user, image=image)
        remote = [r for r in labelstudio.task_annotations(image.ls_task_id) if not r.ground_truth]
        assert [r.id for r in remote] == [saved.ls_annotation_id], image_id
        ours = sorted((round(b.x, 2), round(b.y, 2), round(b.width, 2), round(b.height, 2), b.label)
                      for b in saved.boxes.all())
        theirs = sorted((round(b.x, 2), round(b.y, 2), round(b.width, 2), round(b.height, 2), b.label)
                        for b in labelstudio.result_to_boxes(remote[0].result, image.width, image.height))
        assert theirs == ours, image_id
