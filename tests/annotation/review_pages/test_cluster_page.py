"""Reviewer pages: the cluster review page, its decisions, their confirmations and audit rows.

Django test client against the real PostgreSQL; annotations go in through annotation.services
(save_expert_annotation, compute_consensus), as simulated and real experts' annotations do.
"""

import re
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.urls import reverse
from django.utils import timezone

from annotation import forms, services
from annotation.geometry import Box
from annotation.models import Assignment, AuditEntry, Cluster, GroundTruthBox, Image, PredictionBox
from tests.annotation.review_pages.conftest import (
    P1,
    P2,
    P3,
    _annotate,
    _confirmed,
    _images,
    _rows,
    _token,
    _url,
)

pytestmark = pytest.mark.django_db


# --- the review page ----------------------------------------------------------------------------


def test_the_review_page_shows_every_experts_boxes_votes_and_the_image(as_reviewer, queue, experts):
    cluster = queue["alone"]  # expert 1 drew LSIL, expert 2 drew nothing
    html = as_reviewer.get(_url(cluster)).content.decode()
    image = cluster.image
    assert f'href="{image.file.url}"' in html and image.file.url.startswith("/media/")
    assert html.count('class="ebox by-e1 member"') == 2  # the full view and the close-up
    assert 'id="cluster-box"' in html and 'id="show-e1"' in html and 'id="show-e2"' in html
    votes = html[html.index('id="vote-table"'):html.index("</table>", html.index('id="vote-table"'))]
    assert "expert1@example.org" in votes and "expert2@example.org" in votes
    assert votes.count('pill lab-LSIL') == 1 and votes.count("not drawn") == 1
    assert re.search(r'data-label="LSIL"[^>]*>\s*<th scope="row">LSIL</th>\s*<td class="bar"><span style="width: 100.0%">', html)
    assert "No model prediction yet." in html


def test_the_review_page_shows_boxes_of_every_expert_outside_the_cluster_too(as_reviewer, tmp_path, experts):
    (image,) = _images(tmp_path, "many", 1, experts_per_image=3)
    clusters = _annotate(image, {
        experts[0]: [("NILM", P1), ("LSIL", P2)],
        experts[1]: [("HSIL", P1)],
        experts[2]: [("LSIL", P1), ("SCC", P3)],
    })
    disputed = next(c for c in clusters if c.status == "disputed" and c.x < 100)
    html = as_reviewer.get(_url(disputed)).content.decode()
    assert html.count('class="ebox ') == 2 * 5  # five boxes, drawn in both views
    assert html.count(" member\"") == 2 * 3 and html.count(" other\"") == 2 * 2
    for label in ("NILM", "HSIL", "LSIL"):
        assert f"E{['NILM', 'HSIL', 'LSIL'].index(label) + 1} {label}" in html


def test_the_models_opinion_is_the_prediction_overlapping_the_cluster(as_reviewer, queue):
    cluster = queue["severe"]
    PredictionBox.objects.create(image_id=cluster.image_id, x=22, y=21, width=48, height=50, label="HSIL",
                                 score=0.87, model_version="yolo-v3")
    PredictionBox.objects.create(image_id=cluster.image_id, x=200, y=120, width=40, height=40, label="NILM",
                                 score=0.99, model_version="yolo-v3")  # elsewhere: not an opinion on it
    html = as_reviewer.get(_url(cluster)).content.decode()
    opinion = html[html.index('id="model-opinion"'):html.index("</section>", html.index('id="model-opinion"'))]
    assert "HSIL" in opinion and "0.87" in opinion and "yolo-v3" in opinion and "NILM" not in opinion
    assert "No model prediction yet" not in html


def test_a_cluster_whose_image_has_no_consensus_is_refused(as_reviewer, queue):
    cluster = queue["severe"]
    Image.objects.filter(pk=cluster.image_id).update(consensus_at=None)
    response = as_reviewer.get(_url(cluster))
    assert response.status_code == 403 and "expert1@example.org" not in response.content.decode()
    assert as_reviewer.post(_url(cluster), {"action": "label", "label": "HSIL"}).status_code == 403
    assert Cluster.objects.get(pk=cluster.pk).status == "disputed" and not AuditEntry.objects.exists()


