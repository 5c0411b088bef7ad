"""The Active learning pages (admin only): the promoted models, the "predict a dataset" form and
its live job list, the ranking-round form and a round's page (ranked thumbnails, reasons, score
histogram). Django's test client against the real PostgreSQL. Predictions are stored the way a
prediction job stores them (store_prediction), so no TensorFlow; the Celery hand-off
(cytoloop.jobs.send_now, for inference.predict) is recorded instead of sent."""

from __future__ import annotations

import re

import numpy as np
import pytest
from django.urls import reverse
from django.utils import timezone
from PIL import Image as PILImage

from annotation.models import Dataset, Image
from annotation.services import ensure_dataset, import_images
from inference import views
from inference.models import PredictionJob, RankedImage, RankingRound
from inference.pipeline import ClusterResult, ImageResult
from inference.services import start_ranking_round, store_prediction
from inference.strategies import ROUND_STRATEGIES, STRATEGIES
from tests.helpers import record_enqueues
from training.models import DatasetVersion, ModelVersion

pytestmark = pytest.mark.django_db

THRESHOLD = {"threshold": 0.37, "recall": 0.93, "precision": 0.41, "f1": 0.57, "achieved": True,
             "target_recall": 0.9, "min_class": 0, "source": "validation", "reason": None}


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return tmp_path / "media"


@pytest.fixture
def enqueued(monkeypatch):
    """Job ids handed to Celery (cytoloop.jobs.send_now, for inference.predict), in order."""
    return record_enqueues(monkeypatch, "inference.predict")


def make_version(kind: str, dataset: Dataset, name: str, *, promoted: bool = True, metrics=None) -> ModelVersion:
    dv, _ = DatasetVersion.objects.get_or_create(dataset=dataset, number=1, defaults={"splits": {}})
    return ModelVersion.objects.create(kind=kind, name=name, dataset_version=dv, artifact_dir=f"models/{kind}/{name}",
                                       config={}, metrics=metrics or {}, promoted=promoted)


def cluster(p, box=(10.0, 10.0, 40.0, 30.0), emb=(1.0, 0.0)) -> ClusterResult:
    p = np.asarray(p, dtype=np.float64)
    return ClusterResult(box=box, detector_score=0.9, detector_class="HSIL", probabilities=p / p.sum(),
                         embedding=np.asarray(emb, dtype=np.float32))


@pytest.fixture
def pool(tmp_path):
    """Dataset "pool": four 120x90 images predicted by a promoted pair. Under clinical_cost the
    NILM/HSIL split (im1) ranks first, the ASC-H/HSIL split (im2) second, the sure HSIL (im0)
    third; im3 has no cluster and is not ranked."""
    dataset, _ = ensure_dataset(name="pool")
    folder = tmp_path / "upload"
    folder.mkdir()
    for i in range(4):
        PILImage.new("RGB", (120, 90), (200 + i, 190, 210)).save(folder / f"im{i}.png")
    import_images(dataset=dataset, path=folder)
    images = list(Image.objects.filter(dataset=dataset).order_by("original_name"))
    detector = make_version("detector", dataset, "detector-1", metrics={"threshold": THRESHOLD, "best_val_map": 0.612})
    classifier = make_version("classifier", dataset, "classifier-1",
                              metrics={"test": {"average": {"f1": 0.734}}})
    results = [
        ImageResult([cluster([0.02, 0.02, 0.02, 0.02, 0.9, 0.02])]),
        ImageResult([cluster([0.45, 0.02, 0.02, 0.02, 0.47, 0.02], box=(60.0, 40.0, 30.0, 25.0), emb=(0.0, 1.0)),
                     cluster([0.9, 0.02, 0.02, 0.02, 0.02, 0.02])]),
        ImageResult([cluster([0.02, 0.02, 0.02, 0.45, 0.47, 0.02], emb=(0.0, 1.1))]),
        ImageResult([]),
    ]
    for image, result in zip(images, results, strict=True):
        store_prediction(image=image, result=result, detector=detector, classifier=classifier)
    return dataset, images, detector, classifier


