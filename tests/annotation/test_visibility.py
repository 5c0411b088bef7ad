"""Blind everywhere, by one rule (annotation.access): every page and endpoint that can show boxes,
walked for every role and every image state, never shows box data the rule forbids.

One fixture builds every state on one dataset (experts_per_image 2, 100 x 100 px images, so
Label Studio's percent coordinates are the pixel values):

  1-fresh      not annotated                     imported ground truth + imported predictions
  2-held       held by P1 (open in their editor)
  3-some       submitted by P1 only (1 of 2)
  4-consensus  P1 and P2 agree; consensus computed
  5-reviewed   P1 and P2 disagree; a reviewer resolved the dispute (box adjusted)
  6-extra      P1 and P2 disagree; the reviewer asked for an extra expert: P3 holds it; the
               image still names a pre-annotation model (selected before its consensus)
  7-offered    not annotated; an active ranking round allowing pre-annotations selected it

Each kind of box data has its own coordinates (and scores), so a leak is found by the numbers
in a response whatever its format (SVG, table, JSON, Label Studio percent). What each user may
see is written out below by hand (EXPECTED), not computed by the module under test.
"""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from annotation import services
from annotation.geometry import Box
from annotation.models import (
    Assignment,
    Cluster,
    Dataset,
    ExpertAnnotation,
    ExpertBox,
    GroundTruthBox,
    Image,
    PredictionBox,
)
from tests.annotation.conftest import png_bytes

pytestmark = pytest.mark.django_db

NAMES = ["1-fresh", "2-held", "3-some", "4-consensus", "5-reviewed", "6-extra", "7-offered"]
ROLES = {"p1": ["pathologist"], "p2": ["pathologist"], "p3": ["pathologist"], "reviewer": ["reviewer"],
         "admin": ["admin"]}
ALL = frozenset({"gt", "pred", "offered", "others", "consensus"})
NONE: frozenset = frozenset()
OFFERED = frozenset({"offered"})
#: what each user may see of each image (their own boxes always), by the rule in docs/USAGE.md "Blind"
EXPECTED = {
    "reviewer": dict.fromkeys(NAMES, ALL),
    "admin": dict.fromkeys(NAMES, ALL),
    # voters: blind while a vote may still come to them, everything once they voted and consensus exists
    "p1": {"1-fresh": NONE, "2-held": NONE, "3-some": NONE, "4-consensus": ALL, "5-reviewed": ALL,
           "6-extra": ALL, "7-offered": OFFERED},
    "p2": {"1-fresh": NONE, "2-held": NONE, "3-some": NONE, "4-consensus": ALL, "5-reviewed": ALL,
           "6-extra": ALL, "7-offered": OFFERED},
    # never voted: blind everywhere (the extra expert gets no model help either)
    "p3": {"1-fresh": NONE, "2-held": NONE, "3-some": NONE, "4-consensus": NONE, "5-reviewed": NONE,
           "6-extra": NONE, "7-offered": OFFERED},
}
OFFERED_MODEL = "det-blind+cls-blind"


def _box(kind: str, k: int) -> Box:
    """Distinct numbers per kind and image (k = 1..7)."""
    return {
        "gt": Box(10 + k + 0.3, 50 + k + 0.3, 8.3, 9.3, "ASC-H"),
        "pred": Box(20 + k + 0.1, 60 + k + 0.1, 7.1, 6.1, "SCC", 0.613 + k / 100),
        "offered": Box(40 + k + 0.1, 80 + k + 0.1, 5.1, 4.1, "ASC-US"),
        "p1": Box(30 + k + 0.2, 70 + k + 0.2, 8.2, 9.2, "HSIL"),
        "p2": Box(30 + k + 0.4, 70 + k + 0.4, 8.4, 9.4, "HSIL"),
        "review": Box(50 + k + 0.7, 20 + k + 0.7, 6.7, 5.7, "HSIL"),
    }[kind]


def _coco(names) -> dict:
    images = [{"id": i, "file_name": f"{n}.png", "width": 100, "height": 100} for i, n in enumerate(names, 1)]
    annotations = []
    for i, _ in enumerate(names, 1):
        b = _box("gt", i)
        annotations.append({"id": i, "image_id": i, "category_id": 4, "bbox": [b.x, b.y, b.width, b.height],
                            "area": b.width * b.height, "iscrowd": 0})
    categories = [{"id": i, "name": n} for i, n in enumerate(["NILM", "ASC-US", "LSIL", "ASC-H", "HSIL", "SCC"], 1)]
    return {"images": images, "annotations": annotations, "categories": categories}


