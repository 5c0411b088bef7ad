"""Reads for the dataset pages: small functions returning QuerySets or plain dicts.

Nothing here decides who sees what: annotation.access does (the readers of ground truth take a
``shown`` queryset of the images whose ground truth the user may see; expert annotations are read
through access as well).
"""

from __future__ import annotations

from collections import Counter, defaultdict

from django.db.models import Count, Exists, OuterRef, Q, QuerySet

from annotation.bethesda import BETHESDA
from annotation.models import Dataset, GroundTruthBox, Image, ImportJob, PredictionBox
from annotation.validation import REASONS

SPLITS: tuple[str, ...] = tuple(Image.Split.values)


def datasets_with_counts() -> QuerySet[Dataset]:
    """Every dataset with ``image_count`` (ordered by name)."""
    return Dataset.objects.annotate(image_count=Count("images", distinct=True)).order_by("name")


def ground_truth_label_counts(dataset_ids, *, shown: QuerySet[Image] | None = None) -> dict[int, dict[str, int]]:
    """{dataset id: {label: ground-truth box count}} with every Bethesda label present (0 if none),
    counting only the images in ``shown`` when given (those whose ground truth the user may see)."""
    counts: dict[int, dict[str, int]] = {pk: dict.fromkeys(BETHESDA, 0) for pk in dataset_ids}
    boxes = GroundTruthBox.objects.filter(image__dataset_id__in=list(counts))
    if shown is not None:
        boxes = boxes.filter(image__in=shown)
    rows = (
        boxes
        .values_list("image__dataset_id", "label")
        .annotate(n=Count("id"))
        .order_by()
    )
    for dataset_id, label, n in rows:
        counts[dataset_id][label] = n
    return counts


def dataset_by_name(name: str) -> QuerySet[Dataset]:
    return Dataset.objects.filter(name=name)


def _with_label(images: QuerySet[Image], label: str, shown: QuerySet[Image] | None = None) -> QuerySet[Image]:
    images = images.filter(
        Exists(GroundTruthBox.objects.filter(image=OuterRef("pk"), label=label))
    )
    return images if shown is None else images.filter(pk__in=shown.values("pk"))


def dataset_images(dataset: Dataset, *, split: str = "", label: str = "",
                   shown: QuerySet[Image] | None = None) -> QuerySet[Image]:
    """The dataset's images in page order, narrowed to one split and/or to images holding at
    least one ground-truth box of ``label`` (unknown values are ignored by the caller); the label
    filter looks only at the ground truth of the images in ``shown`` when given."""
    images = Image.objects.filter(dataset=dataset)
    if split:
        images = images.filter(split=split)
    if label:
        images = _with_label(images, label, shown)
    return images.order_by("original_name", "id")


def split_counts(dataset: Dataset, *, label: str = "", shown: QuerySet[Image] | None = None) -> dict[str, int]:
    """{split: image count} for every split (0 if none), within the label filter if any."""
    images = Image.objects.filter(dataset=dataset)
    if label:
        images = _with_label(images, label, shown)
    counts = dict.fromkeys(SPLITS, 0)
    for split, n in images.values_list("split").annotate(n=Count("id")).order_by():
        counts[split] = n
    return counts


def label_image_counts(dataset: Dataset, *, split: str = "", shown: QuerySet[Image] | None = None) -> dict[str, int]:
    """{label: number of images with at least one ground-truth box of it}, within the split filter
    (and among the images in ``shown`` when given)."""
    boxes = GroundTruthBox.objects.filter(image__dataset=dataset)
    if shown is not None:
        boxes = boxes.filter(image__in=shown)
    if split:
        boxes = boxes.filter(image__split=split)
    counts = dict.fromkeys(BETHESDA, 0)
    rows = boxes.values_list("label").annotate(n=Count("image_id", distinct=True)).order_by()
    for label, n in rows:
        counts[label] = n
    return counts


