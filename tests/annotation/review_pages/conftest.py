"""Shared by the reviewer page tests: experts, a reviewer, images annotated through the services
and the disputed queue built from them; helpers to read rows and confirm decisions."""

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from annotation import services
from annotation.geometry import Box
from annotation.models import Cluster, Image
from tests.annotation.conftest import import_pngs

P1 = (20.0, 20.0, 50.0, 50.0)
P2 = (150.0, 100.0, 60.0, 60.0)
P3 = (220.0, 30.0, 40.0, 40.0)
P1_OFF = (27.0, 27.0, 50.0, 50.0)  # IoU 0.59 with P1: matched, but a weak overlap


def _images(tmp_path, name: str, count: int, *, experts_per_image: int) -> list[Image]:
    return import_pngs(tmp_path / f"in-{name}", name, count, seed=sum(map(ord, name)) * 100, size=(300, 200),
                       prefix=f"{name}-", experts_per_image=experts_per_image)


def _annotate(image: Image, drawings: dict) -> list[Cluster]:
    """drawings: {expert: [(label, (x, y, w, h)), ...]}; then the image's consensus."""
    for expert, boxes in drawings.items():
        services.save_expert_annotation(
            image=image, annotator=expert, origin="editor",
            boxes=[Box(*xywh, label) for label, xywh in boxes],
        )
    assert services.compute_consensus(image=image) == "computed"
    return list(Cluster.objects.filter(image=image).order_by("id"))


@pytest.fixture
def experts(make_user):
    return [make_user(f"expert{i}@example.org", roles=["pathologist"]) for i in range(1, 4)]


@pytest.fixture
def reviewer(make_user):
    return make_user("rita@example.org", roles=["reviewer"])


@pytest.fixture
def as_reviewer(client, reviewer):
    client.force_login(reviewer)
    return client


@pytest.fixture
def queue(tmp_path, experts):
    """Dataset "rq", two experts per image, four disputes:
    mild (ASC-H vs HSIL, oldest), severe (NILM vs HSIL), alone (LSIL, one expert), weak (weak overlap)."""
    e1, e2, _ = experts
    a, b, c, d = _images(tmp_path, "rq", 4, experts_per_image=2)
    now = timezone.now()
    found = {
        "mild": _annotate(a, {e1: [("ASC-H", P1)], e2: [("HSIL", P1)]})[0],
        "severe": _annotate(b, {e1: [("NILM", P1)], e2: [("HSIL", P1)]})[0],
        "alone": _annotate(c, {e1: [("LSIL", P2)], e2: []})[0],
        "weak": _annotate(d, {e1: [("LSIL", P1)], e2: [("LSIL", P1_OFF)]})[0],
    }
    for age, key in enumerate(("weak", "alone", "severe", "mild"), start=1):  # mild is the oldest
        Cluster.objects.filter(pk=found[key].pk).update(created_at=now - timedelta(hours=age))
    for cluster in found.values():
        cluster.refresh_from_db()
        assert cluster.status == "disputed"
    assert found["mild"].reasons == ["label_split"] and found["severe"].reasons == ["label_split"]
    assert found["alone"].reasons == ["too_few_experts"] and found["weak"].reasons == ["weak_overlap"]
    assert found["severe"].risk == 10.0 and found["mild"].risk == 1.0
    return found


def _rows(response) -> list[int]:
    return [int(pk) for pk in re.findall(r'<tr data-cluster="(\d+)"', response.content.decode())]


def _url(cluster) -> str:
    return reverse("review:cluster", args=[cluster.pk])


def _token(response) -> str:
    """The confirmation token of a 409 "confirm this decision" page."""
    assert response.status_code == 409, response.status_code
    return re.search(r'name="confirm" value="([0-9a-f]+)"', response.content.decode()).group(1)


def _confirmed(client, url: str, data: dict, **kwargs):
    """POST a decision that needs a confirmation, then confirm the statement it was shown."""
    return client.post(url, {**data, "confirm": _token(client.post(url, data))}, **kwargs)