def htmx_get(client, url):
    return client.get(url, headers={"HX-Request": "true"})


def round_post(dataset, **overrides) -> dict:
    return {"dataset": dataset.pk, "strategy": "clinical_cost", "k": "2", **overrides}


def make_job(pool, status="queued", **fields) -> PredictionJob:
    dataset, _, detector, classifier = pool
    return PredictionJob.objects.create(dataset=dataset, detector_version=detector, classifier_version=classifier,
                                        status=status, **fields)


# --- who may -----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["pathologist", "reviewer"])
def test_pathologists_and_reviewers_get_403_on_every_active_learning_page_and_action(role, client_as, pool, enqueued):
    dataset = pool[0]
    round_ = start_ranking_round(dataset=dataset, strategy="entropy", k=1)
    client = client_as(role)
    for url in (reverse("inference:index"), reverse("inference:round", args=[round_.pk]), reverse("inference:rounds")):
        assert client.get(url).status_code == 403, url
    assert client.post(reverse("inference:predict"), {"predict-dataset": dataset.pk}).status_code == 403
    assert client.post(reverse("inference:rounds"), round_post(dataset)).status_code == 403
    assert not PredictionJob.objects.exists() and RankingRound.objects.count() == 1 and enqueued == []


def test_only_admins_see_active_learning_in_the_navigation(client_as, client):
    page = client_as("admin").get("/").content.decode()
    assert f'href="{reverse("inference:index")}">Active learning</a>' in page
    client.logout()
    page = client_as("pathologist", "reviewer").get("/").content.decode()
    assert ">Active learning</a>" not in page


# --- promoted models ---------------------------------------------------------------------------


def test_without_promoted_models_the_page_says_to_promote_them_first(admin):
    dataset, _ = ensure_dataset(name="cells")
    make_version("classifier", dataset, "classifier-old", promoted=False)
    page = admin.get(reverse("inference:index")).content.decode()
    assert 'id="no-promoted"' in page
    assert "missing: detector and classifier" in page
    assert f'href="{reverse("training:models")}"' in page
    assert re.search(r'id="start-prediction" disabled', page)
    assert 'id="promoted-detector"' not in page and "classifier-old" not in page
    assert 'id="no-jobs"' in page and 'id="no-rounds"' in page


def test_with_one_kind_promoted_the_page_names_the_missing_one(admin):
    dataset, _ = ensure_dataset(name="cells")
    make_version("classifier", dataset, "classifier-9")
    page = admin.get(reverse("inference:index")).content.decode()
    assert "classifier-9" in page and "No promoted detector." in page
    assert "missing: detector." in page


def test_the_promoted_pair_is_shown_with_links_and_the_detectors_operating_threshold(admin, pool):
    _, _, detector, classifier = pool
    page = admin.get(reverse("inference:index")).content.decode()
    assert 'id="no-promoted"' not in page
    assert f'href="{reverse("training:model", args=[detector.pk])}" class="al-model-name">detector-1</a>' in page
    assert f'href="{reverse("training:model", args=[classifier.pk])}" class="al-model-name">classifier-1</a>' in page
    assert '<strong id="detector-threshold">0.37</strong>' in page
    assert "chosen on validation for image recall ≥ 0.90" in page
    assert '<strong id="classifier-test-f1">0.734</strong>' in page
    assert not re.search(r'id="start-prediction" disabled', page)


def test_the_promoted_detector_shows_its_test_figures_not_the_validation_ones_its_threshold_was_fit_to(admin, pool):
    # Seen: a detector with test mAP 0.003 shown as "recall 1.00, precision 1.00": the validation
    # images' figures at the threshold chosen to reach recall 1.00 on them (all atypical).
    ModelVersion.objects.filter(kind="detector").update(metrics={
        "best_val_map": 0.004,
        "threshold": {**THRESHOLD, "threshold": 0.01, "recall": 1.0, "precision": 1.0, "target_recall": 1.0},
        "test": {"map": 0.003, "n": 12, "atypical": {"recall": 0.4, "precision": 0.5}}})
    page = admin.get(reverse("inference:index")).content.decode()
    assert '<strong id="detector-test-map">0.003</strong>' in page
    assert '<strong id="detector-test-recall">0.40</strong>' in page
    assert '<strong id="detector-test-precision">0.50</strong>' in page and "(12 images)" in page
    assert "recall 1.00" not in page and "precision 1.00" not in page


