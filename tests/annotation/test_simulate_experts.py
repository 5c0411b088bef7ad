"""simulate_experts on a real dataset: blind annotations through the normal save path."""

import json
import random

import pytest

from annotation.formats import to_coco
from annotation.geometry import Box, ImageRecord
from annotation.models import ExpertAnnotation, ExpertBox
from annotation.services import ensure_dataset, import_images, simulate_dataset_experts
from annotation.simulation import default_panel, measured_rates
from tests.annotation.conftest import import_pngs, png_bytes
from tests.helpers import manage

pytestmark = pytest.mark.django_db
LABELS = ["NILM", "ASC-US", "LSIL", "ASC-H", "HSIL", "SCC"]


@pytest.fixture
def dataset_with_truth(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = random.Random(3)
    records = []
    for i in range(40):
        name = f"img{i:02d}.png"
        (folder / name).write_bytes(png_bytes(1000 + i, size=(400, 300)))
        boxes = [Box(float(20 + 90 * (k % 4)), float(20 + 90 * (k // 4)), 60.0, 60.0, rng.choice(LABELS))
                 for k in range(8)]
        records.append(ImageRecord(name, 400, 300, tuple(boxes)))
    ann = tmp_path / "truth.json"
    ann.write_text(json.dumps(to_coco(records)))
    ds = ensure_dataset(name="sim")[0]
    import_images(dataset=ds, path=folder, annotations=ann)
    return ds


def _annotations_by_expert(ds):
    out = {}
    for ann in ExpertAnnotation.objects.filter(image__dataset=ds).select_related("annotator", "image"):
        boxes = sorted((b.x, b.y, b.width, b.height, b.label) for b in ann.boxes.all())
        out[(ann.annotator.username, ann.image.original_name)] = boxes
    return out


def test_each_expert_annotates_each_image_once_and_reruns_are_identical(dataset_with_truth):
    simulate_dataset_experts(dataset=dataset_with_truth, n_experts=3, seed=5)
    first = _annotations_by_expert(dataset_with_truth)
    assert ExpertAnnotation.objects.count() == 40 * 3
    simulate_dataset_experts(dataset=dataset_with_truth, n_experts=3, seed=5)
    assert ExpertAnnotation.objects.count() == 40 * 3
    assert _annotations_by_expert(dataset_with_truth) == first
    assert {ann.origin for ann in ExpertAnnotation.objects.all()} == {"simulated"}


def test_measured_disagreement_follows_each_experts_profile(dataset_with_truth):
    simulate_dataset_experts(dataset=dataset_with_truth, n_experts=3, seed=11)
    panel = {f"sim-{p.name}@cytoloop.local": p for p in default_panel(3, 11)}
    images = list(dataset_with_truth.images.prefetch_related("ground_truth"))
    truth = [[b.as_box() for b in im.ground_truth.all()] for im in images]
    for username, profile in panel.items():
        given = []
        for im in images:
            boxes = ExpertBox.objects.filter(annotation__image=im, annotation__annotator__username=username)
            given.append([b.as_box() for b in boxes])
        rates = measured_rates(truth, given)
        # 320 true boxes: generous but meaningful tolerances (about 3 standard errors)
        assert rates.label_change_rate == pytest.approx(profile.label_change_rate, abs=0.08), username
        assert rates.spurious_per_image == pytest.approx(profile.spurious_rate, abs=0.35), username
        assert rates.miss_rate == pytest.approx(profile.miss_rate, abs=0.08), username


def test_simulated_experts_cannot_log_in(dataset_with_truth, client):
    simulate_dataset_experts(dataset=dataset_with_truth, n_experts=2, seed=1)
    user = ExpertAnnotation.objects.first().annotator
    assert not user.has_usable_password()


def test_command_reports_per_expert_and_refuses_unknown_dataset(dataset_with_truth, transactional_db):
    result = manage("simulate_experts", "sim", "--experts", "2", "--seed", "4")
    assert result.returncode == 0, result.stderr
    assert "expert1: 40 annotations" in result.stdout
    bad = manage("simulate_experts", "nope")
    assert bad.returncode != 0 and "no dataset named 'nope'" in bad.stderr


@pytest.fixture
def small_dataset(tmp_path):
    return import_pngs(tmp_path / "small", "held", 3, seed=2000, size=(200, 150), prefix="s", experts_per_image=3,
                       truth=[Box(20.0, 20.0, 50.0, 50.0, "HSIL")])[0].dataset


def test_an_image_a_pathologist_holds_is_skipped_and_reported(small_dataset, make_user, transactional_db):
    from annotation.models import Assignment
    from annotation.services import next_assignment

    person = make_user("holder@example.org", roles=["pathologist"])
    held = next_assignment(annotator=person, dataset=small_dataset)  # the normal state: someone is working
    result = manage("simulate_experts", "held", "--experts", "3", "--seed", "2")
    assert result.returncode == 0, result.stderr
    assert "expert1: 2 annotations" in result.stdout
    assert f"skipped 1 image(s) a pathologist is holding now (ids {held.image_id})" in result.stdout
    assert not ExpertAnnotation.objects.filter(image=held.image).exists()
    assert ExpertAnnotation.objects.filter(image__dataset=small_dataset).count() == 2 * 3
    assert Assignment.objects.get(pk=held.pk).status == "active"  # their hold is untouched

    Assignment.objects.filter(pk=held.pk).update(status="released")  # once released, a rerun fills it
    assert simulate_dataset_experts(dataset=small_dataset, n_experts=3, seed=2)["held"] == []
    assert ExpertAnnotation.objects.filter(image=held.image).count() == 3


def test_a_failing_command_says_one_line_without_traceback(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(DJANGO_SETTINGS_MODULE="cytoloop.settings.local", CYTOLOOP_VAR_DIR=str(tmp_path))
    result = manage("simulate_experts", "sim", env=env)  # an empty, never migrated database
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "database error" in lines[0], result.stderr
