"""Consensus: an image's expert annotations merged into clusters once it has its N annotations."""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Max, OuterRef, Q, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from annotation import ground_truth
from annotation.bethesda import BETHESDA, disagreement_risk
from annotation.bulk import insert_rows
from annotation.consensus import MODEL_VOTER, ConsensusConfig, group_model_boxes, merge_assisted
from annotation.geometry import Box, iou
from annotation.models import (
    Assignment,
    Cluster,
    ConsensusState,
    Dataset,
    ExpertAnnotation,
    ExpertReliability,
    GroundTruthBox,
    Image,
)
from annotation.selectors import annotation_rows, required_experts
from annotation.services.common import Progress
from cytoloop.jobs import enqueue_on_commit


def consensus_config():
    return ConsensusConfig(
        iou_threshold=settings.CONSENSUS_IOU_THRESHOLD,
        quorum=settings.CONSENSUS_QUORUM,
        weak_iou=settings.CONSENSUS_WEAK_IOU,
        box_method=settings.CONSENSUS_BOX_METHOD,
        model_boxes=settings.CONSENSUS_MODEL_BOXES,
    )


def _signature(rows, model_boxes: str = "model") -> str:
    """What the image's consensus depends on; ``model_boxes`` (CONSENSUS_MODEL_BOXES) only enters
    for boxes accepted unchanged from the model, so switching it recomputes exactly those images."""
    digest = hashlib.sha256()
    for ann_id, annotator_id, boxes in rows:
        digest.update(f"{ann_id}:{annotator_id};".encode())
        for box_id, b, model in boxes:
            digest.update(f"{box_id},{b.x!r},{b.y!r},{b.width!r},{b.height!r},{b.label}|".encode())
            if model is not None:  # boxes without model help keep the signatures they had
                digest.update(f"model={model};{model_boxes}|".encode())
    return digest.hexdigest()


def _reliability_weights(dataset_id: int) -> dict[str, float] | None:
    if settings.CONSENSUS_WEIGHTING != "reliability":
        return None
    weights = dict(ExpertReliability.objects.filter(dataset_id=dataset_id).values_list("user_id", "reliability"))
    return {str(k): max(v, 1e-6) for k, v in weights.items()} or None


CLUSTER_COLUMNS = ("image_id", "x", "y", "width", "height", "label", "votes", "members", "status", "reasons",
                   "vote_share", "mean_iou", "n_experts_found", "n_experts", "risk")


TRUTH_COLUMNS = ("image_id", "x", "y", "width", "height", "label", "source")