def test_setting_the_label_resolves_through_the_service_and_is_audited(as_reviewer, queue, reviewer):
    cluster = queue["severe"]
    response = as_reviewer.post(_url(cluster), {"action": "label", "label": "LSIL", "note": "koilocytes"})
    assert response.status_code == 302
    cluster.refresh_from_db()
    assert (cluster.status, cluster.label, cluster.resolved_by) == ("resolved", "LSIL", reviewer)
    assert GroundTruthBox.objects.get(image_id=cluster.image_id, source="review").label == "LSIL"
    entry = AuditEntry.objects.get()
    assert (entry.actor, entry.action, entry.cluster_id, entry.comment) == (reviewer, "set_label", cluster.pk, "koilocytes")


def test_after_a_decision_the_next_riskiest_dispute_opens_with_a_message(as_reviewer, queue):
    response = as_reviewer.post(_url(queue["severe"]), {"action": "label", "label": "HSIL"}, follow=True)
    assert response.redirect_chain[-1][0] == _url(queue["alone"]) + f"?from={queue['severe'].pk}"
    html = response.content.decode()
    assert f"Cluster #{queue['severe'].pk}" in html and "resolved as HSIL" in html
    assert 'id="just-decided"' in html
    for key in ("alone", "mild"):
        _confirmed(as_reviewer, _url(queue[key]), {"action": "reject"})
    last = as_reviewer.post(_url(queue["weak"]), {"action": "label", "label": "LSIL"}, follow=True)
    assert last.redirect_chain[-1][0] == reverse("review:disputes")
    assert "No disputed cluster is left for you" in last.content.decode()


def test_adjusting_the_box_resolves_with_the_new_box(as_reviewer, queue, reviewer):
    cluster = queue["weak"]
    response = as_reviewer.post(_url(cluster), {"action": "box", "x": "24", "y": "23.5", "width": "50",
                                                "height": "52", "label": "LSIL"})
    assert response.status_code == 302
    cluster.refresh_from_db()
    assert (cluster.status, cluster.x, cluster.y, cluster.width, cluster.height) == ("resolved", 24.0, 23.5, 50.0, 52.0)
    entry = AuditEntry.objects.get()
    assert entry.action == "adjust_box" and entry.actor == reviewer and entry.after["x"] == 24.0
    truth = GroundTruthBox.objects.get(image_id=cluster.image_id, source="review")
    assert (truth.x, truth.height, truth.label) == (24.0, 52.0, "LSIL")


@pytest.mark.parametrize("box", [
    {"x": "290", "y": "20", "width": "50", "height": "50"},  # past the right edge
    {"x": "20", "y": "20", "width": "0", "height": "50"},
    {"x": "twenty", "y": "20", "width": "50", "height": "50"},
    {"x": "nan", "y": "20", "width": "50", "height": "50"},
])
def test_a_bad_box_is_refused_with_400_and_nothing_changes(as_reviewer, queue, box):
    cluster = queue["severe"]
    response = as_reviewer.post(_url(cluster), {"action": "box", "label": "HSIL", **box})
    assert response.status_code == 400
    html = response.content.decode()
    assert 'id="review-error"' in html and "Nothing was changed" in html
    assert f'value="{box["x"]}"' in html  # what was typed stays in the form
    after = Cluster.objects.get(pk=cluster.pk)
    assert (after.status, after.x, after.label) == ("disputed", cluster.x, cluster.label)
    assert not AuditEntry.objects.exists() and not GroundTruthBox.objects.filter(source="review").exists()


def test_rejecting_marks_the_cluster_not_a_lesion(as_reviewer, queue, reviewer):
    cluster = queue["alone"]
    assert _confirmed(as_reviewer, _url(cluster), {"action": "reject", "note": "debris"}).status_code == 302
    assert Cluster.objects.get(pk=cluster.pk).status == "rejected"
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.actor, entry.comment) == ("reject", reviewer, "debris")