def _model_versions(dataset):
    from training.models import DatasetVersion, ModelVersion

    dv, _ = DatasetVersion.objects.get_or_create(dataset=dataset, number=1, defaults={"splits": {}})
    det = ModelVersion.objects.create(kind="detector", name="det-blind", dataset_version=dv, artifact_dir="x",
                                      config={}, metrics={}, promoted=True)
    cls = ModelVersion.objects.create(kind="classifier", name="cls-blind", dataset_version=dv, artifact_dir="x",
                                      config={}, metrics={}, promoted=True)
    return det, cls


def _predict(image, k, det, cls):
    from inference.pipeline import ClusterResult, ImageResult
    from inference.services import store_prediction

    b = _box("offered", k)
    p = np.asarray([0.05, 0.55, 0.1, 0.1, 0.1, 0.1])
    result = ImageResult([ClusterResult(box=(b.x, b.y, b.width, b.height), detector_score=0.8,
                                        detector_class="ASC-US", probabilities=p,
                                        embedding=np.asarray([1.0, 0.0], dtype=np.float32))])
    store_prediction(image=image, result=result, detector=det, classifier=cls)


@pytest.fixture
def world(tmp_path, make_user):
    from inference.services import start_ranking_round

    users = {key: make_user(f"{key}@blind.example.org", roles=roles) for key, roles in ROLES.items()}
    dataset, _ = services.ensure_dataset(name="blind")
    Dataset.objects.filter(pk=dataset.pk).update(experts_per_image=2)
    folder = tmp_path / "in"
    folder.mkdir()
    for i, name in enumerate(NAMES, 1):
        (folder / f"{name}.png").write_bytes(png_bytes(i, size=(100, 100)))
    (tmp_path / "gt.json").write_text(json.dumps(_coco(NAMES)))
    report = services.import_images(dataset=dataset, path=folder, annotations=tmp_path / "gt.json")
    assert not report.skipped and not report.box_problems, report.summary()
    images = {i.original_name[:-4]: i for i in Image.objects.filter(dataset=dataset)}
    for k, name in enumerate(NAMES, 1):
        b = _box("pred", k)
        PredictionBox.objects.create(image=images[name], x=b.x, y=b.y, width=b.width, height=b.height,
                                     label=b.label, score=b.score, model_version="imported")

    def vote(name, key, label="HSIL"):
        k = NAMES.index(name) + 1
        b = _box(key, k)
        Assignment.objects.create(image=images[name], annotator=users[key], status=Assignment.Status.SUBMITTED,
                                  expires_at="2030-01-01T00:00Z")
        services.save_expert_annotation(image=images[name], annotator=users[key], origin="editor",
                                        boxes=[Box(b.x, b.y, b.width, b.height, label)])

    Assignment.objects.create(image=images["2-held"], annotator=users["p1"], expires_at="2030-01-01T00:00Z")
    vote("3-some", "p1")
    vote("4-consensus", "p1"), vote("4-consensus", "p2")
    vote("5-reviewed", "p1"), vote("5-reviewed", "p2", label="LSIL")
    vote("6-extra", "p1"), vote("6-extra", "p2", label="LSIL")
    for name in ("4-consensus", "5-reviewed", "6-extra"):
        assert services.compute_consensus(image=images[name]) == "computed"
    disputed = {c.image_id: c for c in Cluster.objects.filter(status=Cluster.Status.DISPUTED)}
    assert set(disputed) == {images["5-reviewed"].pk, images["6-extra"].pk}
    k = NAMES.index("5-reviewed") + 1
    services.resolve_cluster(cluster=disputed[images["5-reviewed"].pk], reviewer=users["reviewer"],
                             label="HSIL", box=_box("review", k))
    extra = services.request_another_expert(image=images["6-extra"], reviewer=users["reviewer"])
    assert extra.annotator == users["p3"]
    # model help: the round's models predicted 6 (before its consensus) and 7; the round selects 7
    det, cls = _model_versions(dataset)
    _predict(images["6-extra"], NAMES.index("6-extra") + 1, det, cls)
    _predict(images["7-offered"], NAMES.index("7-offered") + 1, det, cls)
    start_ranking_round(dataset=dataset, strategy="entropy", k=1, allow_preannotations=True)
    Image.objects.filter(pk=images["6-extra"].pk).update(preannotation_model=OFFERED_MODEL)
    images = {i.original_name[:-4]: i for i in Image.objects.filter(dataset=dataset)}
    assert images["7-offered"].preannotation_model == OFFERED_MODEL
    return {"dataset": dataset, "users": users, "images": images}


# --- what a response may not contain -------------------------------------------------------------