def test_a_detector_without_a_stored_threshold_shows_the_default_inference_uses(admin, pool):
    ModelVersion.objects.filter(kind="detector").update(metrics={})
    page = admin.get(reverse("inference:index")).content.decode()
    assert '<strong id="detector-threshold">0.25</strong>' in page
    assert "the version stores no threshold" in page


# --- prediction jobs ---------------------------------------------------------------------------


def test_predicting_a_dataset_queues_a_job_and_lists_it(admin, pool, enqueued, django_capture_on_commit_callbacks):
    dataset, _, detector, classifier = pool
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post(reverse("inference:predict"), {"predict-dataset": dataset.pk})  # push left unchecked
    job = PredictionJob.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("inference:index") + "#jobs"
    assert (job.status, job.dataset, job.image_ids, job.push_to_label_studio) == ("queued", dataset, None, False)
    assert (job.detector_version, job.classifier_version, job.created_by.email) == (
        detector, classifier, "admin@example.org")
    assert enqueued == [job.pk]  # handed to the gpu queue once the job's row was committed
    page = admin.get(response["Location"]).content.decode()
    assert f"Prediction job #{job.pk} queued on the gpu queue" in page
    assert f'<tr data-job="{job.pk}" data-status="queued">' in page
    assert "waiting for a gpu worker" in page and 'hx-trigger="every 2s"' in page


def test_the_push_checkbox_reaches_the_job(admin, pool, enqueued):
    admin.post(reverse("inference:predict"), {"predict-dataset": pool[0].pk, "predict-push_to_label_studio": "on"})
    assert PredictionJob.objects.get().push_to_label_studio is True


def test_a_refused_prediction_shows_the_services_reason_and_queues_nothing(admin, pool, enqueued):
    ModelVersion.objects.filter(kind="classifier").update(promoted=False)
    response = admin.post(reverse("inference:predict"), {"predict-dataset": pool[0].pk})
    assert response.status_code == 400
    page = response.content.decode()
    assert 'id="predict-errors"' in page
    assert "no promoted classifier: train one and promote it on the Training page first" in page
    assert not PredictionJob.objects.exists() and enqueued == []


def test_a_dataset_without_images_is_refused_with_the_services_reason(admin, pool, enqueued):
    empty, _ = ensure_dataset(name="empty-set")
    response = admin.post(reverse("inference:predict"), {"predict-dataset": empty.pk})
    assert response.status_code == 400 and "dataset empty-set has no images" in response.content.decode()
    assert not PredictionJob.objects.exists() and enqueued == []


def test_the_job_list_shows_progress_and_polls_only_while_a_job_is_active(admin, pool):
    job = make_job(pool, status="running", progress={"total": 4, "done": 1, "predicted": 1, "skipped": 0})
    page = admin.get(reverse("inference:index")).content.decode()
    assert f'<tr data-job="{job.pk}" data-status="running">' in page
    assert 'aria-valuenow="25"' in page and "1/4 images" in page
    assert 'hx-trigger="every 2s"' in page

    partial = htmx_get(admin, reverse("inference:index")).content.decode()
    assert partial.lstrip().startswith('<div id="jobs"') and "<html" not in partial and "round-form" not in partial
    assert 'aria-valuenow="25"' in partial

    PredictionJob.objects.filter(pk=job.pk).update(
        status="succeeded", finished_at=timezone.now(),
        progress={"total": 4, "done": 4, "predicted": 3, "skipped": 1, "pushed": 2, "push_failed": 1})
    partial = htmx_get(admin, reverse("inference:index")).content.decode()
    assert 'data-status="succeeded"' in partial and 'aria-valuenow="100"' in partial
    assert "1 failed" in partial
    assert "hx-trigger" not in partial  # nothing active: the list stops polling


