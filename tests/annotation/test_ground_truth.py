"""One ground truth per image: a later source supersedes the lesion's current box, never adds a copy."""

import importlib

import pytest
from django.utils import timezone

from annotation import ground_truth
from annotation.geometry import Box, iou
from annotation.models import Assignment, AuditEntry, Cluster, ExpertBox, GroundTruthBox, Image
from annotation.selectors import dataset_records
from annotation.services import (
    compute_consensus,
    ensure_dataset,
    import_images,
    recompute_dataset,
    reject_cluster,
    resolve_cluster,
    simulate_dataset_experts,
    submit_annotation,
)
from tests.annotation.conftest import import_pngs, png_bytes

pytestmark = pytest.mark.django_db

LESIONS = [Box(20.0, 20.0, 60.0, 60.0, "HSIL"), Box(160.0, 40.0, 60.0, 60.0, "LSIL"),
           Box(300.0, 180.0, 60.0, 60.0, "ASC-H"), Box(60.0, 200.0, 60.0, 60.0, "SCC")]


@pytest.fixture
def imported(tmp_path):
    """Two 400x300 images, each with the four reference lesions imported from a COCO file."""
    images = import_pngs(tmp_path / "imgs", "truth", 2, seed=4200, size=(400, 300), prefix="g", experts_per_image=3,
                         truth=LESIONS, coco=tmp_path / "truth.json")
    return images[0].dataset, tmp_path / "imgs", tmp_path / "truth.json"


def _annotate(image, user, boxes):
    Assignment.objects.update_or_create(image=image, annotator=user, defaults={
        "status": "active", "expires_at": timezone.now() + timezone.timedelta(hours=1)})
    return submit_annotation(image=image, annotator=user, boxes=boxes)


def _current_per_lesion(image) -> list[int]:
    current = [b.as_box() for b in GroundTruthBox.objects.filter(image=image)]
    return [sum(1 for b in current if iou(b, lesion) >= 0.3) for lesion in LESIONS]


def _assert_one_truth(ds):
    for image in Image.objects.filter(dataset=ds):
        assert GroundTruthBox.objects.filter(image=image).count() <= len(LESIONS)
        assert max(_current_per_lesion(image)) <= 1, _current_per_lesion(image)


def test_current_truth_never_outgrows_the_lesions_from_import_to_reimport(imported, make_user):
    ds, folder, annotations = imported
    _assert_one_truth(ds)
    simulate_dataset_experts(dataset=ds, n_experts=3, seed=7)  # annotate
    for image in Image.objects.filter(dataset=ds):
        assert compute_consensus(image=image) == "computed"  # consensus
    _assert_one_truth(ds)
    assert GroundTruthBox.objects.filter(image__dataset=ds, source="consensus").exists()
    reviewer = make_user("rita@example.org", roles=["reviewer"])
    disputed = list(Cluster.objects.filter(image__dataset=ds, status="disputed").order_by("id"))
    on_lesions = [c for c in disputed if any(iou(c.as_box(), lesion) >= 0.3 for lesion in LESIONS)]
    assert on_lesions and len(disputed) > len(on_lesions)
    for cluster in on_lesions:  # review: a decision on each disputed lesion
        resolve_cluster(cluster=cluster, reviewer=reviewer, label="HSIL")
    for cluster in disputed:  # an expert's false box is "not a lesion"
        if cluster not in on_lesions:
            reject_cluster(cluster=cluster, reviewer=reviewer)
    resolve_cluster(cluster=on_lesions[0], reviewer=reviewer, label="LSIL")  # a second thought
    _assert_one_truth(ds)
    assert GroundTruthBox.objects.filter(image__dataset=ds, source="review").count() == len(on_lesions)
    recompute_dataset(dataset=ds, force=True)  # recompute
    _assert_one_truth(ds)
    before = sorted(GroundTruthBox.objects.filter(image__dataset=ds).values_list("id", flat=True))
    report = import_images(dataset=ds, path=folder, annotations=annotations)  # re-import
    assert report.boxes == 0
    assert sorted(GroundTruthBox.objects.filter(image__dataset=ds).values_list("id", flat=True)) == before
    # nothing was erased: every source is still there as history
    assert GroundTruthBox.with_history.filter(image__dataset=ds).count() > len(before)
    # the export (and so a re-import elsewhere) carries the current truth only
    assert sum(len(r.boxes) for r in dataset_records(ds)) == len(before)