def _numbers(*boxes) -> set:
    out = set()
    for b in boxes:
        out |= {round(float(v), 1) for v in (b.x, b.y, b.width, b.height)}
        if getattr(b, "score", None) is not None:
            out.add(round(float(b.score), 2))
    return out


def _markers(world) -> dict:
    """{(user key, image name): {kind: (numbers, logins)}} read back from the database."""
    users = world["users"]
    out = {}
    for name, image in world["images"].items():
        preds = list(PredictionBox.objects.filter(image=image))
        kinds = {
            "gt": (_numbers(*GroundTruthBox.with_history.filter(image=image)), set()),
            "pred": (_numbers(*[p for p in preds if p.model_version != OFFERED_MODEL]), set()),
            "offered": (_numbers(*[p for p in preds if p.model_version == OFFERED_MODEL]), set()),
            "consensus": (_numbers(*Cluster.objects.filter(image=image)), set()),
        }
        for key, user in users.items():
            others = ExpertAnnotation.objects.filter(image=image).exclude(annotator=user).select_related("annotator")
            mine = ExpertBox.objects.filter(annotation__image=image, annotation__annotator=user)
            out[(key, name)] = {
                **kinds,
                "others": (_numbers(*ExpertBox.objects.filter(annotation__in=others)),
                           {a.annotator.email for a in others}),
                "own": (_numbers(*mine), set()),
            }
    return out


def _forbidden_and_allowed(world, markers, key) -> tuple[tuple[set, set], dict]:
    """A user's forbidden numbers and logins (over every image, less anything they may see
    somewhere: a page about many images cannot be blamed for one that is allowed), and their
    allowed markers per kind."""
    bad_n, bad_l, ok_n, ok_l = set(), set(), set(), set()
    allowed_by_kind: dict[str, set] = {}
    for name in NAMES:
        allowed = EXPECTED[key][name] | {"own"}
        for kind, (numbers, logins) in markers[(key, name)].items():
            if kind in allowed:
                ok_n |= numbers
                ok_l |= logins
                allowed_by_kind.setdefault(kind, set()).update(numbers)
            else:
                bad_n |= numbers
                bad_l |= logins
    return (bad_n - ok_n, bad_l - ok_l), allowed_by_kind


NUMBER = re.compile(r"(?<![\w.:])\d+\.\d+")  # not the seconds of a time stamp
#: an SVG box's label tag: its geometry is derived from the box (whose frame is checked), and
#: its arithmetic would otherwise hit another box's numbers by chance
TAG = re.compile(r'<g class="tag">.*?</g>', re.S)


def _found_numbers(text: str) -> set:
    text = TAG.sub("", text)
    out = set()
    for token in NUMBER.findall(text):
        value = float(token)
        out.add(round(value, 2) if value < 1 else round(value, 1))
    return out


# --- every page and endpoint, from the URL configuration -------------------------------------------


#: routes that show no box data, and why (a new route must be walked or listed here)
NOT_WALKED = {
    "logout": "ends the session; shows nothing",
    "healthz": "service status for load balancers, no data",
    "healthz-live": "liveness probe, no data",
    "healthz-ready": "readiness probe (= healthz), no data",
    "system": "admin only; service status, no data",
    "api-schema": "the API's OpenAPI schema, no data",
    "api-docs": "the API's documentation page, no data",
    "media": "serves stored image files; thumbnails are plain downscaled copies with no box drawn "
             "(annotation.imaging.make_thumbnail)",
    "training:run": "admin only; a training run's curves and metrics, no image's boxes",
    "training:cancel": "POST only",
    "training:resume": "POST only",
    "training:model": "admin only; a model version's metrics, no image's boxes",
    "training:promote": "POST only",
    "annotation:import_job": "admin only; an import's file list and counts",
}


def _routes():
    """(qualified name, route parameter names) of every named URL pattern outside Django's admin."""
    out = []

    def walk(patterns, namespace, params):
        for p in patterns:
            found = params | set(re.findall(r"<(?:\w+:)?(\w+)>", str(p.pattern)))
            if isinstance(p, URLResolver):
                if p.namespace == "admin":
                    continue  # Django's admin: staff (the admin role), who may see everything
                walk(p.url_patterns, f"{namespace}{p.namespace}:" if p.namespace else namespace, found)
            elif isinstance(p, URLPattern) and p.name:
                out.append((namespace + p.name, frozenset(found)))

    walk(get_resolver().url_patterns, "", frozenset())
    return out