def test_asking_for_one_more_expert_assigns_a_pathologist_and_is_audited(as_reviewer, queue, experts, reviewer):
    cluster = queue["severe"]
    assert as_reviewer.post(_url(cluster), {"action": "expert"}).status_code == 302
    assignment = Assignment.objects.get(image_id=cluster.image_id, extra=True)
    assert assignment.annotator == experts[2]
    assert AuditEntry.objects.get().action == "request_expert"
    html = as_reviewer.get(_url(cluster)).content.decode()
    assert 'id="pending-expert"' in html and "expert3@example.org" in html
    again = as_reviewer.post(_url(cluster), {"action": "expert"})
    assert again.status_code == 400 and "annotating this image right now" in again.content.decode()
    assert Assignment.objects.filter(image_id=cluster.image_id, extra=True).count() == 1


def test_a_comment_is_audited_and_an_empty_one_refused(as_reviewer, queue, reviewer):
    cluster = queue["mild"]
    response = as_reviewer.post(_url(cluster), {"action": "comment", "text": "Look at the upper nucleus"})
    assert response.status_code == 302 and response["Location"].endswith("#audit")
    assert Cluster.objects.get(pk=cluster.pk).status == "disputed"
    html = as_reviewer.get(_url(cluster)).content.decode()
    assert "Look at the upper nucleus" in html[html.index('id="audit-table"'):]
    empty = as_reviewer.post(_url(cluster), {"action": "comment", "text": "  "})
    assert empty.status_code == 400 and "a comment needs some text" in empty.content.decode()
    assert AuditEntry.objects.filter(action="comment").count() == 1


def test_the_audit_trail_shows_who_when_and_before_and_after(as_reviewer, queue, reviewer):
    cluster = queue["mild"]
    services.resolve_cluster(cluster=cluster, reviewer=reviewer, label="ASC-H", comment="second look")
    html = as_reviewer.get(_url(cluster)).content.decode()
    audit = html[html.index('id="audit-table"'):]
    assert "rita@example.org" in audit and 'data-action="set_label"' in audit and "Set Label" in audit
    assert "disputed → resolved" in audit and "HSIL → ASC-H" in audit and "second look" in audit


def test_a_reviewer_cannot_decide_on_an_image_they_annotated(client, queue, experts, settings):
    from cytoloop.roles import Role, set_roles

    expert = experts[0]
    set_roles(expert, [Role.REVIEWER])
    client.force_login(expert)
    cluster = queue["severe"]
    page = client.get(_url(cluster)).content.decode()
    assert 'id="own-image"' in page and "<fieldset disabled>" in page
    response = client.post(_url(cluster), {"action": "label", "label": "NILM"})
    assert response.status_code == 400 and "annotated this image yourself" in response.content.decode()
    assert Cluster.objects.get(pk=cluster.pk).status == "disputed" and not AuditEntry.objects.exists()


def test_an_unknown_label_or_action_is_400(as_reviewer, queue):
    cluster = queue["severe"]
    assert as_reviewer.post(_url(cluster), {"action": "label", "label": "CIN2"}).status_code == 400
    assert as_reviewer.post(_url(cluster), {"action": "delete"}).status_code == 400
    assert Cluster.objects.get(pk=cluster.pk).status == "disputed"


@pytest.mark.parametrize(("post", "error"), [
    ({}, forms.UNKNOWN_ACTION),
    ({"action": "delete"}, forms.UNKNOWN_ACTION),
    ({"action": "label", "label": "CIN2"}, forms.NOT_A_CLASS),
    ({"action": "box", "x": "1", "y": "2", "width": "w", "height": "4", "label": "CIN2"}, forms.NOT_NUMBERS),
    ({"action": "box", "x": "1", "y": "inf", "width": "3", "height": "4"}, forms.NOT_FINITE),
    ({"action": "box", "x": "1", "y": "2", "width": "3", "height": "4", "label": "CIN2"}, forms.NOT_A_CLASS),
])
def test_the_review_form_names_the_first_thing_wrong(post, error):
    form = forms.ReviewDecisionForm(post, cluster=SimpleNamespace(label="HSIL"))
    assert not form.is_valid() and form.error_text() == error


def test_an_adjusted_box_keeps_the_clusters_label_unless_another_is_given():
    form = forms.ReviewDecisionForm({"action": "box", "x": "1", "y": "2", "width": "3", "height": "4"},
                                    cluster=SimpleNamespace(label="HSIL"))
    assert form.is_valid() and form.cleaned_data["box"] == Box(1.0, 2.0, 3.0, 4.0, "HSIL")
    assert form.decision().box == (1.0, 2.0, 3.0, 4.0)



