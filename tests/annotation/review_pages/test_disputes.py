"""Reviewer pages: who may open them, and the disputed queue (sorting, filters, htmx partial).

Django test client against the real PostgreSQL; annotations go in through annotation.services
(save_expert_annotation, compute_consensus), as simulated and real experts' annotations do.
"""

import re

import pytest
from django.urls import reverse

from annotation.models import AuditEntry, Cluster, Image
from tests.annotation.review_pages.conftest import P1, _annotate, _images, _rows, _url

pytestmark = pytest.mark.django_db


# --- access -------------------------------------------------------------------------------------


def test_a_pathologist_is_refused_every_review_page(client_as, queue):
    client = client_as("pathologist")
    assert client.get(reverse("review:disputes")).status_code == 403
    assert client.get(_url(queue["severe"])).status_code == 403
    assert client.post(_url(queue["severe"]), {"action": "label", "label": "NILM"}).status_code == 403
    assert client.get(reverse("review:dashboard")).status_code == 403
    assert client.post(reverse("review:dashboard"), {"dataset": "rq"}).status_code == 403
    assert Cluster.objects.filter(status="disputed").count() == 4 and not AuditEntry.objects.exists()


def test_an_admin_sees_the_dashboard_but_not_the_disputes(client_as, queue):
    client = client_as("admin")
    assert client.get(reverse("review:dashboard")).status_code == 200
    assert client.get(reverse("review:disputes")).status_code == 403
    assert client.get(_url(queue["severe"])).status_code == 403


# --- the disputed queue -------------------------------------------------------------------------


def test_the_queue_puts_the_riskiest_dispute_first(as_reviewer, queue):
    rows = _rows(as_reviewer.get(reverse("review:disputes")))
    assert rows == [queue[k].pk for k in ("severe", "alone", "mild", "weak")]  # risk 10, 3, 1, 0
    assert rows.index(queue["severe"].pk) < rows.index(queue["mild"].pk)


def test_the_queue_can_put_the_oldest_dispute_first(as_reviewer, queue):
    rows = _rows(as_reviewer.get(reverse("review:disputes"), {"sort": "oldest"}))
    assert rows == [queue[k].pk for k in ("mild", "severe", "alone", "weak")]


def test_each_row_shows_thumbnail_votes_reasons_risk_and_age(as_reviewer, queue):
    html = as_reviewer.get(reverse("review:disputes")).content.decode()
    row = html[html.index(f'data-cluster="{queue["alone"].pk}"'):]
    row = row[:row.index("</tr>")]
    image = Image.objects.get(pk=queue["alone"].image_id)
    assert image.thumbnail and f'href="{image.thumbnail.url}"' in row and image.thumbnail.url.startswith("/media/")
    assert "rq" in row and "LSIL" in row and "not drawn" in row
    assert "too few experts" in row and ">3<" in row  # risk: LSIL called negative
    assert "hour" in row and f'href="{_url(queue["alone"])}"' in row
    assert re.search(r'class="muted nowrap found-at">\d{1,2} [A-Z][a-z]{2} \d{4}, \d{2}:\d{2} UTC<', row)


def test_the_queue_filters_by_reason_with_counts(as_reviewer, queue):
    response = as_reviewer.get(reverse("review:disputes"), {"reason": "weak_overlap"})
    assert _rows(response) == [queue["weak"].pk]
    assert _rows(as_reviewer.get(reverse("review:disputes"), {"reason": "label_split"})) == [
        queue["severe"].pk, queue["mild"].pk]
    html = as_reviewer.get(reverse("review:disputes")).content.decode()
    assert re.search(r'data-reason="label_split">label split <span class="n">2</span>', html)
    assert re.search(r'data-reason="too_few_experts">too few experts <span class="n">1</span>', html)


def test_the_queue_filters_by_a_grade_some_expert_gave(as_reviewer, queue):
    assert _rows(as_reviewer.get(reverse("review:disputes"), {"grade": "NILM"})) == [queue["severe"].pk]
    assert _rows(as_reviewer.get(reverse("review:disputes"), {"grade": "HSIL", "sort": "oldest"})) == [
        queue["mild"].pk, queue["severe"].pk]
    assert _rows(as_reviewer.get(reverse("review:disputes"), {"grade": "SCC"})) == []


def test_the_queue_filters_by_dataset(as_reviewer, queue, tmp_path, experts):
    (other,) = _images(tmp_path, "rq-two", 1, experts_per_image=2)
    (elsewhere,) = _annotate(other, {experts[0]: [("ASC-US", P1)], experts[1]: [("LSIL", P1)]})
    assert _rows(as_reviewer.get(reverse("review:disputes"), {"dataset": "rq-two"})) == [elsewhere.pk]
    assert len(_rows(as_reviewer.get(reverse("review:disputes"), {"dataset": "rq"}))) == 4
    assert len(_rows(as_reviewer.get(reverse("review:disputes")))) == 5


def test_an_htmx_filter_change_gets_only_the_queue_partial(as_reviewer, queue):
    response = as_reviewer.get(reverse("review:disputes"), {"reason": "too_few_experts"}, headers={"HX-Request": "true"})
    html = response.content.decode()
    assert response.status_code == 200 and "<html" not in html and html.lstrip().startswith('<section id="queue"')
    assert _rows(response) == [queue["alone"].pk]
    assert 'href="/review/?reason=label_split"' in html and 'hx-get="/review/?reason=label_split"' in html


def test_disputes_on_images_the_reviewer_annotated_are_hidden_from_them(client, queue, experts, settings):
    from cytoloop.roles import Role, set_roles

    expert = experts[0]  # annotated every image of the queue
    set_roles(expert, [Role.REVIEWER])
    client.force_login(expert)
    response = client.get(reverse("review:disputes"))
    assert _rows(response) == []
    assert "4 more on images you annotated yourself are hidden" in response.content.decode()
    settings.REVIEWERS_MAY_RESOLVE_OWN_IMAGES = True
    assert len(_rows(client.get(reverse("review:disputes")))) == 4