def _urls(world) -> list[str]:
    from inference.models import RankingRound

    ds = world["dataset"].name
    image_ids = [i.pk for i in world["images"].values()]
    fill = {
        frozenset({"name"}): [{"name": ds}],
        frozenset({"name", "pk"}): [{"name": ds, "pk": i} for i in image_ids],
        frozenset({"image_id"}): [{"image_id": i} for i in image_ids],
    }
    by_route = {
        "review:cluster": [{"pk": c} for c in Cluster.objects.values_list("pk", flat=True)],
        "inference:round": [{"pk": r} for r in RankingRound.objects.values_list("pk", flat=True)],
    }
    urls = []
    for route, params in _routes():
        if route in NOT_WALKED:
            continue
        if not params:
            urls.append(reverse(route))
        elif route in by_route:
            urls += [reverse(route, kwargs=kw) for kw in by_route[route]]
        elif route.startswith("api-") and params == {"pk"}:  # /api/images/<pk>/...
            urls += [reverse(route, kwargs={"pk": i}) for i in image_ids]
        elif params in fill:
            urls += [reverse(route, kwargs=kw) for kw in fill[params]]
        else:
            pytest.fail(f"route {route} ({sorted(params)}) is not walked: add it to the walk, or to NOT_WALKED "
                        "with why it cannot show boxes")
    gallery = reverse("annotation:gallery", args=[ds])
    urls += [f"{gallery}?label={label}" for label in ("ASC-H", "HSIL")]  # imported truth; consensus and review
    return urls


def test_no_page_or_endpoint_shows_box_data_the_rule_forbids(world, monkeypatch):
    monkeypatch.setattr(logging.getLogger("django.request"), "disabled", True)  # hundreds of 403/404 lines
    markers = _markers(world)
    urls = _urls(world)
    assert len(urls) > 60
    seen_allowed: set = set()
    problems = []
    for key, user in world["users"].items():
        client = Client()
        client.force_login(user)
        (bad_numbers, bad_logins), allowed = _forbidden_and_allowed(world, markers, key)
        assert bad_numbers or key in ("reviewer", "admin")
        for url in urls:
            response = client.get(url)
            if response.status_code >= 500:
                problems.append(f"{key} GET {url}: {response.status_code}")
            if getattr(response, "streaming", False):
                continue
            text = response.content.decode(errors="replace")
            numbers = _found_numbers(text)
            leaked = sorted(numbers & bad_numbers)
            logins = sorted(login for login in bad_logins if login in text)
            if leaked or logins:
                problems.append(f"{key} GET {url}: numbers {leaked} logins {logins}")
            seen_allowed |= {kind for kind, values in allowed.items() if numbers & values}
    assert not problems, "\n".join(problems[:30])
    # the walk can see each kind where it is allowed, so its silence above means something
    assert {"gt", "pred", "offered", "others", "consensus", "own"} <= seen_allowed


# --- leaks without coordinates: labels and counts ------------------------------------------------


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_gallery_label_filter_and_tags_count_only_ground_truth_the_user_may_see(world):
    gallery = reverse("annotation:gallery", args=["blind"])
    blind = _client(world["users"]["p3"])
    response = blind.get(gallery + "?label=ASC-H")  # every image's imported truth is ASC-H
    assert response.context["matching"] == 0
    assert {link["value"]: link["count"] for link in response.context["label_links"] if link["value"]}["ASC-H"] == 0
    page = blind.get(gallery).content.decode()
    assert 'class="tag lab-' not in page and 'id="blind-gallery-note"' in page
    assert 'id="blind-gallery-note"' not in _client(world["users"]["reviewer"]).get(gallery).content.decode()
    voter = _client(world["users"]["p1"]).get(gallery + "?label=ASC-H")
    shown = sorted(re.findall(r'<span class="name">([^<]+)\.png</span>', voter.content.decode()))
    assert shown == ["4-consensus", "5-reviewed", "6-extra"]  # the ones whose truth P1 may see


def test_datasets_list_counts_only_ground_truth_the_user_may_see(world):
    def boxes(user):
        html = _client(user).get(reverse("annotation:datasets")).content.decode()
        card = html[html.index('id="dataset-blind"'):]
        return int(re.search(r'class="box-count">(\d+)<', card).group(1))

    users = world["users"]
    shown_to_p1 = GroundTruthBox.objects.filter(
        image__original_name__in=["4-consensus.png", "5-reviewed.png", "6-extra.png"]).count()
    assert boxes(users["reviewer"]) == GroundTruthBox.objects.count()
    assert boxes(users["p1"]) == shown_to_p1 > 0
    assert boxes(users["p3"]) == 0


# --- the API: forbidden and missing look the same -------------------------------------------------