# --- decisions that matter ask first and can be changed; audit rows on their own object -----------

WHEN = re.compile(r"\b\d{1,2} [A-Z][a-z]{2} \d{4}, \d{2}:\d{2} UTC\b")


def test_a_rejection_is_refused_until_the_reviewer_confirms_what_it_decides(as_reviewer, queue):
    cluster = queue["severe"]
    asked = as_reviewer.post(_url(cluster), {"action": "reject", "note": "debris"})
    assert asked.status_code == 409
    html = asked.content.decode()
    statement = html[html.index('id="confirm-statement"'):]
    statement = statement[:statement.index("</p>")]
    assert f"Reject cluster #{cluster.pk} as not a lesion" in statement
    assert "2 of 2 experts drew it: NILM, HSIL (risk 10)" in statement and "leaves the ground truth" in statement
    assert 'name="note" value="debris"' in html  # the confirmation re-posts what was typed
    wrong = as_reviewer.post(_url(cluster), {"action": "reject", "confirm": "0" * 24})
    assert wrong.status_code == 409
    assert Cluster.objects.get(pk=cluster.pk).status == "disputed" and not AuditEntry.objects.exists()
    done = as_reviewer.post(_url(cluster), {"action": "reject", "note": "debris", "confirm": _token(asked)})
    assert done.status_code == 302 and Cluster.objects.get(pk=cluster.pk).status == "rejected"
    assert AuditEntry.objects.get().comment == "debris"


@pytest.fixture
def atypical_majority(tmp_path, experts):
    """One image, three experts: HSIL, SCC and NILM on one cluster (a label split, risk 12)."""
    e1, e2, e3 = experts
    (image,) = _images(tmp_path, "am", 1, experts_per_image=3)
    (cluster,) = _annotate(image, {e1: [("HSIL", P1)], e2: [("SCC", P1)], e3: [("NILM", P1)]})
    assert cluster.status == "disputed"
    return cluster


def test_nilm_over_a_majority_of_atypical_votes_needs_a_confirmation(as_reviewer, atypical_majority):
    cluster = atypical_majority
    asked = as_reviewer.post(_url(cluster), {"action": "label", "label": "NILM"})
    assert asked.status_code == 409
    assert "overrides 2 of 3 experts who called it atypical" in asked.content.decode()
    assert Cluster.objects.get(pk=cluster.pk).status == "disputed" and not AuditEntry.objects.exists()
    assert _confirmed(as_reviewer, _url(cluster), {"action": "label", "label": "NILM"}).status_code == 302
    assert Cluster.objects.get(pk=cluster.pk).label == "NILM"


def test_a_confirmation_of_a_statement_that_no_longer_holds_is_asked_again(as_reviewer, queue, make_user):
    cluster = queue["severe"]
    token = _token(as_reviewer.post(_url(cluster), {"action": "reject"}))
    other = make_user("otto@example.org", roles=["reviewer"])
    services.resolve_cluster(cluster=cluster, reviewer=other, label="HSIL")
    again = as_reviewer.post(_url(cluster), {"action": "reject", "confirm": token})
    assert again.status_code == 409
    assert "Change the decision (now resolved as HSIL by otto@example.org on " in again.content.decode()
    assert Cluster.objects.get(pk=cluster.pk).status == "resolved" and AuditEntry.objects.count() == 1


def test_a_decided_cluster_shows_its_decision_with_its_date_and_offers_a_change(as_reviewer, queue, reviewer):
    cluster = queue["mild"]
    services.resolve_cluster(cluster=cluster, reviewer=reviewer, label="HSIL")
    html = as_reviewer.get(_url(cluster)).content.decode()
    decision = html[html.index('id="decision-text"'):]
    decision = decision[:decision.index("</p>")]
    assert "Resolved as" in decision and "HSIL" in decision and "by rita@example.org" in decision
    assert WHEN.search(decision)
    assert 'id="change-decision"' in html
    form = html[html.index('id="label-form"'):]
    assert form.index("<fieldset disabled>") < form.index("</form>")  # decided: no one-key change
    changing = as_reviewer.get(_url(cluster) + "?change=1").content.decode()
    form = changing[changing.index('id="label-form"'):]
    assert "<fieldset>" in form[:form.index("</form>")] and 'id="changing"' in changing