def ground_truth_labels_by_image(image_ids) -> dict[int, list[tuple[str, int]]]:
    """{image id: [(label, count), ...] in Bethesda order} for the given images."""
    found: dict[int, Counter] = defaultdict(Counter)
    rows = (
        GroundTruthBox.objects.filter(image_id__in=list(image_ids))
        .values_list("image_id", "label")
        .annotate(n=Count("id"))
        .order_by()
    )
    for image_id, label, n in rows:
        found[image_id][label] = n
    return {
        image_id: [(label, counter[label]) for label in BETHESDA if counter[label]]
        for image_id, counter in found.items()
    }


def image_in_dataset(dataset: Dataset, pk: int) -> QuerySet[Image]:
    return Image.objects.filter(dataset=dataset, pk=pk).select_related("dataset")


def neighbours(images: QuerySet[Image], image: Image) -> tuple[Image | None, Image | None]:
    """The images before and after ``image`` in ``images`` (ordered by original name, id)."""
    name, pk = image.original_name, image.pk
    before = (
        images.filter(Q(original_name__lt=name) | Q(original_name=name, id__lt=pk))
        .order_by("-original_name", "-id")
        .only("id")
        .first()
    )
    after = (
        images.filter(Q(original_name__gt=name) | Q(original_name=name, id__gt=pk))
        .order_by("original_name", "id")
        .only("id")
        .first()
    )
    return before, after


def position_in(images: QuerySet[Image], image: Image) -> int:
    """1-based position of ``image`` in ``images``."""
    name = image.original_name
    return images.filter(Q(original_name__lt=name) | Q(original_name=name, id__lt=image.pk)).count() + 1


def image_predictions(image: Image) -> QuerySet[PredictionBox]:
    """Every model box of the image, unguarded: for pages only reviewers reach after consensus
    (the review page); anything else reads them through annotation.access.predictions."""
    return PredictionBox.objects.filter(image=image).order_by("-score", "id")


def import_job(pk: int) -> QuerySet[ImportJob]:
    return ImportJob.objects.filter(pk=pk).select_related("dataset", "created_by")


def recent_import_jobs(limit: int = 8) -> QuerySet[ImportJob]:
    return ImportJob.objects.select_related("dataset").order_by("-created_at")[:limit]


def dataset_names() -> list[str]:
    return list(Dataset.objects.order_by("name").values_list("name", flat=True))


def skipped_by_reason(job: ImportJob) -> list[dict]:
    """[{reason, label, count}] for a job's skipped files, most frequent first (refused boxes,
    reason "box", are not files and are left out)."""
    counts = Counter(
        entry.get("reason", "error") for entry in (job.skipped or []) if entry.get("reason") != "box"
    )
    labels = {**REASONS, "error": "could not be stored"}
    return [
        {"reason": reason, "label": labels.get(reason, reason), "count": n}
        for reason, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    ]


# --- blind annotation: the only reads of expert annotations -------------------------------------


def own_annotations(user) -> QuerySet:
    from annotation.models import ExpertAnnotation

    return (
        ExpertAnnotation.objects.filter(annotator=user)
        .select_related("annotator").prefetch_related("boxes").order_by("-updated_at")
    )


def visible_annotations(user, image: Image) -> QuerySet:
    """The expert annotations of ``image`` that ``user`` may see now (annotation.access: only
    their own while they have a pending vote or before consensus; every expert's after)."""
    from annotation import access

    return access.annotations(user, access.image_view(user, image), image)


# --- review: disputed clusters, the review page and agreement (reviewers; after consensus) -------
#
# Other experts' boxes are read here only for images whose consensus exists (the review page
# refuses the others before calling anything below that returns members or expert boxes).


def _reviewer_may_resolve_own() -> bool:
    from django.conf import settings

    return settings.REVIEWERS_MAY_RESOLVE_OWN_IMAGES


def _has_reason(reason: str) -> Q:
    """Cluster.reasons (a JSON list of at most three codes) holds ``reason``: an index lookup per
    position works on PostgreSQL and SQLite alike (JSON containment does not on SQLite)."""
    from annotation.consensus import REASONS

    return Q(*[Q(**{f"reasons__{i}": reason}) for i in range(len(REASONS))], _connector=Q.OR)


