"""Ranking rounds on stored predictions: order, reasons, queue feeding, pre-annotation gate,
clear refusals. Predictions are written as the prediction job writes them (store_prediction);
the models themselves are exercised in test_prediction_job.py."""

import numpy as np
import pytest

from annotation.models import Image, PredictionBox
from annotation.services import ensure_dataset, next_assignment
from inference.models import RankedCluster, RankedImage, RankingRound
from inference.pipeline import ClusterResult, ImageResult
from inference.selectors import preannotations_allowed
from inference.services import InferenceRefused, start_ranking_round, store_prediction
from training.models import DatasetVersion, ModelVersion

pytestmark = pytest.mark.django_db(transaction=True)


def version(kind, dataset, n, promoted=True):
    dv, _ = DatasetVersion.objects.get_or_create(dataset=dataset, number=1, defaults={"splits": {}})
    return ModelVersion.objects.create(kind=kind, name=f"{kind}-{n}", dataset_version=dv, artifact_dir="x",
                                       config={}, metrics={}, promoted=promoted)


def cluster(p, score=0.9, emb=(1.0, 0.0)):
    p = np.asarray(p, dtype=np.float64)
    return ClusterResult(box=(10.0, 10.0, 40.0, 40.0), detector_score=score, detector_class="HSIL",
                         probabilities=p / p.sum(), embedding=np.asarray(emb, dtype=np.float32))


@pytest.fixture
def predicted(tmp_path):
    """Four images with predictions: confident, split NILM/HSIL, split ASC-H/HSIL, nothing found."""
    from PIL import Image as PILImage

    from annotation.services import import_images

    dataset, _ = ensure_dataset(name="pool")
    for i in range(4):
        PILImage.new("RGB", (96, 96), (200 + i, 190, 210)).save(tmp_path / f"im{i}.png")
    import_images(dataset=dataset, path=tmp_path)
    images = list(Image.objects.filter(dataset=dataset).order_by("original_name"))
    det, cls = version("detector", dataset, 1), version("classifier", dataset, 1)
    results = [
        ImageResult([cluster([0.02, 0.02, 0.02, 0.02, 0.9, 0.02])]),                      # sure HSIL
        ImageResult([cluster([0.45, 0.02, 0.02, 0.02, 0.47, 0.02], emb=(0.0, 1.0)),       # NILM vs HSIL
                     cluster([0.9, 0.02, 0.02, 0.02, 0.02, 0.02])]),
        ImageResult([cluster([0.02, 0.02, 0.02, 0.45, 0.47, 0.02], emb=(0.0, 1.1))]),     # ASC-H vs HSIL
        ImageResult([]),                                                                   # nothing found
    ]
    for image, result in zip(images, results, strict=True):
        store_prediction(image=image, result=result, detector=det, classifier=cls)
    return dataset, images, det, cls


def test_stored_predictions_are_prediction_boxes_with_the_classifiers_call(predicted):
    dataset, images, det, cls = predicted
    box = PredictionBox.objects.get(image=images[0])
    assert box.label == "HSIL" and box.model_version == "detector-1+classifier-1"
    assert box.score == pytest.approx(0.9 / 1.0, abs=1e-6)
    assert images[0].model_predictions.get().verdict == "HSIL"
    assert images[1].model_predictions.get().verdict == "HSIL"  # the highest grade found
    assert images[3].model_predictions.get().verdict == "NILM"  # nothing detected
    # idempotent per (image, model versions)
    again = store_prediction(image=images[0], result=ImageResult([]), detector=det, classifier=cls)
    assert again.verdict == "HSIL" and PredictionBox.objects.filter(image=images[0]).count() == 1


def test_clinical_cost_ranks_the_nilm_hsil_split_first_and_feeds_the_queue(predicted, make_user):
    dataset, images, det, cls = predicted
    round_ = start_ranking_round(dataset=dataset, strategy="clinical_cost", k=2)
    ranked = list(RankedImage.objects.filter(round=round_).order_by("rank"))
    assert [r.image_id for r in ranked] == [images[1].pk, images[2].pk, images[0].pk]
    assert [r.selected for r in ranked] == [True, True, False]
    assert "NILM" in ranked[0].reason and "HSIL" in ranked[0].reason and "2 clusters" in ranked[0].reason
    assert RankedCluster.objects.filter(round=round_).count() == 4
    ranks = dict(Image.objects.filter(dataset=dataset).values_list("pk", "queue_rank"))
    assert ranks == {images[0].pk: None, images[1].pk: 1.0, images[2].pk: 2.0, images[3].pk: None}
    pathologist = make_user("p@lab.org", roles=["pathologist"])
    assert next_assignment(annotator=pathologist).image_id == images[1].pk  # the queue follows the round