def test_changing_a_decision_is_confirmed_audited_and_keeps_the_earlier_one(as_reviewer, queue, reviewer):
    cluster = queue["mild"]
    assert as_reviewer.post(_url(cluster), {"action": "label", "label": "HSIL"}).status_code == 302
    asked = as_reviewer.post(_url(cluster), {"action": "label", "label": "ASC-H", "note": "second look"})
    assert asked.status_code == 409
    assert "Change the decision (now resolved as HSIL by rita@example.org on " in asked.content.decode()
    assert Cluster.objects.get(pk=cluster.pk).label == "HSIL"
    changed = _confirmed(as_reviewer, _url(cluster), {"action": "label", "label": "ASC-H", "note": "second look"})
    assert changed.status_code == 302 and changed["Location"] == _url(cluster) + "#decision"
    cluster.refresh_from_db()
    assert (cluster.status, cluster.label) == ("resolved", "ASC-H")
    entries = list(AuditEntry.objects.filter(cluster_id=cluster.pk).order_by("id"))
    assert [(e.before["label"], e.after["label"]) for e in entries] == [("HSIL", "HSIL"), ("HSIL", "ASC-H")]
    assert [(b.label, b.source) for b in GroundTruthBox.objects.filter(image_id=cluster.image_id)] == [("ASC-H", "review")]
    html = as_reviewer.get(_url(cluster)).content.decode()
    audit = html[html.index('id="audit-table"'):]
    assert audit.count('data-action="') == 2 and "HSIL → ASC-H" in audit and "second look" in audit


def test_one_more_expert_holds_the_image_for_the_stated_lock_with_its_date(as_reviewer, queue, experts, settings):
    from cytoloop.templatetags.cytoloop_dates import format_when

    settings.EXTRA_EXPERT_LOCK_MINUTES = 90
    cluster = queue["severe"]
    before = timezone.now()
    response = as_reviewer.post(_url(cluster), {"action": "expert"}, follow=True)
    assignment = Assignment.objects.get(image_id=cluster.image_id, extra=True)
    assert before + timedelta(minutes=90) <= assignment.expires_at <= timezone.now() + timedelta(minutes=90)
    assert f"held for them until {format_when(assignment.expires_at)}" in response.content.decode()
    entry = AuditEntry.objects.get(action="request_expert")
    assert entry.cluster_id == cluster.pk and entry.after["hold_minutes"] == 90
    assert "EXTRA_EXPERT_LOCK_MINUTES" in entry.after["hold_reason"]
    page = as_reviewer.get(_url(cluster)).content.decode()
    notice = page[page.index('id="pending-expert"'):]
    assert WHEN.search(notice[:notice.index("</div>")])
    audit = page[page.index('id="audit-table"'):]
    assert f"held for them until {format_when(assignment.expires_at)}" in audit


@pytest.fixture
def two_clusters(tmp_path, experts):
    """One image, two experts, two disputed clusters (P1: ASC-H vs HSIL, P2: drawn by one)."""
    e1, e2, _ = experts
    (image,) = _images(tmp_path, "two", 1, experts_per_image=2)
    first, second = _annotate(image, {e1: [("ASC-H", P1), ("LSIL", P2)], e2: [("HSIL", P1)]})
    assert first.status == second.status == "disputed"
    return first, second


def test_an_audit_row_is_shown_on_the_cluster_it_was_written_for_only(as_reviewer, two_clusters):
    first, second = two_clusters
    assert as_reviewer.post(_url(first), {"action": "expert"}).status_code == 302
    as_reviewer.post(_url(second), {"action": "comment", "text": "only about the second"})
    page = as_reviewer.get(_url(second)).content.decode()
    own = page[page.index('id="audit-table"'):page.index("</table>", page.index('id="audit-table"'))]
    assert 'data-action="comment"' in own and 'data-action="request_expert"' not in own
    history = page[page.index('id="image-history"'):]
    assert 'data-action="request_expert"' in history and f'href="{_url(first)}">cluster #{first.pk}</a>' in history
    page = as_reviewer.get(_url(first)).content.decode()
    own = page[page.index('id="audit-table"'):page.index("</table>", page.index('id="audit-table"'))]
    assert 'data-action="request_expert"' in own and "only about the second" not in own


