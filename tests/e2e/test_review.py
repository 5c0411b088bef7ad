"""A reviewer resolves a dispute in a real browser: Disputes -> the riskiest cluster -> every
expert's boxes on the image -> a label button -> ground truth (source review) and an audit row."""

import io
import re

import pytest
from PIL import Image as PILImage
from playwright.sync_api import expect

from annotation import services
from annotation.geometry import Box
from annotation.models import AuditEntry, Cluster, ExpertBox, GroundTruthBox, Image, PredictionBox
from annotation.synthetic import SyntheticConfig, generate_image

pytestmark = pytest.mark.e2e

WIDTH, HEIGHT = 1200, 800
#: each expert's small, steady offset on (x, y, width, height): they draw the same cells a little apart
JITTER = ((0, 0, 0, 0), (4, -3, 6, 2), (-5, 4, -4, 6))
#: {seed: {truth box index: labels of experts 1..3 (None: did not draw it)}}; other boxes: the truth
PLAN = {
    33: {3: ("NILM", "HSIL", "LSIL"), 0: ("ASC-H", "HSIL", "ASC-H")},  # box 3: the riskiest dispute
    32: {0: ("ASC-H", "HSIL", "ASC-US"), 2: ("NILM", None, None)},
    31: {3: ("ASC-H", "ASC-US", "LSIL")},
}


def _shifted(box: Box, jitter, label: str) -> Box:
    dx, dy, dw, dh = jitter
    x, y = min(max(0.0, box.x + dx), WIDTH - 2), min(max(0.0, box.y + dy), HEIGHT - 2)
    return Box(x, y, min(box.width + dw, WIDTH - x), min(box.height + dh, HEIGHT - y), label)