def test_a_new_round_replaces_the_previous_one(predicted):
    dataset, images, det, cls = predicted
    first = start_ranking_round(dataset=dataset, strategy="entropy", k=3)
    second = start_ranking_round(dataset=dataset, strategy="least_confidence", k=1)
    assert not RankingRound.objects.get(pk=first.pk).active and RankingRound.objects.get(pk=second.pk).active
    assert Image.objects.filter(dataset=dataset, queue_rank__isnull=False).count() == 1


def test_diversity_spreads_the_picks_over_the_embedding_space(predicted):
    dataset, images, det, cls = predicted
    plain = start_ranking_round(dataset=dataset, strategy="entropy", k=2)
    diverse = start_ranking_round(dataset=dataset, strategy="entropy", k=2, diverse=True)
    pick = {r.round_id: sorted(r.image_id for r in RankedImage.objects.filter(round=r.round_id, selected=True))
            for r in RankedImage.objects.filter(round__in=[plain, diverse], rank=1)}
    assert pick[plain.pk] == sorted([images[1].pk, images[2].pk])  # the two most uncertain: both near (0, 1)
    assert pick[diverse.pk] == sorted([images[1].pk, images[0].pk])  # the second from the other side


def test_preannotations_only_for_selected_images_of_a_round_that_allows_them(predicted):
    dataset, images, det, cls = predicted
    start_ranking_round(dataset=dataset, strategy="entropy", k=1)
    assert preannotations_allowed(images[1]) is None  # blind by default
    start_ranking_round(dataset=dataset, strategy="clinical_cost", k=1, allow_preannotations=True)
    assert preannotations_allowed(images[1]) is not None
    assert preannotations_allowed(images[2]) is None  # not selected


def test_a_round_allowing_preannotations_names_its_models_on_the_selected_images_until_the_next_round(predicted):
    dataset, images, det, cls = predicted
    start_ranking_round(dataset=dataset, strategy="clinical_cost", k=1, allow_preannotations=True)
    named = dict(Image.objects.filter(dataset=dataset).exclude(preannotation_model="")
                 .values_list("pk", "preannotation_model"))
    assert named == {images[1].pk: "detector-1+classifier-1"}  # the one selected
    start_ranking_round(dataset=dataset, strategy="clinical_cost", k=1)  # blind: replaces it
    assert not Image.objects.filter(dataset=dataset).exclude(preannotation_model="").exists()


def test_migration_names_the_models_of_an_active_round_started_before_the_field_existed(predicted):
    import importlib

    from django.apps import apps

    dataset, images, det, cls = predicted
    start_ranking_round(dataset=dataset, strategy="clinical_cost", k=1, allow_preannotations=True)
    Image.objects.update(preannotation_model="")  # as stored before annotation 0007
    importlib.import_module("inference.migrations.0002_preannotation_model_from_active_rounds") \
        .name_active_rounds_models(apps, None)
    named = dict(Image.objects.exclude(preannotation_model="").values_list("pk", "preannotation_model"))
    assert named == {images[1].pk: "detector-1+classifier-1"}


def test_editor_shows_the_rounds_predictions_only_when_allowed(predicted, make_user, client):
    dataset, images, det, cls = predicted
    pathologist = make_user("p@lab.org", roles=["pathologist"])
    client.force_login(pathologist)
    start_ranking_round(dataset=dataset, strategy="clinical_cost", k=1)
    assignment = next_assignment(annotator=pathologist)
    page = client.get(f"/annotate/{assignment.image_id}/editor/").content.decode()
    assert '"predictions": []' in page
    start_ranking_round(dataset=dataset, strategy="clinical_cost", k=1, allow_preannotations=True)
    page = client.get(f"/annotate/{assignment.image_id}/editor/").content.decode()
    assert "detector-1+classifier-1" in page


@pytest.mark.parametrize(("strategy", "k", "message"), [
    ("nope", 2, "unknown"),
    ("tta_variance", 2, "test-time-augmented"),
    ("entropy", 0, "k must be at least 1"),
])
def test_bad_rounds_are_refused_clearly(predicted, strategy, k, message):
    dataset, *_ = predicted
    with pytest.raises(InferenceRefused, match=message):
        start_ranking_round(dataset=dataset, strategy=strategy, k=k)
    assert not RankingRound.objects.exists()


def test_a_round_without_predictions_or_promoted_models_is_refused(predicted):
    dataset, images, det, cls = predicted
    empty, _ = ensure_dataset(name="empty")
    with pytest.raises(InferenceRefused, match="run a prediction job first"):
        start_ranking_round(dataset=empty, strategy="entropy", k=2)
    ModelVersion.objects.filter(kind="detector").update(promoted=False)
    with pytest.raises(InferenceRefused, match="no promoted detector"):
        start_ranking_round(dataset=dataset, strategy="entropy", k=2)
