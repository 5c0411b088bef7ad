"""Model help in consensus: a model box accepted unchanged is the model's vote, counted once, never
an independent expert (annotation.consensus.merge_assisted, and the stored clusters)."""

from __future__ import annotations

import pytest

from annotation.consensus import (
    AGREED,
    DISPUTED,
    LABEL_SPLIT,
    MODEL_VOTER,
    TOO_FEW_EXPERTS,
    ConsensusConfig,
    group_model_boxes,
    merge,
    merge_assisted,
)
from annotation.geometry import Box

MODEL_BOX = Box(10.0, 10.0, 40.0, 40.0, "LSIL")


def test_two_experts_accepting_one_model_box_count_once_as_the_model_and_leave_it_disputed():
    # a, b accepted the model's LSIL box unchanged; c drew its own LSIL box there
    annotations = {"a": [], "b": [], "c": [Box(11.0, 10.0, 40.0, 40.0, "LSIL")]}
    [cluster] = merge_assisted(annotations, [MODEL_BOX], n_experts=3)
    assert cluster.members == (("c", 0), (MODEL_VOTER, 0))
    assert cluster.status == DISPUTED and cluster.reasons == (TOO_FEW_EXPERTS,)
    assert cluster.n_experts_found == 1 and cluster.label == "LSIL"
    assert cluster.votes[2] == pytest.approx(1.0)
    # counted as the experts' own votes (the "expert" setting), the same boxes agree
    [as_experts] = merge({"a": [MODEL_BOX], "b": [MODEL_BOX], "c": annotations["c"]})
    assert as_experts.status == AGREED


def test_a_cluster_only_the_model_supports_is_disputed_whatever_the_panel():
    [cluster] = merge_assisted({"a": [], "b": [], "c": []}, [MODEL_BOX])
    assert (cluster.status, cluster.reasons, cluster.n_experts_found, cluster.label) == (
        DISPUTED, (TOO_FEW_EXPERTS,), 0, "LSIL")


def test_the_model_votes_but_never_breaks_the_experts_tie():
    annotations = {"a": [Box(10.0, 10.0, 40.0, 40.0, "HSIL")], "b": [Box(10.0, 11.0, 40.0, 40.0, "LSIL")], "c": []}
    [cluster] = merge_assisted(annotations, [MODEL_BOX], n_experts=3)
    assert cluster.status == DISPUTED and LABEL_SPLIT in cluster.reasons
    assert cluster.label == "HSIL"  # the experts' 1-1 tie goes to the more severe, not to the model's LSIL
    assert cluster.votes[2] == pytest.approx(2 / 3) and cluster.votes[4] == pytest.approx(1 / 3)


def test_experts_who_agree_are_agreed_and_the_model_dissent_shows_in_the_votes():
    annotations = {"a": [Box(10.0, 10.0, 40.0, 40.0, "HSIL")], "b": [Box(10.0, 11.0, 40.0, 40.0, "HSIL")], "c": []}
    [cluster] = merge_assisted(annotations, [MODEL_BOX], n_experts=3)
    assert cluster.status == AGREED and cluster.label == "HSIL" and cluster.n_experts_found == 2
    assert cluster.votes[4] == pytest.approx(2 / 3) and cluster.votes[2] == pytest.approx(1 / 3)


def test_without_model_boxes_it_is_merge_exactly():
    annotations = {"a": [Box(1.0, 1.0, 9.0, 9.0, "NILM")], "b": [Box(1.0, 1.0, 9.0, 9.0, "SCC")]}
    assert merge_assisted(annotations, []) == merge(annotations)


def test_copies_of_one_model_box_are_one_vote_and_other_versions_or_labels_are_not():
    moved = Box(10.5, 10.0, 40.0, 40.0, "LSIL")  # within the same-box IoU
    groups = group_model_boxes([("det-1", MODEL_BOX), ("det-1", moved), ("det-2", MODEL_BOX),
                                ("det-1", Box(10.0, 10.0, 40.0, 40.0, "HSIL"))])
    assert groups == [[0, 1], [2], [3]]


def test_the_setting_is_checked():
    with pytest.raises(ValueError, match="model_boxes"):
        ConsensusConfig(model_boxes="both")


# --- stored consensus, agreement and the dashboard (ExpertBox rows made directly) ---------------


@pytest.fixture
def helped(db, tmp_path, make_user):
    """One 300x200 image with a model's LSIL box, three experts and a function that stores an
    expert's boxes: ("drawn", Box) | ("accepted", None) | ("edited", Box)."""
    from annotation.models import ExpertAnnotation, ExpertBox, Image, PredictionBox
    from annotation.services import ensure_dataset, import_images
    from tests.annotation.conftest import png_bytes

    (tmp_path / "m.png").write_bytes(png_bytes(4500, size=(300, 200)))
    ds, _ = ensure_dataset(name="helped", experts_per_image=3)
    import_images(dataset=ds, path=tmp_path / "m.png")
    image = Image.objects.get(dataset=ds)
    prediction = PredictionBox.objects.create(image=image, x=MODEL_BOX.x, y=MODEL_BOX.y, width=MODEL_BOX.width,
                                              height=MODEL_BOX.height, label=MODEL_BOX.label, score=0.8,
                                              model_version="det-1+cls-1")
    experts = [make_user(f"m{i}@example.org", roles=["pathologist"]) for i in range(3)]

    def save(user, *items):
        annotation = ExpertAnnotation.objects.create(image=image, annotator=user, origin="editor")
        for kind, box in items:
            box = box or MODEL_BOX
            extra = {} if kind == "drawn" else {"prediction": prediction, "prediction_model": "det-1+cls-1",
                                                "prediction_changed": kind == "edited"}
            ExpertBox.objects.create(annotation=annotation, x=box.x, y=box.y, width=box.width, height=box.height,
                                     label=box.label, **extra)

    return image, experts, save