def test_simulated_experts_read_current_truth_and_no_matched_box_shows_as_not_drawn(imported, make_user):
    ds, _, _ = imported
    simulate_dataset_experts(dataset=ds, n_experts=3, seed=7)
    for image in Image.objects.filter(dataset=ds):
        compute_consensus(image=image)
    reviewer = make_user("rita@example.org", roles=["reviewer"])
    for cluster in Cluster.objects.filter(image__dataset=ds, status="disputed"):
        resolve_cluster(cluster=cluster, reviewer=reviewer)
    # before one-truth-per-lesion, the truth now held the import, the consensus and the review
    # copies of a lesion, and the panel drew two or three boxes on it
    simulate_dataset_experts(dataset=ds, n_experts=3, seed=8)
    recompute_dataset(dataset=ds, force=True)
    threshold = ground_truth.match_threshold()
    for image in Image.objects.filter(dataset=ds):
        truth = [b.as_box() for b in GroundTruthBox.objects.filter(image=image)]
        for ann in image.expert_annotations.all():
            boxes = [b.as_box() for b in ann.boxes.all()]
            for lesion in truth:
                assert sum(1 for b in boxes if iou(b, lesion) >= 0.3) <= 1
        boxes = list(ExpertBox.objects.filter(annotation__image=image).select_related("annotation"))
        for cluster in Cluster.objects.filter(image=image, status__in=["agreed", "disputed"]):  # computed now
            members = {m["expert"] for m in cluster.members}
            for b in boxes:
                if iou(b.as_box(), cluster.as_box()) >= threshold:  # drawn there: never "not drawn"
                    assert b.annotation.annotator_id in members, (cluster.pk, b.annotation.annotator_id)


@pytest.fixture
def panel(imported, make_user):
    ds, _, _ = imported
    image = Image.objects.filter(dataset=ds).order_by("original_name").first()
    experts = [make_user(f"e{i}@example.org", roles=["pathologist"]) for i in range(3)]
    reviewer = make_user("judge@example.org", roles=["reviewer"])
    return image, experts, reviewer


def _lesion_rows(image, lesion=LESIONS[0]):
    return [r for r in GroundTruthBox.with_history.filter(image=image).order_by("id") if iou(r.as_box(), lesion) >= 0.3]


def test_consensus_supersedes_the_import_and_a_recompute_replaces_only_its_own_boxes(panel):
    image, experts, _ = panel
    lesion = LESIONS[0]
    for user in experts:
        _annotate(image, user, [Box(lesion.x + 1, lesion.y, 60.0, 60.0, "LSIL")])
    compute_consensus(image=image)
    imported_row, first = _lesion_rows(image)
    assert (imported_row.source, first.source, first.label) == ("import", "consensus", "LSIL")
    assert imported_row.superseded_by_id == first.pk and imported_row.superseded_at is not None
    compute_consensus(image=image, force=True)  # same annotations: the same row stays
    assert [r.pk for r in GroundTruthBox.objects.filter(image=image, source="consensus")] == [first.pk]
    for user in experts[:2]:  # the experts change their minds: a new consensus box replaces the old
        _annotate(image, user, [Box(lesion.x, lesion.y, 60.0, 60.0, "ASC-H")])
    compute_consensus(image=image)
    current = GroundTruthBox.objects.get(image=image, x=lesion.x, y=lesion.y)
    first.refresh_from_db()
    assert (current.source, current.label, first.superseded_by_id) == ("consensus", "ASC-H", current.pk)
    imported_row.refresh_from_db()
    assert imported_row.superseded_by_id == current.pk
    _annotate(image, experts[2], [])  # no longer agreed: the imported reference is the truth again
    _annotate(image, experts[1], [Box(lesion.x, lesion.y, 60.0, 60.0, "NILM")])
    compute_consensus(image=image)
    assert [(r.source, r.label) for r in GroundTruthBox.objects.filter(image=image)
            if iou(r.as_box(), lesion) >= 0.3] == [("import", "HSIL")]


