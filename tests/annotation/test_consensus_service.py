"""Consensus on the database: automatic after the N-th annotation, idempotent, bulk recompute."""

import pytest
from django.utils import timezone

from annotation.geometry import Box
from annotation.models import Assignment, Cluster, ConsensusState, GroundTruthBox
from annotation.services import (
    compute_consensus,
    consensus_sweep,
    recompute_dataset,
    submit_annotation,
)
from tests.annotation.conftest import import_pngs
from tests.helpers import manage

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(tmp_path, make_user):
    images = import_pngs(tmp_path / "imgs", "cons", 3, seed=700, size=(300, 200), prefix="c", experts_per_image=3)
    experts = [make_user(f"x{i}@example.org", roles=["pathologist"]) for i in range(3)]
    return images[0].dataset, images, experts


def _annotate(image, user, boxes):
    Assignment.objects.get_or_create(image=image, annotator=user,
                                     defaults={"expires_at": timezone.now() + timezone.timedelta(hours=1)})
    Assignment.objects.filter(image=image, annotator=user).update(status="active")
    return submit_annotation(image=image, annotator=user, boxes=boxes)


def test_consensus_waits_for_the_nth_annotation_then_agrees_and_disputes(setup):
    ds, images, experts = setup
    image = images[0]
    a = Box(10.0, 10.0, 40.0, 40.0, "HSIL")
    far = Box(200.0, 100.0, 30.0, 30.0, "LSIL")
    _annotate(image, experts[0], [a, far])
    _annotate(image, experts[1], [Box(11.0, 10.0, 40.0, 40.0, "HSIL")])
    assert compute_consensus(image=image) == "not_ready"
    _annotate(image, experts[2], [Box(10.0, 11.0, 40.0, 40.0, "ASC-H")])
    assert compute_consensus(image=image) == "computed"
    clusters = {c.status: c for c in Cluster.objects.filter(image=image)}
    agreed, disputed = clusters["agreed"], clusters["disputed"]
    assert agreed.label == "HSIL" and agreed.vote_share == pytest.approx(2 / 3)
    assert agreed.votes[4] == pytest.approx(2 / 3) and agreed.votes[3] == pytest.approx(1 / 3)
    assert disputed.reasons == ["too_few_experts"] and disputed.label == "LSIL"
    assert disputed.risk > 0
    assert list(GroundTruthBox.objects.filter(image=image, source="consensus").values_list("label", flat=True)) == ["HSIL"]
    image.refresh_from_db()
    assert image.consensus_at is not None


def test_running_consensus_again_on_the_same_annotations_changes_nothing(setup):
    ds, images, experts = setup
    for user in experts:
        _annotate(images[0], user, [Box(5.0, 5.0, 20.0, 20.0, "NILM")])
    assert compute_consensus(image=images[0]) == "computed"
    ids = list(Cluster.objects.values_list("id", flat=True))
    assert compute_consensus(image=images[0]) == "unchanged"
    assert list(Cluster.objects.values_list("id", flat=True)) == ids
    # an edit recomputes
    _annotate(images[0], experts[0], [Box(5.0, 5.0, 20.0, 20.0, "SCC")])
    assert compute_consensus(image=images[0]) == "computed"


def test_a_dispute_between_nilm_and_hsil_outranks_one_between_asch_and_hsil(setup):
    ds, images, experts = setup
    for user, label in zip(experts, ["NILM", "HSIL", "ASC-US"], strict=True):
        _annotate(images[0], user, [Box(5.0, 5.0, 20.0, 20.0, label)])
    for user, label in zip(experts, ["ASC-H", "HSIL", "LSIL"], strict=True):
        _annotate(images[1], user, [Box(5.0, 5.0, 20.0, 20.0, label)])
    for user, label in zip(experts, ["ASC-H", "HSIL", "HSIL"], strict=True):
        _annotate(images[2], user, [Box(5.0, 5.0, 20.0, 20.0, label), Box(100.0, 100.0, 30.0, 30.0, "ASC-H")])
    recompute_dataset(dataset=ds)
    disputed = list(Cluster.objects.filter(status="disputed").order_by("-risk"))
    assert disputed[0].image_id == images[0].pk  # NILM vs HSIL first


def test_recompute_dataset_matches_per_image_consensus_and_skips_unchanged(setup):
    ds, images, experts = setup
    for n, image in enumerate(images):
        for i, user in enumerate(experts):
            _annotate(image, user, [Box(5.0 + i, 5.0, 20.0, 20.0, ["NILM", "LSIL", "HSIL"][(i + n) % 3]),
                                    Box(150.0, 50.0 + i, 40.0, 40.0, "SCC")])
    for image in images:
        compute_consensus(image=image)
    single = sorted(Cluster.objects.values_list("image_id", "label", "status", "x", "y"))
    stats = recompute_dataset(dataset=ds, force=True)
    assert stats["computed"] == 3
    assert sorted(Cluster.objects.values_list("image_id", "label", "status", "x", "y")) == single
    assert recompute_dataset(dataset=ds)["unchanged"] == 3
    assert ConsensusState.objects.count() == 3


def test_the_sweep_computes_what_the_broker_never_delivered(setup):
    ds, images, experts = setup
    for user in experts:
        _annotate(images[1], user, [Box(5.0, 5.0, 20.0, 20.0, "LSIL")])
    assert not Cluster.objects.exists()  # on_commit does not run inside this test's transaction
    assert consensus_sweep() == {"computed": 1}
    assert consensus_sweep() == {}


def test_recompute_command_reports_and_refuses_unknown_dataset(setup, transactional_db):
    result = manage("recompute_consensus", "cons")
    assert result.returncode == 0, result.stderr
    assert "0 computed" in result.stdout and "3 waiting for annotations" in result.stdout
    bad = manage("recompute_consensus", "nope")
    assert bad.returncode != 0 and "no dataset named 'nope'" in bad.stderr