def test_stored_consensus_counts_an_accepted_model_box_once_as_the_model(helped):
    from annotation.models import Cluster, GroundTruthBox
    from annotation.services import compute_consensus

    image, (e1, e2, e3), save = helped
    save(e1, ("accepted", None))
    save(e2, ("accepted", None))
    save(e3, ("drawn", Box(11.0, 10.0, 40.0, 40.0, "LSIL")))
    assert compute_consensus(image=image) == "computed"
    cluster = Cluster.objects.get(image=image)
    assert cluster.status == "disputed" and cluster.reasons == ["too_few_experts"] and cluster.n_experts_found == 1
    by_expert = {m["expert"]: m for m in cluster.members}
    assert by_expert.keys() == {e1.pk, e2.pk, e3.pk}  # nobody shows as "not drawn"
    assert by_expert[e1.pk]["model_vote"] and by_expert[e2.pk]["model"] == "det-1+cls-1"
    assert not by_expert[e3.pk].get("model_vote")
    assert not GroundTruthBox.objects.filter(image=image, source="consensus").exists()


def test_the_expert_setting_counts_accepted_model_boxes_as_the_experts_own(helped, settings):
    from annotation.models import Cluster
    from annotation.services import compute_consensus

    image, (e1, e2, e3), save = helped
    save(e1, ("accepted", None))
    save(e2, ("accepted", None))
    save(e3, ("drawn", Box(11.0, 10.0, 40.0, 40.0, "LSIL")))
    compute_consensus(image=image)
    assert Cluster.objects.get(image=image).status == "disputed"
    settings.CONSENSUS_MODEL_BOXES = "expert"
    assert compute_consensus(image=image) == "computed"  # the switch alone recomputes what it changes
    cluster = Cluster.objects.get(image=image)
    assert cluster.status == "agreed" and cluster.n_experts_found == 3
    assert not any(m.get("model_vote") for m in cluster.members)


def test_a_model_box_the_expert_edited_is_the_experts_vote(helped):
    from annotation.models import Cluster
    from annotation.services import compute_consensus

    image, (e1, e2, e3), save = helped
    save(e1, ("edited", Box(10.0, 10.0, 44.0, 40.0, "LSIL")))
    save(e2, ("accepted", None))
    save(e3, ("drawn", Box(11.0, 10.0, 40.0, 40.0, "LSIL")))
    compute_consensus(image=image)
    cluster = Cluster.objects.get(image=image)
    assert cluster.status == "agreed" and cluster.n_experts_found == 2  # e1 and e3 are independent


def test_agreement_statistics_leave_the_model_vote_out_of_the_expert(helped):
    from annotation.selectors import cluster_label_matrix
    from annotation.services import compute_consensus

    image, (e1, e2, e3), save = helped
    save(e1, ("accepted", None), ("drawn", Box(200.0, 100.0, 40.0, 40.0, "HSIL")))
    save(e2, ("drawn", Box(10.0, 11.0, 40.0, 40.0, "LSIL")), ("drawn", Box(201.0, 100.0, 40.0, 40.0, "HSIL")))
    save(e3, ("drawn", Box(11.0, 10.0, 40.0, 40.0, "LSIL")))
    compute_consensus(image=image)
    labels, _, experts, _ = cluster_label_matrix(image.dataset)
    column = experts.index(e1.pk)
    assert sorted(labels[:, column].tolist()) == [-1, 4]  # the model's LSIL is not e1's label


def test_the_agreement_dashboard_shows_each_experts_share_of_model_boxes_accepted_unchanged(helped, client_as):
    from django.urls import reverse

    from annotation.services import compute_consensus

    image, (e1, e2, e3), save = helped
    save(e1, ("accepted", None), ("drawn", Box(200.0, 100.0, 40.0, 40.0, "HSIL")))
    save(e2, ("edited", Box(10.0, 10.0, 44.0, 40.0, "LSIL")))
    save(e3, ("drawn", Box(11.0, 10.0, 40.0, 40.0, "LSIL")))
    compute_consensus(image=image)
    response = client_as("reviewer").get(reverse("review:dashboard"), {"dataset": "helped"})
    assert response.status_code == 200
    rows = {r["user_id"]: r for r in response.context["model_help"]}
    assert (rows[e1.pk]["accepted"], rows[e1.pk]["boxes"], rows[e1.pk]["accepted_percent"]) == (1, 2, 50.0)
    assert (rows[e2.pk]["accepted"], rows[e2.pk]["edited"], rows[e3.pk]["accepted"]) == (0, 1, 0)
    html = response.content.decode()
    assert 'id="model-help-table"' in html and "Automation bias" in html
    assert f'<tr data-user="{e1.pk}">' in html and ">50.0%<" in html
