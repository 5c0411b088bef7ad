"""Each role's home in a real browser: the pathologist opens the next image from it, the
reviewer the riskiest dispute, the admin the images of one state."""

import re

import pytest
from playwright.sync_api import expect

from annotation import services
from annotation.geometry import Box
from annotation.models import Cluster, Image
from tests.annotation.conftest import png_bytes

pytestmark = pytest.mark.e2e


@pytest.fixture
def lab(settings, tmp_path, make_user):
    """Dataset "home": three images, two experts each; one disputed (NILM vs HSIL), two untouched."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        (folder / f"home-{i}.png").write_bytes(png_bytes(700 + i, size=(300, 200)))
    dataset, _ = services.ensure_dataset(name="home", experts_per_image=2)
    services.import_images(dataset=dataset, path=folder)
    disputed = Image.objects.filter(dataset=dataset).order_by("original_name").first()
    for i, label in enumerate(("NILM", "HSIL")):
        expert = make_user(f"e{i}@lab.example", roles=["pathologist"])
        services.save_expert_annotation(image=disputed, annotator=expert, origin="editor",
                                        boxes=[Box(20, 20, 50, 50, label)])
    services.compute_consensus(image=disputed)
    return Cluster.objects.get(image=disputed)


@pytest.mark.parametrize("role", ["pathologist", "reviewer", "admin"])
def test_each_role_has_a_home_that_opens_its_next_thing(role, lab, make_user, login, live_server, artifacts_dir):
    make_user(f"{role}@lab.example", roles=[role], password="home-pass-1")
    page = login(f"{role}@lab.example", "home-pass-1")
    expect(page.locator(f"#panel-{role}")).to_be_visible()
    page.screenshot(path=str(artifacts_dir / f"home-{role}.png"), full_page=True)
    if role == "pathologist":
        expect(page.locator("#queue-done")).to_have_text("0 of 2 done")
        page.click("#open-next")
        page.wait_for_url(re.compile(r".*/annotate/\d+/$"))
    elif role == "reviewer":
        expect(page.locator("#disputes-waiting")).to_contain_text("1 disputed cluster")
        page.locator("#top-disputes a").first.click()
        page.wait_for_url(re.compile(rf".*/review/clusters/{lab.pk}/$"))
    else:
        expect(page.locator('[data-state="disputed"] strong')).to_have_text("1")
        page.click('[data-state="not_annotated"]')
        page.wait_for_url(re.compile(r".*/lab/images/\?state=not_annotated$"))
        expect(page.locator("#state-images tbody tr")).to_have_count(2)