def _voted(grade: str) -> Q:
    """Some expert gave ``grade`` to the cluster (its share of the vote is above 0)."""
    return Q(**{f"votes__{BETHESDA.index(grade)}__gt": 0})


def _own_images(reviewer) -> Exists:
    from annotation.models import ExpertAnnotation

    return Exists(ExpertAnnotation.objects.filter(image=OuterRef("image_id"), annotator=reviewer))


def _consensus_hidden_from(user) -> list[int]:
    """Images with disputes whose consensus ``user`` may not see now (annotation.access: a
    pending vote); none for a reviewer who sees everything (no query per image)."""
    from annotation import access
    from annotation.models import Cluster

    if access.sees_everything(user):
        return []
    disputed = Image.objects.filter(pk__in=Cluster.objects.filter(status=Cluster.Status.DISPUTED).values("image_id"))
    return [pk for pk, view in access.image_views(user, disputed).items() if not view.consensus]


def disputed_clusters(*, reviewer=None, reason: str = "", grade: str = "", dataset: Dataset | None = None) -> QuerySet:
    """Disputed clusters, narrowed by a dispute reason, a grade some expert gave and a dataset.

    With ``reviewer``, clusters on images that reviewer annotated are left out unless
    REVIEWERS_MAY_RESOLVE_OWN_IMAGES (another reviewer must resolve those), and so are clusters
    whose consensus the access rule hides from them (they may still vote on the image)."""
    from annotation.models import Cluster

    clusters = Cluster.objects.filter(status=Cluster.Status.DISPUTED)
    if reviewer is not None and not _reviewer_may_resolve_own():
        clusters = clusters.exclude(_own_images(reviewer))
    if reviewer is not None:
        hidden = _consensus_hidden_from(reviewer)
        if hidden:
            clusters = clusters.exclude(image_id__in=hidden)
    if reason:
        clusters = clusters.filter(_has_reason(reason))
    if grade:
        clusters = clusters.filter(_voted(grade))
    if dataset is not None:
        clusters = clusters.filter(image__dataset=dataset)
    return clusters


def order_disputes(clusters: QuerySet, sort: str = "risk") -> QuerySet:
    """``risk``: riskiest first, then oldest; ``oldest``: oldest first."""
    if sort == "oldest":
        return clusters.order_by("created_at", "id")
    return clusters.order_by("-risk", "created_at", "id")


def dispute_facets(*, reviewer=None, reason: str = "", grade: str = "", dataset: Dataset | None = None) -> dict:
    """Chip counts: each facet counted within the other two filters.

    {"reason": {code: n}, "grade": {label: n}, "dataset": [(name, n), ...], "hidden_own": n}"""
    from django.db.models import Count

    from annotation.consensus import REASONS
    from annotation.models import Cluster

    by_reason = disputed_clusters(reviewer=reviewer, grade=grade, dataset=dataset).aggregate(
        **{r: Count("id", filter=_has_reason(r)) for r in REASONS}
    )
    by_grade = disputed_clusters(reviewer=reviewer, reason=reason, dataset=dataset).aggregate(
        **{g: Count("id", filter=_voted(g)) for g in BETHESDA}
    )
    by_dataset = (
        disputed_clusters(reviewer=reviewer, reason=reason, grade=grade)
        .values_list("image__dataset__name").annotate(n=Count("id")).order_by("image__dataset__name")
    )
    hidden = 0
    if reviewer is not None and not _reviewer_may_resolve_own():
        hidden = Cluster.objects.filter(status=Cluster.Status.DISPUTED).filter(_own_images(reviewer)).count()
    return {"reason": by_reason, "grade": by_grade, "dataset": list(by_dataset), "hidden_own": hidden}


def next_disputed_cluster(*, reviewer, exclude_pk: int | None = None):
    """The riskiest disputed cluster this reviewer may resolve (other than ``exclude_pk``), or None."""
    clusters = disputed_clusters(reviewer=reviewer)
    if exclude_pk is not None:
        clusters = clusters.exclude(pk=exclude_pk)
    return order_disputes(clusters).only("id").first()