def _build_consensus(image_id: int, rows, config, weights):
    """Cluster rows (CLUSTER_COLUMNS) and consensus ground-truth rows (TRUTH_COLUMNS) for one
    image, as plain tuples: the bulk path writes hundreds of thousands of them."""
    # model help (CONSENSUS_MODEL_BOXES="model"): a pre-annotation accepted unchanged is the model's
    # vote, one per distinct model box however many experts accepted it, never an expert's
    assisted = config.model_boxes == "model"
    by_expert: dict[str, list[Box]] = {}
    box_ids: dict[str, list[tuple]] = {}
    accepted: list[tuple] = []  # (expert, annotation id, box id, Box, model version)
    for ann_id, annotator_id, boxes in rows:
        expert = str(annotator_id)
        by_expert[expert], box_ids[expert] = [], []
        for box_id, b, model in boxes:
            if assisted and model is not None:
                accepted.append((expert, ann_id, box_id, b, model))
            else:
                by_expert[expert].append(b)
                box_ids[expert].append((ann_id, box_id, model))
    groups = group_model_boxes([(a[4], a[3]) for a in accepted])
    expert_weights = None
    if weights:
        expert_weights = {e: weights.get(e, 1.0) for e in by_expert}
    results = merge_assisted(by_expert, [accepted[g[0]][3] for g in groups], n_experts=len(by_expert),
                             weights=expert_weights, config=config)
    n_experts = len(by_expert)
    clusters, truth = [], []
    for r in results:
        members = []
        labels = set()
        for expert, index in r.members:
            if expert == MODEL_VOTER:  # the model's one vote, shown on each expert who accepted it
                for j in groups[index]:
                    e, ann_id, box_id, b, model = accepted[j]
                    members.append({"annotation": ann_id, "box": box_id, "expert": int(e), "label": b.label,
                                    "x": b.x, "y": b.y, "width": b.width, "height": b.height,
                                    "model": model, "model_vote": True})
                    labels.add(BETHESDA.index(b.label))
                continue
            ann_id, box_id, model = box_ids[expert][index]
            b = by_expert[expert][index]
            member = {"annotation": ann_id, "box": box_id, "expert": int(expert), "label": b.label,
                      "x": b.x, "y": b.y, "width": b.width, "height": b.height}
            if model is not None:  # accepted unchanged, counted as the expert's own ("expert" setting)
                member["model"] = model
            members.append(member)
            labels.add(BETHESDA.index(b.label))
        if r.n_experts_found < n_experts:
            labels.add(0)  # an expert who drew nothing there called it negative
        box = r.box
        clusters.append((image_id, box.x, box.y, box.width, box.height, r.label, list(r.votes), members,
                         r.status, list(r.reasons), r.vote_share, r.mean_iou, r.n_experts_found, n_experts,
                         0.0 if r.agreed else disagreement_risk(labels)))
        if r.agreed:
            truth.append((image_id, box.x, box.y, box.width, box.height, r.label,
                          GroundTruthBox.Source.CONSENSUS.value))
    return clusters, truth


def _store_consensus(built: dict[int, tuple], signatures: dict[int, str]) -> None:
    """Replace the computed (not reviewed) clusters of these images; a reviewer's decision stands:
    a new cluster over a resolved or rejected one is dropped. The agreed clusters become the
    images' consensus ground truth, superseding (never duplicating) the lesions' current boxes
    (annotation.ground_truth.apply_consensus)."""
    image_ids = list(built)
    now = timezone.now()
    # plain DELETEs: nothing cascades from computed clusters (the audit log keeps bare ids)
    Cluster.objects.filter(image_id__in=image_ids, status__in=[Cluster.Status.AGREED, Cluster.Status.DISPUTED]
                           )._raw_delete(Cluster.objects.db)
    reviewed: dict[int, list[Box]] = {}
    for image_id, x, y, w, h, label in Cluster.objects.filter(image_id__in=image_ids).values_list(
            "image_id", "x", "y", "width", "height", "label"):
        reviewed.setdefault(image_id, []).append(Box(x, y, w, h, label))
    new_clusters, new_truth = [], {}
    threshold = consensus_config().iou_threshold
    for image_id, (clusters, truth) in built.items():
        done = reviewed.get(image_id)
        if done:
            clusters = [c for c in clusters
                        if not any(iou(Box(c[1], c[2], c[3], c[4], c[5]), d) >= threshold for d in done)]
            kept = {c[1:5] for c in clusters}
            truth = [t for t in truth if t[1:5] in kept]
        new_clusters += clusters
        new_truth[image_id] = [Box(*t[1:6]) for t in truth]
    insert_rows(Cluster, CLUSTER_COLUMNS, new_clusters, {"created_at": now})
    # the agreed boxes replace the previous computation's, supersede the imported boxes of their
    # lesions and never a reviewer's decision (annotation.ground_truth)
    ground_truth.apply_consensus(new_truth, now=now)
    ConsensusState.objects.bulk_create(
        [ConsensusState(image_id=i, signature=s) for i, s in signatures.items()], batch_size=2000,
        update_conflicts=True, unique_fields=["image"], update_fields=["signature", "computed_at"],
    )
    Image.objects.filter(pk__in=image_ids, consensus_at=None).update(consensus_at=now)