def test_api_answers_a_hidden_consensus_as_one_not_computed_yet(world):
    images, users = world["images"], world["users"]
    extra = _client(users["p3"])
    hidden = extra.get(reverse("api-image-consensus", args=[images["6-extra"].pk]))
    not_yet = extra.get(reverse("api-image-consensus", args=[images["1-fresh"].pk]))
    assert hidden.status_code == not_yet.status_code == 404
    assert hidden.json() == not_yet.json()
    assert extra.get(reverse("api-image-consensus", args=[999999])).status_code == 404
    shown = _client(users["p1"]).get(reverse("api-image-consensus", args=[images["6-extra"].pk]))
    assert shown.status_code == 200 and shown.json()["clusters"]


def test_extra_expert_reads_only_their_own_annotations_of_the_image_they_were_asked_to_vote_on(world):
    images, users = world["images"], world["users"]
    response = _client(users["p3"]).get(reverse("api-image-annotations", args=[images["6-extra"].pk]))
    assert response.status_code == 200 and response.json() == []
    voter = _client(users["p1"]).get(reverse("api-image-annotations", args=[images["6-extra"].pk])).json()
    assert sorted(a["annotator"] for a in voter) == ["p1@blind.example.org", "p2@blind.example.org"]


def test_a_user_without_a_role_gets_404_for_an_image_that_exists(world, make_user):
    nobody = _client(make_user("nobody@blind.example.org"))
    pk = world["images"]["4-consensus"].pk
    assert nobody.get(reverse("api-image-annotations", args=[pk])).status_code == 404
    assert nobody.get(reverse("api-image-annotations", args=[999999])).status_code == 404


# --- the editor payload --------------------------------------------------------------------------


def _editor_predictions(client, image) -> list:
    html = client.get(reverse("annotate:editor", args=[image.pk])).content.decode()
    data = json.loads(re.search(r'<script id="editor-data" type="application/json">(.*?)</script>', html, re.S)
                      .group(1))
    return data["task"]["predictions"]


def test_extra_expert_editor_gets_no_model_boxes_even_when_every_image_offers_them(world, settings):
    settings.ANNOTATE_SHOW_PREDICTIONS = True
    assert _editor_predictions(_client(world["users"]["p3"]), world["images"]["6-extra"]) == []


def test_editor_offers_only_the_selected_images_round_model_boxes(world):
    image = world["images"]["7-offered"]
    user = world["users"]["p2"]
    Assignment.objects.create(image=image, annotator=user, expires_at="2030-01-01T00:00Z")
    (offered,) = _editor_predictions(_client(user), image)
    assert offered["model_version"] == OFFERED_MODEL
    assert [r["value"]["rectanglelabels"] for r in offered["result"]] == [["ASC-US"]]  # not the imported SCC


def test_image_page_tells_a_pathologist_why_its_boxes_are_hidden(world):
    image = world["images"]["2-held"]
    html = _client(world["users"]["p1"]).get(reverse("annotation:image", args=["blind", image.pk])).content.decode()
    assert 'id="blind-note"' in html and "You are annotating this image" in html
    assert 'class="box gt' not in html and 'class="box pred' not in html


def test_round_page_hides_the_models_call_from_an_admin_who_has_a_vote_pending_on_the_image(world, make_user):
    from inference.models import RankingRound
    from inference.services import start_ranking_round

    both = make_user("admin-pathologist@blind.example.org", roles=["admin", "pathologist"])
    blind_round = start_ranking_round(dataset=world["dataset"], strategy="entropy", k=1)  # no pre-annotations
    assert RankingRound.objects.filter(active=True).get() == blind_round
    page = _client(both).get(reverse("inference:round", args=[blind_round.pk])).content.decode()
    offered = _numbers(*PredictionBox.objects.filter(model_version=OFFERED_MODEL,
                                                     image=world["images"]["7-offered"]))
    assert "7-offered.png" in page and "call is hidden from you" in page
    assert not _found_numbers(page) & offered
    admin_page = _client(world["users"]["admin"]).get(reverse("inference:round", args=[blind_round.pk]))
    assert _found_numbers(admin_page.content.decode()) & offered  # an admin with no vote pending sees it


def test_thumbnails_are_the_plain_image_with_no_box_drawn(world):
    from django.core.files.storage import default_storage

    from annotation.imaging import make_thumbnail

    image = world["images"]["4-consensus"]  # has ground truth, predictions and experts' boxes
    assert services.ensure_thumbnail(image=image)
    with default_storage.open(image.file.name, "rb") as original, default_storage.open(image.thumbnail.name,
                                                                                       "rb") as thumb:
        assert thumb.read() == make_thumbnail(original.read())