def test_a_failed_job_shows_its_error(admin, pool):
    job = make_job(pool, status="failed", error="OSError: saved_model not found", finished_at=timezone.now())
    page = admin.get(reverse("inference:index")).content.decode()
    assert f'data-job-error="{job.pk}"' in page and "OSError: saved_model not found" in page
    assert 'class="progress slim failed"' in page


# --- the round form ----------------------------------------------------------------------------


def test_the_round_form_offers_only_strategies_a_round_can_use_with_their_descriptions(admin, pool):
    page = admin.get(reverse("inference:index")).content.decode()
    select = re.search(r'<select name="strategy".*?</select>', page, re.S).group(0)
    offered = re.findall(r'<option value="([^"]+)"', select)
    assert offered == list(ROUND_STRATEGIES)
    assert {"tta_variance", "tta_bald"}.isdisjoint(offered) and "clinical_cost" in offered
    assert '<option value="clinical_cost" selected>' in select
    for name in offered:
        assert STRATEGIES[name].description.replace("'", "&#x27;") in page
    assert "Not offered: tta_variance, tta_bald" in page
    assert "pool · 4 unreviewed predicted images" in page
    assert "the experts annotate blind" in page


def test_starting_a_round_creates_it_and_opens_its_page(admin, pool):
    dataset = pool[0]
    response = admin.post(reverse("inference:rounds"),
                          round_post(dataset, diverse="on", allow_preannotations="on"))
    round_ = RankingRound.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("inference:round", args=[round_.pk])
    assert (round_.dataset, round_.strategy, round_.k, round_.diverse, round_.allow_preannotations) == (
        dataset, "clinical_cost", 2, True, True)
    assert round_.created_by.email == "admin@example.org" and round_.active
    page = admin.get(response["Location"]).content.decode()
    assert (f"Round #{round_.pk} ranked 3 unreviewed images of pool by clinical_cost (1 with no cluster found "
            "left out); the 2 selected lead the experts&#x27; queues.") in page


@pytest.mark.parametrize(("k", "message"), [
    ("0", "Ensure this value is greater than or equal to 1."),
    ("", "This field is required."),
    ("two", "Enter a whole number."),
])
def test_a_bad_k_is_shown_beside_its_field_and_starts_nothing(admin, pool, k, message):
    response = admin.post(reverse("inference:rounds"), round_post(pool[0], k=k))
    assert response.status_code == 400
    page = response.content.decode()
    assert 'id="round-errors"' in page and 'id="field-k"' in page and "field has-error" in page
    assert f'<p class="field-error" id="id_k_error">{message}</p>' in page
    assert not RankingRound.objects.exists()


def test_a_tta_strategy_posted_anyway_shows_the_services_refusal(admin, pool):
    response = admin.post(reverse("inference:rounds"), round_post(pool[0], strategy="tta_bald"))
    assert response.status_code == 400
    page = response.content.decode()
    assert 'id="round-errors"' in page
    assert "tta_bald needs test-time-augmented predictions, which prediction jobs do not store" in page
    assert not RankingRound.objects.exists()


def test_a_dataset_without_predictions_is_refused_with_the_services_reason(admin, pool):
    other, _ = ensure_dataset(name="fresh")
    response = admin.post(reverse("inference:rounds"), round_post(other))
    assert response.status_code == 400
    assert "nothing to rank in fresh" in response.content.decode()
    assert "run a prediction job first" in response.content.decode()
    assert not RankingRound.objects.exists()


