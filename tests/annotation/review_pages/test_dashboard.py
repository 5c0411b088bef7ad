"""Reviewer pages: the agreement dashboard (kappa, alpha, reliability, per class, over time).

Django test client against the real PostgreSQL; annotations go in through annotation.services
(save_expert_annotation, compute_consensus), as simulated and real experts' annotations do.
"""

import re

import numpy as np
import pytest
from django.urls import reverse

from annotation import agreement, selectors
from annotation.models import Cluster, ExpertReliability
from tests.annotation.review_pages.conftest import P1, P2, P3, _annotate, _images

pytestmark = pytest.mark.django_db



@pytest.fixture
def panel(tmp_path, experts):
    """Dataset "panel": three experts, four images, agreed and disputed clusters."""
    e1, e2, e3 = experts
    i1, i2, i3, i4 = _images(tmp_path, "panel", 4, experts_per_image=3)
    _annotate(i1, {e1: [("HSIL", P1), ("LSIL", P2)], e2: [("HSIL", P1), ("LSIL", P2)],
                   e3: [("HSIL", P1), ("ASC-US", P2)]})
    _annotate(i2, {e1: [("NILM", P1)], e2: [("NILM", P1), ("ASC-H", P3)], e3: [("ASC-US", P1), ("HSIL", P3)]})
    _annotate(i3, {e1: [("SCC", P2)], e2: [("HSIL", P2)], e3: [("SCC", P2)]})
    _annotate(i4, {e1: [("LSIL", P1), ("ASC-US", P3)], e2: [("ASC-US", P1)], e3: [("LSIL", P1), ("ASC-US", P3)]})
    return i1.dataset


def _number(html: str, element_id: str) -> float:
    return float(re.search(rf'id="{element_id}">([-0-9.]+)<', html).group(1))


def test_the_dashboard_numbers_are_annotation_agreement_on_the_same_clusters(client_as, panel, experts):
    labels, consensus, columns, _ = selectors.cluster_label_matrix(panel)
    assert len(labels) == 7 and columns == [e.pk for e in experts]
    full = labels[(labels >= 0).sum(axis=1) == 3]
    fleiss = agreement.fleiss_kappa(agreement.category_counts(full))
    alpha = agreement.krippendorff_alpha(agreement.reliability_data(labels), "ordinal", n_categories=6)
    agree = agreement.agreement_with_consensus(labels, consensus)
    reliability = agreement.dawid_skene(labels).reliability
    kappas = agreement.pairwise_cohen(labels, weights="quadratic")

    response = client_as("reviewer").get(reverse("review:dashboard"), {"dataset": "panel"})
    html = response.content.decode()
    stats = response.context["stats"]
    assert stats["fleiss"] == pytest.approx(fleiss) and stats["fleiss_items"] == len(full)
    assert stats["alpha"] == pytest.approx(alpha)
    assert _number(html, "fleiss") == pytest.approx(fleiss, abs=5e-4)
    assert _number(html, "alpha") == pytest.approx(alpha, abs=5e-4)
    for j, expert in enumerate(experts):
        card = html[html.index(f'id="expert-{expert.pk}"'):]
        card = card[:card.index("</article>")]
        assert f'data-value="{agree[j]:.6f}"' in card
        assert f'data-value="{reliability[j]:.6f}"' in card and ">live<" in card
        assert f'<dd class="n-clusters">{int((labels[:, j] >= 0).sum())}</dd>' in card
        confusion = agreement.confusion_against(labels[:, j], consensus)
        assert response.context["experts"][j]["confusion"] == confusion.tolist()
        assert f'id="confusion-{expert.pk}"' in card and card.count('<g class="cell ') == 36
    assert len(kappas) == 3
    for (i, j), kappa in kappas.items():
        for a, b in ((i, j), (j, i)):  # the table is symmetric
            shown = re.search(rf'data-pair="{a}-{b}" data-kappa="([^"]+)"', html).group(1)
            assert (shown == "nan" and np.isnan(kappa)) or float(shown) == pytest.approx(kappa, abs=1e-6)
    assert _number(html, "n-clusters") == 7