@pytest.fixture
def disputes(settings, tmp_path, make_user):
    """Three synthetic smears, three experts' blind annotations (through the services), consensus."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    folder = tmp_path / "smears"
    folder.mkdir()
    truth = {}
    for seed in PLAN:
        synthetic = generate_image(seed, SyntheticConfig(width=WIDTH, height=HEIGHT))
        out = io.BytesIO()
        PILImage.fromarray(synthetic.image).save(out, "PNG")
        (folder / f"smear-{seed}.png").write_bytes(out.getvalue())
        truth[f"smear-{seed}.png"] = (seed, synthetic.to_record(f"smear-{seed}.png").boxes)
    dataset, _ = services.ensure_dataset(name="e2e-review", title="Review demo", experts_per_image=3)
    services.import_images(dataset=dataset, path=folder)
    experts = []
    for first, last in (("Ana", "Souza"), ("Ben", "Okafor"), ("Chen", "Li")):
        user = make_user(f"{first.lower()}@lab.example", roles=["pathologist"])
        user.first_name, user.last_name = first, last
        user.save()
        experts.append(user)
    for image in Image.objects.filter(dataset=dataset):
        seed, boxes = truth[image.original_name]
        for k, expert in enumerate(experts):
            drawn = []
            for i, box in enumerate(boxes):
                label = PLAN[seed].get(i, (box.label,) * 3)[k]
                if label is not None:
                    drawn.append(_shifted(box, JITTER[k], label))
            services.save_expert_annotation(image=image, annotator=expert, boxes=drawn, origin="editor")
        services.compute_consensus(image=image)
        if seed == 33:
            target = boxes[3]
            PredictionBox.objects.create(image=image, x=target.x + 2, y=target.y + 1, width=target.width,
                                         height=target.height - 3, label="HSIL", score=0.81, model_version="yolov4-r3")
    top = Cluster.objects.filter(status="disputed").order_by("-risk", "created_at").first()
    assert top.risk == 10.0 and sorted(m["label"] for m in top.members) == ["HSIL", "LSIL", "NILM"]
    return dataset, top, experts


def test_a_reviewer_resolves_the_riskiest_dispute_in_the_browser(disputes, make_user, login, live_server, artifacts_dir):
    dataset, top, experts = disputes
    reviewer = make_user("rita@lab.example", roles=["reviewer"], password="review-pass-1")
    page = login("rita@lab.example", "review-pass-1")

    page.locator("nav.mainnav").get_by_role("link", name="Disputes").click()
    expect(page.get_by_role("heading", name="Disputes")).to_be_visible()
    rows = page.locator("#disputes tbody tr")
    expect(rows.first).to_have_attribute("data-cluster", str(top.pk))
    assert rows.count() == Cluster.objects.filter(status="disputed").count() >= 4
    page.wait_for_load_state("networkidle")  # the thumbnails
    page.screenshot(path=str(artifacts_dir / "review-queue.png"), full_page=True)

    # the reason filter updates the table in place (htmx) and keeps a real link
    page.locator('.chip[data-reason="too_few_experts"]').click()
    expect(page).to_have_url(re.compile(r"\?reason=too_few_experts$"))
    expect(rows).to_have_count(Cluster.objects.filter(status="disputed", reasons__contains=["too_few_experts"]).count())
    page.locator('.chip[data-reason=""]').click()
    expect(rows.first).to_have_attribute("data-cluster", str(top.pk))

    rows.first.get_by_role("link", name="Review", exact=True).click()
    page.wait_for_url(re.compile(rf".*/review/clusters/{top.pk}/$"))
    overlay = page.locator("svg#overlay")
    expect(overlay).to_be_visible()
    n_boxes = ExpertBox.objects.filter(annotation__image_id=top.image_id).count()
    expect(overlay.locator("g.ebox")).to_have_count(n_boxes)
    expect(overlay.locator("g.ebox.member")).to_have_count(3)
    expect(overlay.locator("#cluster-box")).to_be_visible()
    expect(page.locator("#vote-table tbody tr")).to_have_count(3)
    expect(page.locator("#model-opinion")).to_contain_text("0.81")
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(artifacts_dir / "review-cluster.png"), full_page=True)

    # an expert's checkbox hides their boxes without a round trip
    page.uncheck("#show-e2")
    expect(overlay.locator("g.by-e2").first).to_be_hidden()
    page.check("#show-e2")
    expect(overlay.locator("g.by-e2").first).to_be_visible()

    # dragging the close-up's corner fills the box inputs
    before = float(page.input_value("#box-width"))
    corner = page.locator('#closeup .handle[data-corner="se"]')
    corner.scroll_into_view_if_needed()
    handle = corner.bounding_box()
    page.mouse.move(handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2)
    page.mouse.down()
    page.mouse.move(handle["x"] + 40, handle["y"] + 10, steps=5)
    page.mouse.up()
    assert float(page.input_value("#box-width")) > before + 5

    page.click("#label-LSIL")
    page.wait_for_url(re.compile(rf".*/review/clusters/\d+/\?from={top.pk}$"))
    expect(page.locator(".msg-success")).to_contain_text(f"Cluster #{top.pk}")
    expect(page.locator(".msg-success")).to_contain_text("resolved as LSIL")

    top.refresh_from_db()
    assert (top.status, top.label, top.resolved_by) == ("resolved", "LSIL", reviewer)
    assert (top.x, top.width) != (None, None)
    truth = GroundTruthBox.objects.get(image_id=top.image_id, source="review")
    assert (truth.label, truth.x, truth.width) == ("LSIL", top.x, top.width)  # the label only: box unchanged
    entry = AuditEntry.objects.get(cluster=top)
    assert (entry.actor, entry.action, entry.before["label"], entry.after["label"]) == (
        reviewer, "set_label", "HSIL", "LSIL")

    # the next dispute opened; key 2 decides ASC-US on it
    following = Cluster.objects.get(pk=int(re.search(r"/clusters/(\d+)/", page.url).group(1)))
    expect(page.locator("#just-decided")).to_contain_text(f"cluster #{top.pk}")
    page.keyboard.press("2")
    page.wait_for_url(re.compile(rf".*\?from={following.pk}$|.*/review/$"))
    following.refresh_from_db()
    assert (following.status, following.label) == ("resolved", "ASC-US")

    # a decided cluster shows its decision with its date; changing it to "not a lesion" asks first
    page.goto(f"{live_server.url}/review/clusters/{top.pk}/")
    expect(page.locator("#decision-text")).to_contain_text("Resolved as LSIL by rita@lab.example on")
    expect(page.locator("#decision-text")).to_contain_text(re.compile(r"\d{1,2} [A-Z][a-z]{2} \d{4}, \d{2}:\d{2} UTC"))
    expect(page.locator("#reject")).to_be_disabled()
    page.click("#change-decision")
    page.fill("#reject-form input[name=note]", "debris")
    page.click("#reject")
    expect(page.locator("#confirm-statement")).to_contain_text("Change the decision (now resolved as LSIL")
    expect(page.locator("#confirm-statement")).to_contain_text("as not a lesion")
    top.refresh_from_db()
    assert top.status == "resolved"
    page.screenshot(path=str(artifacts_dir / "review-confirm.png"), full_page=True)
    page.click("#confirm-yes")
    expect(page.locator("#decision-text")).to_contain_text("Rejected: not a lesion")
    top.refresh_from_db()
    assert top.status == "rejected"
    assert [e.action for e in AuditEntry.objects.filter(cluster_id=top.pk).order_by("id")] == ["set_label", "reject"]
    expect(page.locator("#audit-table tbody tr")).to_have_count(2)

    page.locator("nav.mainnav").get_by_role("link", name="Agreement").click()
    expect(page.locator("#fleiss")).to_be_visible()
    expect(page.locator("svg.heatmap")).to_have_count(3)
    expect(page.locator("svg#agreement-over-time")).to_be_visible()
    page.screenshot(path=str(artifacts_dir / "review-dashboard.png"), full_page=True)