def cluster_for_review(pk: int) -> QuerySet:
    from annotation.models import Cluster

    return Cluster.objects.filter(pk=pk).select_related("image", "image__dataset", "resolved_by")


def image_clusters(image: Image) -> QuerySet:
    from annotation.models import Cluster

    return Cluster.objects.filter(image=image).order_by("id")


def reviewer_annotated(image: Image, reviewer) -> bool:
    from annotation.models import ExpertAnnotation

    return ExpertAnnotation.objects.filter(image=image, annotator=reviewer).exists()


def image_audit(image_id: int) -> QuerySet:
    """Every audit entry of an image, newest first. The review page shows each on its own
    object: the cluster whose id it was written with (while that cluster existed), else the
    image's history (annotation.review_views._audit_rows)."""
    from annotation.models import AuditEntry

    return AuditEntry.objects.filter(image_id=image_id).select_related("actor").order_by("-created_at", "-id")


def pending_extra_experts(image: Image) -> QuerySet:
    """Extra experts a reviewer asked for who have not submitted yet and whose hold has not lapsed."""
    from django.utils import timezone

    from annotation.models import Assignment

    return Assignment.objects.filter(image=image, extra=True, status=Assignment.Status.ACTIVE,
                                     expires_at__gte=timezone.now()).select_related("annotator")


def users_by_id(ids) -> dict:
    from django.contrib.auth import get_user_model

    return {u.pk: u for u in get_user_model().objects.filter(pk__in=list(ids))}


def datasets_with_clusters() -> QuerySet[Dataset]:
    """Every dataset with ``cluster_count`` (ordered by name)."""
    return Dataset.objects.annotate(cluster_count=Count("images__clusters", distinct=True)).order_by("name")


def stored_reliabilities(dataset: Dataset) -> dict:
    """{user id: ExpertReliability} stored for the dataset (services.update_reliability)."""
    from annotation.models import ExpertReliability

    return {r.user_id: r for r in ExpertReliability.objects.filter(dataset=dataset)}


def model_box_acceptance(dataset: Dataset) -> list[dict]:
    """Per expert who saved boxes on the dataset: boxes in all, model pre-annotations accepted
    unchanged and model boxes they edited (ExpertBox.prediction_model / prediction_changed),
    ordered by user id: [{user_id, boxes, accepted, edited}]."""
    from annotation.models import ExpertBox

    rows = (
        ExpertBox.objects.filter(annotation__image__dataset=dataset).order_by().values("annotation__annotator")
        .annotate(boxes=Count("id"),
                  accepted=Count("id", filter=~Q(prediction_model="") & Q(prediction_changed=False)),
                  edited=Count("id", filter=~Q(prediction_model="") & Q(prediction_changed=True)))
        .order_by("annotation__annotator")
    )
    return [{"user_id": r["annotation__annotator"], "boxes": r["boxes"], "accepted": r["accepted"],
             "edited": r["edited"]} for r in rows]


def class_cluster_stats(dataset: Dataset) -> list[dict]:
    """Per Bethesda class (the cluster's current label), over the dataset's non-rejected clusters:
    clusters, how many went to a reviewer (disputed or resolved), mean vote share of the winner."""
    from django.db.models import Avg

    from annotation.models import Cluster

    rows = {
        label: (n, reviewed, share)
        for label, n, reviewed, share in Cluster.objects.filter(image__dataset=dataset)
        .exclude(status=Cluster.Status.REJECTED).values_list("label")
        .annotate(
            n=Count("id"),
            reviewed=Count("id", filter=Q(status__in=[Cluster.Status.DISPUTED, Cluster.Status.RESOLVED])),
            share=Avg("vote_share"),
        ).order_by()
    }
    out = []
    for label in BETHESDA:
        n, reviewed, share = rows.get(label, (0, 0, None))
        out.append({"label": label, "clusters": n, "reviewed": reviewed,
                    "reviewed_share": reviewed / n if n else None, "mean_vote_share": share})
    return out