def test_a_later_review_decision_supersedes_an_earlier_one_and_both_stay_audited(panel):
    image, experts, reviewer = panel
    lesion = LESIONS[1]
    for user, label in zip(experts, ["NILM", "HSIL", "LSIL"], strict=True):
        _annotate(image, user, [Box(lesion.x, lesion.y, 60.0, 60.0, label)])
    compute_consensus(image=image)
    cluster = Cluster.objects.get(image=image, status="disputed")
    resolve_cluster(cluster=cluster, reviewer=reviewer, label="HSIL")
    reject_cluster(cluster=cluster, reviewer=reviewer, comment="debris after all")
    assert _current_per_lesion(image)[1] == 0
    resolve_cluster(cluster=cluster, reviewer=reviewer, label="LSIL", box=Box(lesion.x, lesion.y, 58.0, 60.0, "LSIL"))
    rows = _lesion_rows(image, lesion)
    assert [(r.source, r.label, r.superseded_at is None) for r in rows] == [
        ("import", "LSIL", False), ("review", "HSIL", False), ("review", "LSIL", True)]
    assert rows[0].superseded_by_id == rows[1].pk and rows[1].superseded_by_id is None  # retired by the rejection
    assert rows[2].decided_by == reviewer and rows[2].cluster_id_at_source == cluster.pk
    assert list(AuditEntry.objects.filter(cluster_id=cluster.pk).order_by("id").values_list("action", flat=True)) == [
        "accept", "reject", "adjust_box"]
    compute_consensus(image=image, force=True)  # a recompute never overrides the reviewer
    assert [(r.source, r.label) for r in GroundTruthBox.objects.filter(image=image)
            if iou(r.as_box(), lesion) >= 0.3] == [("review", "LSIL")]


def test_a_rejected_lesion_stays_out_of_the_truth_through_recompute_and_reimport(panel):
    image, experts, reviewer = panel
    lesion = LESIONS[2]
    for user, label in zip(experts, ["NILM", "HSIL", "LSIL"], strict=True):
        _annotate(image, user, [Box(lesion.x, lesion.y, 60.0, 60.0, label)])
    compute_consensus(image=image)
    reject_cluster(cluster=Cluster.objects.get(image=image), reviewer=reviewer)
    assert _current_per_lesion(image) == [1, 1, 0, 1]
    compute_consensus(image=image, force=True)
    assert ground_truth.add_imported(image=image, boxes=[lesion]) == 0
    assert _current_per_lesion(image) == [1, 1, 0, 1]


def test_exact_copies_in_one_import_count_once_and_a_cluster_box_supersedes_the_nuclei_it_holds(tmp_path):
    (tmp_path / "p.png").write_bytes(png_bytes(4300, size=(400, 300)))
    ds, _ = ensure_dataset(name="points", experts_per_image=3)
    import_images(dataset=ds, path=tmp_path / "p.png")
    image = Image.objects.get(dataset=ds)
    nuclei = [Box(100.0, 100.0, 40.0, 40.0, "HSIL"), Box(130.0, 110.0, 40.0, 40.0, "HSIL")]
    assert ground_truth.add_imported(image=image, boxes=nuclei + nuclei[:1], points=True) == 2
    cluster_box = Box(95.0, 95.0, 90.0, 70.0, "HSIL")  # IoU with each nucleus box < 0.5: points decide
    assert all(iou(cluster_box, n) < 0.5 for n in nuclei)
    ground_truth.apply_consensus({image.pk: [cluster_box]})
    assert [(r.source, r.x) for r in GroundTruthBox.objects.filter(image=image)] == [("consensus", 95.0)]
    assert GroundTruthBox.with_history.filter(image=image, source="import", superseded_by__x=95.0).count() == 2