def test_the_rounds_list_marks_the_active_round_and_an_old_round_says_what_replaced_it(admin, pool):
    dataset = pool[0]
    first = start_ranking_round(dataset=dataset, strategy="entropy", k=1)
    second = start_ranking_round(dataset=dataset, strategy="margin", k=2)
    assert admin.get(reverse("inference:rounds"))["Location"] == reverse("inference:index") + "#rounds"
    page = admin.get(reverse("inference:index")).content.decode()
    rows = re.findall(r'<tr data-round="(\d+)"( class="promoted")?>', page)
    assert rows == [(str(second.pk), ' class="promoted"'), (str(first.pk), "")]
    assert page.count("active-badge") == 1
    old = admin.get(reverse("inference:round", args=[first.pk])).content.decode()
    assert 'id="replaced-badge"' in old and f'href="{reverse("inference:round", args=[second.pk])}">#{second.pk}</a>' in old


# --- a round's page ----------------------------------------------------------------------------


def test_the_round_page_shows_ranks_scores_reasons_and_the_selected_first(admin, pool):
    dataset, images, *_ = pool
    round_ = start_ranking_round(dataset=dataset, strategy="clinical_cost", k=2)
    page = admin.get(reverse("inference:round", args=[round_.pk])).content.decode()
    cards = re.findall(r'data-rank="(\d+)" data-image="(\d+)" data-selected="(true|false)"', page)
    assert cards == [("1", str(images[1].pk), "true"), ("2", str(images[2].pk), "true"),
                     ("3", str(images[0].pk), "false")]
    assert page.count('class="badge selected-badge"') == 2
    for ranked in RankedImage.objects.filter(round=round_):
        assert ranked.reason in page
        assert f"score <strong>{ranked.score:.3f}</strong>" in page
    assert "called HSIL (p=0.47), next NILM (0.45)" in page
    assert page.count('class="pill lab-HSIL verdict"') == 3  # every ranked image's verdict is HSIL
    assert f'href="{reverse("annotation:image", args=["pool", images[1].pk])}"' in page
    assert '<strong id="pool-size">4</strong>' in page and '<strong id="ranked-total">3</strong>' in page
    assert '<strong id="selected-count">2</strong>' in page


def test_the_round_page_shows_thumbnails_with_the_top_cluster_drawn(admin, pool):
    dataset, images, *_ = pool
    round_ = start_ranking_round(dataset=dataset, strategy="clinical_cost", k=2)
    Image.objects.filter(pk=images[1].pk).update(thumbnail="")  # made on demand, as the gallery does
    page = admin.get(reverse("inference:round", args=[round_.pk])).content.decode()
    thumbs = re.findall(r'<img src="([^"]+)" alt="(im\d\.png)"', page)
    assert [name for _, name in thumbs] == ["im1.png", "im2.png", "im0.png"]
    for url, _ in thumbs:
        response = admin.get(url)
        assert response.status_code == 200 and response["Content-Type"] == "image/jpeg"
    assert Image.objects.get(pk=images[1].pk).thumbnail
    assert page.count('viewBox="0 0 120 90"') == 3
    # im1: its NILM/HSIL split (at 60,40) set the score and is the highlighted box; its sure NILM is faint
    first = page[page.index(f'data-image="{images[1].pk}"'):page.index(f'data-image="{images[2].pk}"')]
    assert re.search(r'<rect class="top-cluster lab-HSIL" x="60.0" y="40.0" width="30.0" height="25.0">', first)
    assert re.search(r'<rect class="other-cluster lab-NILM" x="10.0" y="10.0"', first)
    assert first.count("top-cluster") == 1


def test_the_round_page_shows_the_top_clusters_six_class_probabilities(admin, pool):
    dataset, images, *_ = pool
    round_ = start_ranking_round(dataset=dataset, strategy="clinical_cost", k=2)
    page = admin.get(reverse("inference:round", args=[round_.pk])).content.decode()
    assert page.count('<table class="prob-bars"') == 3
    first = page[page.index(f'data-image="{images[1].pk}"'):page.index(f'data-image="{images[2].pk}"')]
    rows = re.findall(r'<tr class="lab-([A-Z-]+)( call)?"[^>]*><th>\1</th><td class="bar"><span style="width: ([\d.]+)%">'
                      r'</span></td><td class="num">([\d.]+)</td>', first)
    assert [r[0] for r in rows] == ["NILM", "ASC-US", "LSIL", "ASC-H", "HSIL", "SCC"]
    assert [r[1] for r in rows] == ["", "", "", "", " call", ""]
    assert [r[2] for r in rows] == ["45.0", "2.0", "2.0", "2.0", "47.0", "2.0"]
    assert [r[3] for r in rows] == ["0.45", "0.02", "0.02", "0.02", "0.47", "0.02"]