def compute_consensus(*, image: Image, force: bool = False) -> str:
    """Merge the image's expert annotations into clusters once it has its N annotations.

    Idempotent: the same annotations give "unchanged". Returns "not_ready", "unchanged" or
    "computed". Agreed clusters become ground truth (source consensus)."""
    with transaction.atomic():
        Image.objects.select_for_update().filter(pk=image.pk).first()  # one computation per image at a time
        rows = annotation_rows([image.pk]).get(image.pk, [])
        if len(rows) < required_experts(image) and not force:
            return "not_ready"
        signature = _signature(rows, consensus_config().model_boxes)
        state = ConsensusState.objects.filter(image=image).first()
        if state is not None and state.signature == signature and not force:
            ConsensusState.objects.filter(pk=state.pk).update(computed_at=timezone.now())
            return "unchanged"
        built = _build_consensus(image.pk, rows, consensus_config(), _reliability_weights(image.dataset_id))
        _store_consensus({image.pk: built}, {image.pk: signature})
    return "computed"


def recompute_dataset(*, dataset: Dataset, force: bool = False, chunk: int = 2000, progress: Progress | None = None) -> dict:
    """Consensus for every image of ``dataset`` that has its N annotations, in bulk: two queries
    and a few bulk writes per chunk of images. Unchanged images are skipped unless ``force``."""
    config = consensus_config()
    weights = _reliability_weights(dataset.pk)
    extra = dict(Assignment.objects.filter(image__dataset=dataset, extra=True).values("image_id")
                 .annotate(n=Count("id")).values_list("image_id", "n"))
    counts = dict(ExpertAnnotation.objects.filter(image__dataset=dataset).values("image_id")
                  .annotate(n=Count("id")).values_list("image_id", "n"))
    ready = sorted(i for i, n in counts.items() if n >= dataset.experts_per_image + extra.get(i, 0))
    stats = {"images": len(ready), "computed": 0, "unchanged": 0,
             "not_ready": Image.objects.filter(dataset=dataset).count() - len(ready)}
    for start in range(0, len(ready), chunk):
        ids = ready[start:start + chunk]
        rows = annotation_rows(ids)
        old = dict(ConsensusState.objects.filter(image_id__in=ids).values_list("image_id", "signature"))
        signatures = {i: _signature(rows.get(i, []), config.model_boxes) for i in ids}
        todo = [i for i in ids if force or old.get(i) != signatures[i]]
        stats["unchanged"] += len(ids) - len(todo)
        built = {i: _build_consensus(i, rows.get(i, []), config, weights) for i in todo}
        with transaction.atomic():
            if todo:
                _store_consensus(built, {i: signatures[i] for i in todo})
        stats["computed"] += len(todo)
        if progress:
            progress(min(start + chunk, len(ready)), len(ready))
    return stats


def queue_consensus(image_id: int) -> None:
    """After commit: compute the image's consensus on a worker (kept and sent later if the
    broker is down; the periodic sweep catches up too)."""
    enqueue_on_commit("annotation.compute_consensus", image_id)


def consensus_sweep(*, limit: int = 500) -> dict:
    """Images with their N annotations whose consensus is missing or older than an annotation."""
    per_image = ExpertAnnotation.objects.filter(image=OuterRef("pk")).order_by().values("image")
    stale = (
        Image.objects.annotate(
            n=Coalesce(Subquery(per_image.annotate(c=Count("id")).values("c")), Value(0)),
            last=Subquery(per_image.annotate(m=Max("updated_at")).values("m")),
            computed=Subquery(ConsensusState.objects.filter(image=OuterRef("pk")).values("computed_at")),
        )
        .filter(n__gte=F("dataset__experts_per_image"))
        .filter(Q(computed__isnull=True) | Q(computed__lt=F("last")))
        .values_list("pk", flat=True)[:limit]
    )
    outcome: dict[str, int] = {}
    for image in Image.objects.filter(pk__in=list(stale)).select_related("dataset"):
        result = compute_consensus(image=image)
        outcome[result] = outcome.get(result, 0) + 1
    return outcome