def test_the_dashboard_per_class_and_over_time(client_as, panel):
    response = client_as("reviewer").get(reverse("review:dashboard"), {"dataset": "panel"})
    html = response.content.decode()
    classes = {row["label"]: row for row in response.context["classes"]}
    clusters = Cluster.objects.filter(image__dataset=panel)
    for label, row in classes.items():
        mine = clusters.filter(label=label)
        assert row["clusters"] == mine.count()
        assert row["reviewed"] == mine.filter(status__in=["disputed", "resolved"]).count()
        if mine.exists():
            assert row["mean_vote_share"] == pytest.approx(np.mean([c.vote_share for c in mine]))
    points = response.context["over_time"]["points"]
    assert len(points) == 1 and points[0]["clusters"] == 7
    assert points[0]["agreed"] == clusters.filter(status="agreed").count()
    assert 'id="agreement-over-time"' in html and 'class="dot"' in html


def test_agreement_over_time_stays_put_when_consensus_is_recomputed_later(client_as, panel):
    from datetime import timedelta

    from django.utils import timezone

    from annotation.models import Image
    from annotation.services import recompute_dataset

    first = timezone.now() - timedelta(days=3)
    Image.objects.filter(dataset=panel).update(consensus_at=first)
    before = client_as("reviewer").get(reverse("review:dashboard"), {"dataset": "panel"}).context["over_time"]
    recompute_dataset(dataset=panel, force=True)  # rebuilds every cluster row today
    after = client_as("admin").get(reverse("review:dashboard"), {"dataset": "panel"}).context["over_time"]
    assert [p["start"] for p in after["points"]] == [p["start"] for p in before["points"]] == [first.date()]
    assert after["points"][0]["clusters"] == before["points"][0]["clusters"] == 7


def test_recompute_stores_dawid_skene_reliability_through_the_service(client_as, panel, experts):
    client = client_as("admin")
    response = client.post(reverse("review:dashboard"), {"dataset": "panel"}, follow=True)
    assert response.redirect_chain[-1][0] == reverse("review:dashboard") + "?dataset=panel"
    rows = {r.user_id: r for r in ExpertReliability.objects.filter(dataset=panel)}
    assert set(rows) == {e.pk for e in experts}
    html = response.content.decode()
    assert "recomputed (Dawid-Skene) and stored" in html and ">stored<" in html
    card = html[html.index(f'id="expert-{experts[0].pk}"'):]
    assert f'data-value="{rows[experts[0].pk].reliability:.6f}"' in card[:card.index("</article>")]


def test_the_dashboard_handles_a_dataset_without_clusters_and_no_dataset(client_as, tmp_path):
    client = client_as("reviewer")
    assert "No dataset yet" in client.get(reverse("review:dashboard")).content.decode()
    _images(tmp_path, "fresh", 2, experts_per_image=3)
    response = client.get(reverse("review:dashboard"), {"dataset": "fresh"})
    assert response.status_code == 200 and "has no clusters yet" in response.content.decode()
    assert client.post(reverse("review:dashboard"), {"dataset": "fresh"}).status_code == 302
    assert not ExpertReliability.objects.exists()


def test_the_dashboard_dataset_chips_update_by_htmx(client_as, panel, tmp_path):
    _images(tmp_path, "fresh", 1, experts_per_image=3)
    client = client_as("reviewer")
    html = client.get(reverse("review:dashboard"), {"dataset": "fresh"}, headers={"HX-Request": "true"}).content.decode()
    assert "<html" not in html and html.lstrip().startswith('<section id="agreement"')
    assert 'hx-get="/review/agreement/?dataset=panel"' in html and 'href="/review/agreement/?dataset=panel"' in html
    default = client.get(reverse("review:dashboard"))  # the first dataset with clusters
    assert default.context["dataset"] == panel