def test_the_round_page_plots_the_score_distribution_with_the_k_cut(admin, pool):
    dataset, *_ = pool
    round_ = start_ranking_round(dataset=dataset, strategy="clinical_cost", k=2)
    scores = sorted(RankedImage.objects.filter(round=round_).values_list("score", flat=True), reverse=True)
    page = admin.get(reverse("inference:round", args=[round_.pk])).content.decode()
    svg = re.search(r'<svg class="lineplot histogram" id="score-histogram".*?</svg>', page, re.S).group(0)
    assert 'data-k="2"' in svg
    cut = float(re.search(r'data-cut="([^"]+)"', svg).group(1))
    assert cut == pytest.approx((scores[1] + scores[2]) / 2, rel=1e-5)
    assert 'id="k-cut"' in svg and "top 2 →" in svg
    counts = [int(n) for n in re.findall(r'<g class="bar" data-count="(\d+)"', svg)]
    selected = [int(n) for n in re.findall(r'data-selected="(\d+)"', svg)]
    assert sum(counts) == 3 and sum(selected) == 2


def test_a_big_round_is_paginated_with_the_selected_on_the_first_page(admin, pool, monkeypatch):
    monkeypatch.setattr(views, "PAGE_SIZE", 2)
    dataset, images, *_ = pool
    round_ = start_ranking_round(dataset=dataset, strategy="clinical_cost", k=2)
    url = reverse("inference:round", args=[round_.pk])
    first = admin.get(url).content.decode()
    assert re.findall(r'data-selected="(true|false)"', first) == ["true", "true"]
    assert f'href="{url}?page=2" rel="next"' in first and "1–2 of 3" in first
    second = admin.get(url + "?page=2").content.decode()
    assert re.findall(r'data-rank="(\d+)" data-image="(\d+)"', second) == [("3", str(images[0].pk))]
    assert 'id="score-histogram"' in second  # the plot covers every score on every page


# --- the score histogram -----------------------------------------------------------------------


def test_the_histogram_counts_every_score_once_and_cuts_between_the_kth_and_the_next():
    scores = [(0.9, True), (0.8, True), (0.5, False), (0.1, False), (0.12, False)]
    plot = views.score_histogram(scores, k=2, descending=True, bins=4)
    assert [b["count"] for b in plot["bars"]] == [2, 0, 1, 2]
    assert [b["selected"] for b in plot["bars"]] == [0, 0, 0, 2]
    assert plot["cut"] == pytest.approx(0.65)
    assert plot["left"] < plot["cut_x"] < plot["right"]


def test_an_ascending_strategys_cut_is_on_the_low_side():
    plot = views.score_histogram([(0.05, True), (0.3, False), (0.7, False)], k=1, descending=False)
    assert plot["cut"] == pytest.approx(0.175) and plot["selected_side"] == "left"


def test_no_cut_when_k_covers_the_pool_and_equal_scores_still_plot():
    plot = views.score_histogram([(1.0, True), (1.0, True)], k=5)
    assert plot["cut"] is None and plot["cut_x"] is None
    assert sum(b["count"] for b in plot["bars"]) == 2
    assert views.score_histogram([], k=2) is None


def test_the_two_forms_on_one_page_keep_their_element_ids_apart(admin, pool):
    page = admin.get(reverse("inference:index")).content.decode()
    ids = re.findall(r'\sid="([^"]+)"', page)
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
    assert 'id="id_predict-dataset"' in page and 'id="id_dataset"' in page
    assert re.search(r'<input type="checkbox" name="predict-push_to_label_studio"[^>]* checked', page)