def test_the_migration_repair_collapses_stored_copies_to_the_highest_precedence_newest(tmp_path, make_user):
    (tmp_path / "r.png").write_bytes(png_bytes(4400, size=(400, 300)))
    ds, _ = ensure_dataset(name="repair", experts_per_image=3)
    import_images(dataset=ds, path=tmp_path / "r.png")
    image = Image.objects.get(dataset=ds)
    a, b, c = LESIONS[:3]

    def row(box, source, dx=0.0):
        return GroundTruthBox.with_history.create(image=image, x=box.x + dx, y=box.y, width=box.width,
                                                  height=box.height, label=box.label, source=source)

    # what older versions stored: the import, consensus beside it, a copy per review decision
    copies = [row(a, "import"), row(a, "consensus", 1.0), row(a, "review", 2.0), row(a, "review", 1.5)]
    other = row(b, "import")
    on_rejected = row(c, "consensus")
    Cluster.objects.create(image=image, x=c.x, y=c.y, width=c.width, height=c.height, label=c.label,
                           votes=[0, 0, 0, 1, 0, 0], members=[], status="rejected", vote_share=1.0, mean_iou=1.0,
                           n_experts_found=1, n_experts=3)
    migration = importlib.import_module("annotation.migrations.0008_one_ground_truth_per_lesion")
    from django.apps import apps

    migration.repair(apps, None)
    assert sorted(GroundTruthBox.objects.filter(image=image).values_list("id", flat=True)) == sorted(
        [copies[3].pk, other.pk])
    for old in copies[:3]:
        old.refresh_from_db()
        assert old.superseded_at is not None and old.superseded_by_id == copies[3].pk
    on_rejected.refresh_from_db()
    assert on_rejected.superseded_at is not None and on_rejected.superseded_by_id is None
    assert GroundTruthBox.with_history.filter(image=image).count() == 6
    migration.repair(apps, None)  # a second run changes nothing
    assert GroundTruthBox.objects.filter(image=image).count() == 2


def test_training_truth_reads_one_box_per_lesion(panel):
    from training.services import truth_for

    image, experts, _ = panel
    for user in experts:
        _annotate(image, user, [Box(LESIONS[0].x, LESIONS[0].y, 60.0, 60.0, "NILM")])
    compute_consensus(image=image)
    truth = truth_for([image])[image.pk]
    assert len(truth) == len(LESIONS)
    labels = {b.label: votes for b, votes in truth}
    assert labels.keys() == {"NILM", "LSIL", "ASC-H", "SCC"}  # HSIL superseded by the consensus
    assert labels["NILM"][0] == pytest.approx(1.0) and labels["SCC"] is None


@pytest.mark.labelstudio
@pytest.mark.django_db(transaction=True)
def test_label_studio_ground_truth_is_the_current_truth_one_box_per_lesion(label_studio, imported, make_user):
    from annotation import labelstudio
    from annotation.services import flush_outbox

    ds, _, _ = imported
    image = Image.objects.filter(dataset=ds).order_by("original_name").first()
    experts = [make_user(f"e{i}@example.org", roles=["pathologist"]) for i in range(3)]
    for user, label in zip(experts, ["NILM", "LSIL", "HSIL"], strict=True):  # lesion 0 agreed, lesion 1 disputed
        _annotate(image, user, [Box(20.0, 20.0, 60.0, 60.0, "LSIL"), Box(160.0, 40.0, 60.0, 60.0, label)])
    compute_consensus(image=image)
    reviewer = make_user("judge@example.org", roles=["reviewer"])
    resolve_cluster(cluster=Cluster.objects.get(image=image, status="disputed"), reviewer=reviewer, label="HSIL")
    flush_outbox()
    image.refresh_from_db()
    remote = [a for a in labelstudio.task_annotations(image.ls_task_id) if a.ground_truth]
    assert len(remote) == 1
    sent = sorted(labelstudio.result_to_boxes(remote[0].model_dump()["result"], image.width, image.height),
                  key=Box.sort_key)
    current = sorted((b.as_box() for b in GroundTruthBox.objects.filter(image=image)), key=Box.sort_key)
    assert sent == current and len(sent) == len(LESIONS)
    assert {b.label for b in sent} == {"LSIL", "HSIL", "ASC-H", "SCC"}