def agreement_over_time(dataset: Dataset) -> dict:
    """Share of the dataset's clusters agreed by consensus (not sent to a reviewer), per day on
    which their image first reached consensus (Image.consensus_at, which a recompute does not
    move, unlike the clusters' own rows), or per week when that spans more than 60 days.

    {"unit": "day" | "week", "points": [{"start": date, "clusters": n, "agreed": k, "share": k / n}]}"""
    from django.db.models import Max, Min
    from django.db.models.functions import TruncDate, TruncWeek

    from annotation.models import Cluster

    clusters = Cluster.objects.filter(image__dataset=dataset, image__consensus_at__isnull=False)
    span = clusters.aggregate(first=Min("image__consensus_at"), last=Max("image__consensus_at"))
    if span["first"] is None:
        return {"unit": "day", "points": []}
    unit = "week" if (span["last"] - span["first"]).days > 60 else "day"
    trunc = TruncWeek("image__consensus_at") if unit == "week" else TruncDate("image__consensus_at")
    rows = (
        clusters.annotate(bucket=trunc).values_list("bucket")
        .annotate(n=Count("id"), agreed=Count("id", filter=Q(status=Cluster.Status.AGREED)))
        .order_by("bucket")
    )
    points = []
    for bucket, n, agreed in rows:
        start = bucket.date() if hasattr(bucket, "date") else bucket
        points.append({"start": start, "clusters": n, "agreed": agreed, "share": agreed / n})
    return {"unit": unit, "points": points}


def dataset_agreement(dataset: Dataset) -> dict:
    """Every agreement statistic of the dataset's stored clusters (annotation.agreement on
    services.cluster_label_matrix; rejected clusters left out).

    experts: user ids (column order); per_expert: agreement with consensus, clusters labelled,
    confusion against consensus (rows consensus, columns the expert), Dawid-Skene reliability
    (None when it cannot be estimated); fleiss: kappa over the clusters every one of the
    dataset's N experts drew (None when undefined) and how many; alpha: Krippendorff's ordinal
    alpha (None when undefined); pairwise: {(i, j): quadratic-weighted Cohen's kappa, shared}."""
    import math

    import numpy as np

    from annotation import agreement
    from annotation.services import cluster_label_matrix

    labels, consensus, experts, _ = cluster_label_matrix(dataset)
    out = {"experts": experts, "n_clusters": int(len(labels)), "per_expert": [],
           "fleiss": None, "fleiss_items": 0, "n_required": dataset.experts_per_image,
           "alpha": None, "pairwise": {}}
    if not experts or len(labels) == 0:
        return out

    def finite(value):
        value = float(value)
        return value if math.isfinite(value) else None

    agree = agreement.agreement_with_consensus(labels, consensus)
    try:
        ds_reliability = agreement.dawid_skene(labels).reliability
    except ValueError:
        ds_reliability = np.full(len(experts), np.nan)
    for j, user_id in enumerate(experts):
        out["per_expert"].append({
            "user_id": user_id,
            "agreement": finite(agree[j]),
            "n_clusters": int((labels[:, j] >= 0).sum()),
            "confusion": agreement.confusion_against(labels[:, j], consensus).tolist(),
            "reliability": finite(ds_reliability[j]),
        })
    drawn = (labels >= 0).sum(axis=1)
    full = labels[drawn == dataset.experts_per_image]
    out["fleiss_items"] = int(len(full))
    if len(full) and dataset.experts_per_image >= 2:
        out["fleiss"] = finite(agreement.fleiss_kappa(agreement.category_counts(full)))
    try:
        out["alpha"] = finite(agreement.krippendorff_alpha(
            agreement.reliability_data(labels), "ordinal", n_categories=len(BETHESDA)))
    except ValueError:
        out["alpha"] = None
    kappas = agreement.pairwise_cohen(labels, weights="quadratic")
    for (i, j), kappa in kappas.items():
        shared = int(((labels[:, i] >= 0) & (labels[:, j] >= 0)).sum())
        out["pairwise"][(i, j)] = {"kappa": finite(kappa), "shared": shared}
    return out
