"""The Training pages (admin only), models: the registry with its test report (classifier and
detector), promote and rollback, and the confirmation a worse version needs. Django's test client
against the real PostgreSQL."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from django.urls import reverse

from annotation.bethesda import BETHESDA
from tests.training.pages.conftest import make_model_version, make_run
from training import services
from training.models import ModelVersion, Promotion

pytestmark = pytest.mark.django_db


# --- the registry ------------------------------------------------------------------------------


def test_the_registry_lists_versions_with_their_test_scores(admin, version):
    old = make_model_version(version, "classifier-1", promoted=True)
    new = make_model_version(version, "classifier-2")
    page = admin.get(reverse("training:models")).content.decode()
    report = old.metrics["test"]
    assert f"{report['average']['f1']:.3f}" in page and f"{100 * report['overall_accuracy']:.1f}%" in page
    assert f'id="promoted-{old.pk}"' in page and f'id="promote-{new.pk}"' in page
    assert f'id="promote-{old.pk}"' not in page and f'id="promoted-{new.pk}"' not in page
    assert "No detector version yet" in page


def test_a_versions_page_shows_the_papers_table_and_its_confusion_matrix(admin, version, settings):
    model = make_model_version(version, "classifier-7", with_png=True, settings=settings)
    page = admin.get(reverse("training:model", args=[model.pk])).content.decode()
    report = model.metrics["test"]
    assert re.findall(r'<tr class="lab-[^"]+" data-class="([^"]+)"', page) == list(BETHESDA)  # the paper's order
    assert 'data-class="Average"' in page
    hsil = report["classes"]["HSIL"]
    assert f"{100 * hsil['precision']:.1f}%" in page and f"{100 * report['average']['recall']:.1f}%" in page
    image_url = reverse("media", args=["models/classifier/classifier-7/confusion.png"])
    assert f'src="{image_url}"' in page
    image = admin.get(image_url)
    assert image.status_code == 200 and image["Content-Type"] == "image/png"
    assert 'id="learning-curve"' in page and 'id="promote"' in page


def test_a_version_without_its_confusion_image_says_so(admin, version):
    model = make_model_version(version, "classifier-8")
    page = admin.get(reverse("training:model", args=[model.pk])).content.decode()
    assert 'id="no-confusion"' in page and "<img" not in page


def test_promote_makes_a_version_the_promoted_one(admin, version):
    old = make_model_version(version, "classifier-1", promoted=True)
    new = make_model_version(version, "classifier-2")
    response = admin.post(reverse("training:promote", args=[new.pk]), {"note": "better HSIL recall"}, follow=True)
    old.refresh_from_db()
    new.refresh_from_db()
    assert (old.promoted, new.promoted) == (False, True)
    entry = Promotion.objects.get()
    assert (entry.model_version, entry.note, entry.promoted_by.email) == (new, "better HSIL recall", "admin@example.org")
    page = response.content.decode()
    assert "classifier-2 promoted" in page and 'id="promoted-badge"' in page


def test_promote_returns_to_the_registry_when_asked(admin, version):
    model = make_model_version(version, "classifier-3")
    response = admin.post(reverse("training:promote", args=[model.pk]), {"next": reverse("training:models")})
    assert response["Location"] == reverse("training:models")
    response = admin.post(reverse("training:promote", args=[model.pk]), {"next": "https://evil.example/"})
    assert response["Location"] == reverse("training:model", args=[model.pk])


def test_rollback_promotes_the_previous_version_again(admin, version):
    first = make_model_version(version, "classifier-1")
    second = make_model_version(version, "classifier-2")
    admin.post(reverse("training:promote", args=[first.pk]))
    admin.post(reverse("training:promote", args=[second.pk]))
    page = admin.get(reverse("training:models")).content.decode()
    assert 'id="rollback-classifier"' in page and "Roll back to classifier-1" in page
    response = admin.post(reverse("training:rollback"), {"kind": "classifier"}, follow=True)
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.promoted, second.promoted) == (True, False)
    assert "Rolled back: classifier-1 is the promoted classifier again" in response.content.decode()


def test_rollback_with_nothing_to_go_back_to_is_a_message(admin, version):
    make_model_version(version, "classifier-1", promoted=True)
    response = admin.post(reverse("training:rollback"), {"kind": "classifier"}, follow=True)
    assert response.status_code == 200
    assert "no earlier classifier version to roll back to" in response.content.decode()
    assert ModelVersion.objects.get().promoted
    response = admin.post(reverse("training:rollback"), {"kind": "segmenter"}, follow=True)
    assert "Choose which kind of model to roll back" in response.content.decode()


def make_detector_version(version, name="detector-9"):
    """A detector version whose metrics are what the detector trainer stores, computed by the real
    evaluation code on a few hand-made images."""
    import numpy as np

    from training.detection.evaluate import GroundTruth, choose_threshold
    from training.detection.nms import Detections
    from training.detector.config import DetectorRunConfig
    from training.detector.evaluation import detection_report, threshold_dict

    box = np.array([[10.0, 10.0, 50.0, 50.0]])
    truths = [GroundTruth(box, np.array([3])), GroundTruth(box, np.array([1])), GroundTruth(np.zeros((0, 4)),
                                                                                           np.zeros(0, int))]
    found = [Detections(box, np.array([0.9]), np.array([3])), Detections(box, np.array([0.6]), np.array([1])),
             Detections(box + 5, np.array([0.7]), np.array([2]))]
    choice = choose_threshold(found, truths)
    history = [{"epoch": 1, "loss": 30.0, "val_map": 0.2}, {"epoch": 2, "loss": 12.0, "val_map": 0.55}]
    return ModelVersion.objects.create(
        kind="detector", name=name, dataset_version=version, artifact_dir=f"models/detector/{name}",
        config=DetectorRunConfig(preset="yolov4_test").to_json(),
        metrics={"test": detection_report(found, truths, choice.threshold, 5), "history": history,
                 "best_val_map": 0.55, "threshold": threshold_dict(choice),
                 "anchors": {"source": "preset", "reason": "3 training boxes are too few for k-means"}},
    )


def test_a_detector_versions_page_shows_map_ap_per_class_and_what_the_threshold_costs(admin, version):
    detector = make_detector_version(version)
    page = admin.get(reverse("training:model", args=[detector.pk])).content.decode()
    threshold = detector.metrics["threshold"]
    assert "test mAP@0.5" in page and 'id="ap-table"' in page
    assert f'{threshold["threshold"]:.3f}' in page  # the chosen threshold, then what it costs
    assert f'id="threshold-precision">{100 * threshold["precision"]:.1f}%' in page
    assert f'id="threshold-recall">{100 * threshold["recall"]:.1f}%' in page
    assert f'id="test-map">{100 * detector.metrics["test"]["map"]:.1f}%' in page
    assert 'data-class="HSIL"' in page and "too few for k-means" in page
    assert "best val mAP@0.5" in page and "validation mAP@0.5" in page  # the curve is the detector's
    registry = admin.get(reverse("training:models")).content.decode()
    assert "Test mAP@0.5" in registry and f'{detector.metrics["test"]["map"]:.3f}' in registry


# --- promotion asks first ------------------------------------------------------------------------


def make_scored_version(version, name: str, *, kind: str = "classifier", promoted: bool = False, **figures):
    """A version whose test figures are exactly ``figures`` (macro_f1/accuracy, or map/recall/precision)."""
    if kind == "classifier":
        test = {"average": {"f1": figures["macro_f1"]}, "overall_accuracy": figures["accuracy"], "n": 40}
    else:
        test = {"map": figures["map"], "n": 12,
                "atypical": {"recall": figures["recall"], "precision": figures["precision"]}}
    return ModelVersion.objects.create(kind=kind, name=name, dataset_version=version, artifact_dir=f"models/{name}",
                                       config={}, metrics={"test": test}, promoted=promoted)


def test_a_versions_page_shows_it_beside_the_promoted_one_on_the_same_test_figures(admin, version):
    make_scored_version(version, "detector-1", kind="detector", promoted=True, map=0.412, recall=0.9, precision=0.6)
    candidate = make_scored_version(version, "detector-2", kind="detector", map=0.003, recall=1.0, precision=0.5)
    page = admin.get(reverse("training:model", args=[candidate.pk])).content.decode()
    rows = re.findall(r'<tr data-figure="(\w+)" class="(\w*)">\s*<th scope="row">[^<]+</th>\s*'
                      r'<td class="num candidate">([^<]+)</td>\s*<td class="num current">([^<]+)</td>', page)
    assert rows == [("map", "worse", "0.003", "0.412"), ("image_recall", "better", "1.000", "0.900"),
                    ("image_precision", "worse", "0.500", "0.600")]
    assert "test mAP@0.5 0.003 is below the floor 0.250 (PROMOTION_MIN_MAP)" in page
    assert 'id="promote-confirm"' in page


def test_promoting_a_version_below_the_floor_without_confirmation_is_refused(admin, version):
    candidate = make_scored_version(version, "classifier-5", macro_f1=0.12, accuracy=0.3)
    response = admin.post(reverse("training:promote", args=[candidate.pk]), {"next": reverse("training:models")})
    assert response["Location"] == reverse("training:model", args=[candidate.pk]) + "#promotion"
    page = admin.get(response["Location"]).content.decode()
    assert "promoting classifier-5 needs a confirmation: test macro-F1 0.120 is below the floor 0.500" in page
    candidate.refresh_from_db()
    assert not candidate.promoted and not Promotion.objects.exists()


def test_promoting_a_worse_version_on_confirmation_records_both_figures_and_the_decision(admin, version):
    current = make_scored_version(version, "classifier-1", promoted=True, macro_f1=0.8, accuracy=0.85)
    worse = make_scored_version(version, "classifier-2", macro_f1=0.7, accuracy=0.9)
    assert admin.post(reverse("training:promote", args=[worse.pk]), {"against": current.pk}).status_code == 302
    assert not ModelVersion.objects.get(pk=worse.pk).promoted  # refused: not confirmed
    admin.post(reverse("training:promote", args=[worse.pk]), {"against": current.pk, "confirm": "yes"})
    entry = Promotion.objects.get()
    assert ModelVersion.objects.get(pk=worse.pk).promoted and not ModelVersion.objects.get(pk=current.pk).promoted
    assert (entry.action, entry.previous, entry.confirmed) == ("promote", current, True)
    assert entry.concerns == ["test macro-F1 0.700 is lower than classifier-1's 0.800"]
    assert entry.figures["candidate"] == {"name": "classifier-2", "macro_f1": 0.7, "accuracy": 0.9}
    assert entry.figures["previous"] == {"name": "classifier-1", "macro_f1": 0.8, "accuracy": 0.85}
    page = admin.get(reverse("training:model", args=[worse.pk])).content.decode()
    assert "confirmed despite:</strong> test macro-F1 0.700 is lower than classifier-1&#x27;s 0.800" in page


def test_a_better_version_is_promoted_in_one_click_and_says_so_in_the_audit(admin, version):
    current = make_scored_version(version, "classifier-1", promoted=True, macro_f1=0.6, accuracy=0.7)
    better = make_scored_version(version, "classifier-2", macro_f1=0.7, accuracy=0.75)
    page = admin.get(reverse("training:models")).content.decode()
    assert f'<button type="submit" class="small-button" id="promote-{better.pk}"' in page
    admin.post(reverse("training:promote", args=[better.pk]), {"against": current.pk})
    entry = Promotion.objects.get()
    assert entry.model_version == better and not entry.confirmed and entry.concerns == []


def test_the_registry_sends_a_version_that_needs_confirmation_to_its_comparison(admin, version):
    make_scored_version(version, "classifier-1", promoted=True, macro_f1=0.8, accuracy=0.85)
    worse = make_scored_version(version, "classifier-2", macro_f1=0.7, accuracy=0.9)
    page = admin.get(reverse("training:models")).content.decode()
    url = reverse("training:model", args=[worse.pk])
    assert f'id="promote-{worse.pk}" href="{url}#promotion"' in page


def test_a_confirmation_given_against_another_promoted_version_is_refused(admin, version):
    first = make_scored_version(version, "classifier-1", macro_f1=0.8, accuracy=0.85)
    second = make_scored_version(version, "classifier-2", promoted=True, macro_f1=0.9, accuracy=0.9)
    response = admin.post(reverse("training:promote", args=[first.pk]),
                          {"against": "none", "confirm": "yes"}, follow=True)
    assert "the promoted classifier is now classifier-2, not none: compare the figures again" in \
        response.content.decode()
    assert ModelVersion.objects.get(pk=second.pk).promoted and not Promotion.objects.exists()


def test_rolling_back_to_a_worse_version_needs_confirmation(admin, version):
    old = make_scored_version(version, "classifier-1", macro_f1=0.6, accuracy=0.7)
    new = make_scored_version(version, "classifier-2", macro_f1=0.8, accuracy=0.85)
    services.promote(version=old)
    services.promote(version=new)
    page = admin.get(reverse("training:models")).content.decode()
    assert f'id="rollback-classifier" href="{reverse("training:model", args=[old.pk])}#rollback-check"' in page
    response = admin.post(reverse("training:rollback"), {"kind": "classifier"})
    assert response["Location"] == reverse("training:model", args=[old.pk]) + "#rollback-check"
    assert ModelVersion.objects.get(pk=new.pk).promoted
    admin.post(reverse("training:rollback"), {"kind": "classifier", "confirm": "yes", "against": new.pk})
    entry = Promotion.objects.first()
    assert ModelVersion.objects.get(pk=old.pk).promoted
    assert (entry.action, entry.model_version, entry.previous, entry.confirmed) == ("rollback", old, new, True)


def test_every_time_on_the_model_pages_has_its_date(admin, version):
    model = make_scored_version(version, "classifier-1", macro_f1=0.8, accuracy=0.85)
    services.promote(version=model)
    moment = datetime(2026, 12, 3, 6, 56, tzinfo=UTC)
    ModelVersion.objects.filter(pk=model.pk).update(created_at=moment)
    Promotion.objects.update(promoted_at=moment)
    run = make_run(version, status="cancelled", finished_at=moment)
    for url in (reverse("training:models"), reverse("training:model", args=[model.pk]),
                reverse("training:run", args=[run.pk])):
        page = admin.get(url).content.decode()
        assert "3 Dec 2026, 06:56 UTC" in page, url
        dateless = [page[max(0, m.start() - 20):m.end()] for m in re.finditer(r"\b\d\d:\d\d\b", page)
                    if not re.search(r"\d{4}, $", page[:m.start()])]
        assert dateless == [], url