def test_rows_of_a_recomputed_cluster_go_to_the_image_history_not_to_its_successor(as_reviewer, two_clusters, experts):
    first, _ = two_clusters
    as_reviewer.post(_url(first), {"action": "comment", "text": "look at the upper nucleus"})
    assert as_reviewer.post(_url(first), {"action": "expert"}).status_code == 302
    services.save_expert_annotation(image=first.image, annotator=experts[2], origin="editor",
                                    boxes=[Box(*P1, "HSIL")])
    assert services.compute_consensus(image=first.image) == "computed"
    assert not Cluster.objects.filter(pk=first.pk).exists()
    successor = Cluster.objects.filter(image=first.image).order_by("id").first()
    page = as_reviewer.get(_url(successor)).content.decode()
    assert 'id="no-audit"' in page
    history = page[page.index('id="image-history"'):]
    assert "look at the upper nucleus" in history
    assert f"cluster #{first.pk}, since replaced by a recomputed consensus" in history


def test_a_lapsed_extra_hold_goes_to_any_pathologist_who_has_not_annotated_the_image(
        as_reviewer, queue, experts, make_user):
    cluster = queue["severe"]
    as_reviewer.post(_url(cluster), {"action": "expert"})
    Assignment.objects.filter(image_id=cluster.image_id, extra=True).update(
        expires_at=timezone.now() - timedelta(minutes=1))
    assert 'id="pending-expert"' not in as_reviewer.get(_url(cluster)).content.decode()
    other = make_user("late@example.org", roles=["pathologist"])
    taken = services.next_assignment(annotator=other)
    assert taken is not None and taken.image_id == cluster.image_id and not taken.extra
    assert Assignment.objects.get(image_id=cluster.image_id, extra=True).status == "released"


def test_a_rejection_can_be_changed_back_into_a_grade_with_one_current_truth(as_reviewer, queue):
    cluster = queue["severe"]
    assert _confirmed(as_reviewer, _url(cluster), {"action": "reject"}).status_code == 302
    page = as_reviewer.get(_url(cluster)).content.decode()
    assert "Rejected: not a lesion" in page and 'id="change-decision"' in page
    assert not GroundTruthBox.objects.filter(image_id=cluster.image_id).exists()
    asked = as_reviewer.post(_url(cluster), {"action": "label", "label": "HSIL"})
    assert "Change the decision (now rejected as not a lesion by rita@example.org on " in asked.content.decode()
    assert _confirmed(as_reviewer, _url(cluster), {"action": "label", "label": "HSIL"}).status_code == 302
    assert [(b.label, b.source) for b in GroundTruthBox.objects.filter(image_id=cluster.image_id)] == [("HSIL", "review")]
    assert [e.action for e in AuditEntry.objects.filter(cluster_id=cluster.pk).order_by("id")] == ["reject", "accept"]


def test_a_reviewer_who_may_still_vote_on_an_image_is_kept_blind_to_its_disputes(client, queue, make_user):
    """A pathologist-reviewer who has not annotated an image that still lacks a vote (an extra
    expert was asked) may be handed it: its disputes, votes and experts stay hidden from them."""
    cluster = queue["severe"]
    asker = make_user("asker@example.org", roles=["reviewer"])
    services.request_another_expert(image=cluster.image, reviewer=asker)
    both = make_user("both@example.org", roles=["pathologist", "reviewer"])
    client.force_login(both)
    page = client.get(_url(cluster))
    assert page.status_code == 403 and "expert1@example.org" not in page.content.decode()
    assert client.post(_url(cluster), {"action": "label", "label": "HSIL"}).status_code == 403
    assert cluster.pk not in _rows(client.get(reverse("review:disputes")))
    assert f'data-cluster="{cluster.pk}"' not in client.get("/").content.decode()
    assert Cluster.objects.get(pk=cluster.pk).status == "disputed"
