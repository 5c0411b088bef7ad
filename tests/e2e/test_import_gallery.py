"""An admin imports images in a real browser (drop zone, upload progress, worker job) and browses
the result: gallery thumbnails and the image page with its SVG overlay."""

import io
import json
import re

import pytest
from PIL import Image as PILImage
from playwright.sync_api import expect

from annotation.formats import to_coco
from annotation.models import ImportJob
from annotation.synthetic import SyntheticConfig, generate_image

pytestmark = pytest.mark.e2e


def _smear(seed: int, name: str):
    """A synthetic Pap image as PNG bytes, with its record (cluster boxes) under ``name``."""
    synthetic = generate_image(seed, SyntheticConfig(width=720, height=540))
    out = io.BytesIO()
    PILImage.fromarray(synthetic.image).save(out, "PNG")
    return out.getvalue(), synthetic.to_record(name)


def _upload(name: str, data: bytes, mime: str = "image/png") -> dict:
    return {"name": name, "mimeType": mime, "buffer": data}


def test_admin_imports_in_the_browser_and_browses_the_gallery(
    make_user, login, live_server, celery_worker, artifacts_dir, settings, tmp_path
):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    first, first_record = _smear(11, "smear-1.png")
    second, second_record = _smear(12, "smear-2.png")
    broken = _smear(13, "broken.png")[0][:3000]  # a truncated PNG: valid header, missing data
    coco = json.dumps(to_coco([first_record, second_record])).encode()

    make_user("admin@example.org", roles=["admin"], password="browser-pass-1")
    page = login("admin@example.org", "browser-pass-1")

    page.locator("nav.mainnav").get_by_role("link", name="Import").click()
    expect(page.get_by_role("heading", name="Import images")).to_be_visible()
    page.click("#import-submit")  # nothing chosen: the server's list of what is wrong, in place
    expect(page.locator("#import-errors")).to_contain_text("Choose a dataset or type a name for a new one.")
    expect(page.locator("#import-errors")).to_contain_text("No files were uploaded")
    page.fill("#id_new_dataset", "browser-import")
    page.set_input_files("#id_files", [
        _upload("smear-1.png", first), _upload("smear-2.png", second), _upload("broken.png", broken),
    ])
    page.set_input_files("#id_annotations", _upload("clusters.json", coco, "application/json"))
    expect(page.locator("#file-count")).to_contain_text("3 files")
    expect(page.locator("#file-list li")).to_have_count(3)
    page.screenshot(path=str(artifacts_dir / "import-form.png"), full_page=True)

    # slow the upload down (DevTools network emulation) so that its progress is visible
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 400 * 1024,
    })
    page.click("#import-submit")
    expect(page.locator("#upload")).to_be_visible()
    page.wait_for_function(
        "Number(document.getElementById('upload-progress')?.getAttribute('aria-valuenow')) > 0"
    )
    expect(page.locator("#upload-bytes")).to_contain_text(" of ")
    page.wait_for_url(re.compile(r".*/datasets/import/\d+/$"), timeout=30_000)
    cdp.send("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1,
    })

    # the job page polls itself until the worker is done
    expect(page.locator("#job-percent")).to_have_text("100%", timeout=60_000)
    expect(page.locator("#job-status")).to_have_text("Succeeded")
    expect(page.locator("#job-summary")).to_contain_text("2 imported")
    skipped = page.locator("#skipped tbody tr")
    expect(skipped).to_have_count(1)
    expect(skipped.first).to_contain_text("broken.png")
    expect(skipped.first).to_contain_text("corrupt")
    assert page.locator("#job[hx-trigger]").count() == 0  # polling stopped
    job = ImportJob.objects.get()
    assert "@" in job.worker and job.started_at <= job.finished_at  # the worker's node name (name@host), its times
    page.screenshot(path=str(artifacts_dir / "import-job.png"), full_page=True)

    page.click("#open-gallery")
    thumbs = page.locator(".thumbs .thumb img")
    expect(thumbs).to_have_count(2)
    page.wait_for_function(
        "[...document.querySelectorAll('.thumbs img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    page.screenshot(path=str(artifacts_dir / "gallery.png"), full_page=True)

    page.locator(".thumbs .thumb").first.click()
    overlay = page.locator("svg#overlay")
    expect(overlay).to_be_visible()
    expect(overlay.locator("g.box.gt")).to_have_count(len(first_record.boxes))
    assert overlay.get_attribute("viewBox") == "0 0 720 540"
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(artifacts_dir / "image-page.png"), full_page=True)

    # the toggle hides the ground truth without a round trip
    page.uncheck("#show-gt")
    expect(overlay.locator("g.layer-gt")).to_be_hidden()
