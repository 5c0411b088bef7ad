"""Reviewers resolve disputed clusters: ground truth, Label Studio outbox, append-only audit."""

import pytest
from django.db import IntegrityError, InternalError, connection, transaction
from django.utils import timezone

from annotation.geometry import Box
from annotation.models import Assignment, AuditEntry, Cluster, GroundTruthBox, OutboxMessage
from annotation.services import (
    AnnotationRejected,
    ReviewRefused,
    comment_on_cluster,
    compute_consensus,
    next_assignment,
    reject_cluster,
    request_another_expert,
    resolve_cluster,
    submit_annotation,
)
from tests.annotation.conftest import import_pngs

pytestmark = pytest.mark.django_db


@pytest.fixture
def disputed(tmp_path, make_user):
    (image,) = import_pngs(tmp_path / "imgs", "rev", 1, seed=900, size=(300, 200), prefix="d", experts_per_image=3)
    experts = [make_user(f"y{i}@example.org", roles=["pathologist"]) for i in range(4)]
    for user, label in zip(experts[:3], ["NILM", "HSIL", "LSIL"], strict=True):
        Assignment.objects.create(image=image, annotator=user, expires_at=timezone.now() + timezone.timedelta(hours=1))
        submit_annotation(image=image, annotator=user, boxes=[Box(20.0, 20.0, 50.0, 50.0, label)])
    compute_consensus(image=image)
    cluster = Cluster.objects.get(image=image)
    assert cluster.status == "disputed" and cluster.reasons == ["label_split"]
    reviewer = make_user("judge@example.org", roles=["reviewer"])
    return image, cluster, reviewer, experts


def test_resolving_sets_ground_truth_audits_and_queues_the_label_studio_write(disputed):
    image, cluster, reviewer, _ = disputed
    assert cluster.label == "HSIL"  # a 1-1-1 split: the vote goes to the most severe opinion
    resolve_cluster(cluster=cluster, reviewer=reviewer, label="LSIL", comment="koilocytes")
    cluster.refresh_from_db()
    assert cluster.status == "resolved" and cluster.label == "LSIL" and cluster.resolved_by == reviewer
    truth = GroundTruthBox.objects.get(image=image, source="review")
    assert (truth.label, truth.x, truth.width) == ("LSIL", cluster.x, cluster.width)
    entry = AuditEntry.objects.get()
    assert entry.actor == reviewer and entry.action == "set_label"
    assert entry.before["status"] == "disputed" and entry.after == {**entry.before, "status": "resolved", "label": "LSIL"}
    assert entry.comment == "koilocytes"
    assert OutboxMessage.objects.filter(kind="push_ground_truth", object_id=image.pk, status="pending").exists()


def test_adjusting_the_box_is_recorded_with_before_and_after(disputed):
    image, cluster, reviewer, _ = disputed
    resolve_cluster(cluster=cluster, reviewer=reviewer, box=Box(22.0, 21.0, 48.0, 49.0, "HSIL"))
    entry = AuditEntry.objects.get()
    assert entry.action == "adjust_box" and entry.after["x"] == 22.0 and entry.before["x"] == cluster.x


def test_a_box_outside_the_image_is_refused_and_nothing_changes(disputed):
    image, cluster, reviewer, _ = disputed
    with pytest.raises(AnnotationRejected):
        resolve_cluster(cluster=cluster, reviewer=reviewer, box=Box(290.0, 20.0, 50.0, 50.0, "HSIL"))
    cluster.refresh_from_db()
    assert cluster.status == "disputed" and not AuditEntry.objects.exists()


def test_rejecting_removes_the_cluster_from_ground_truth(disputed):
    image, cluster, reviewer, _ = disputed
    reject_cluster(cluster=cluster, reviewer=reviewer, comment="debris")
    assert Cluster.objects.get(pk=cluster.pk).status == "rejected"
    assert not GroundTruthBox.objects.filter(image=image, source__in=["consensus", "review"]).exists()
    assert AuditEntry.objects.get().action == "reject"


def test_a_reviewer_cannot_resolve_an_image_they_annotated(disputed, settings):
    image, cluster, _, experts = disputed
    from cytoloop.roles import Role, set_roles

    set_roles(experts[0], [Role.REVIEWER])
    with pytest.raises(ReviewRefused, match="annotated this image yourself"):
        resolve_cluster(cluster=cluster, reviewer=experts[0], label="NILM")
    settings.REVIEWERS_MAY_RESOLVE_OWN_IMAGES = True
    resolve_cluster(cluster=cluster, reviewer=experts[0], label="NILM")


def test_only_reviewers_resolve(disputed):
    image, cluster, _, experts = disputed
    with pytest.raises(ReviewRefused, match="only reviewers"):
        resolve_cluster(cluster=cluster, reviewer=experts[3], label="NILM")


def test_asking_for_one_more_expert_assigns_a_new_pathologist_and_consensus_waits(disputed):
    image, cluster, reviewer, experts = disputed
    assignment = request_another_expert(image=image, reviewer=reviewer)
    assert assignment.annotator == experts[3] and assignment.extra
    assert next_assignment(annotator=experts[3]).image_id == image.pk
    assert compute_consensus(image=image, force=False) in ("not_ready", "unchanged")
    submit_annotation(image=image, annotator=experts[3], boxes=[Box(20.0, 20.0, 50.0, 50.0, "HSIL")])
    assert compute_consensus(image=image) == "computed"
    new = Cluster.objects.get(image=image)
    assert new.n_experts == 4 and new.label == "HSIL" and new.status == "disputed"  # 2 of 4 is no majority
    with pytest.raises(ReviewRefused, match="already annotated"):
        request_another_expert(image=image, reviewer=reviewer)
    assert AuditEntry.objects.filter(action="request_expert").count() == 1


def test_comments_are_audited_and_empty_ones_refused(disputed):
    image, cluster, reviewer, _ = disputed
    comment_on_cluster(cluster=cluster, reviewer=reviewer, text="Look at the upper left nucleus")
    with pytest.raises(ReviewRefused):
        comment_on_cluster(cluster=cluster, reviewer=reviewer, text="   ")
    assert AuditEntry.objects.get().comment == "Look at the upper left nucleus"


def test_the_audit_log_is_append_only_in_the_application_and_the_database(disputed):
    image, cluster, reviewer, _ = disputed
    resolve_cluster(cluster=cluster, reviewer=reviewer)
    entry = AuditEntry.objects.get()
    entry.comment = "rewritten"
    with pytest.raises(ValueError, match="append-only"):
        entry.save()
    with pytest.raises(ValueError, match="append-only"):
        entry.delete()
    if connection.vendor == "postgresql":
        with pytest.raises((InternalError, IntegrityError), match="append-only"), transaction.atomic():
            AuditEntry.objects.filter(pk=entry.pk).update(comment="rewritten")
        with pytest.raises((InternalError, IntegrityError), match="append-only"), transaction.atomic():
            AuditEntry.objects.filter(pk=entry.pk).delete()
    assert AuditEntry.objects.get(pk=entry.pk).comment == ""


def test_a_reviewed_cluster_survives_a_recompute(disputed):
    image, cluster, reviewer, experts = disputed
    resolve_cluster(cluster=cluster, reviewer=reviewer, label="HSIL")
    compute_consensus(image=image, force=True)
    assert list(Cluster.objects.filter(image=image).values_list("status", "label")) == [("resolved", "HSIL")]
