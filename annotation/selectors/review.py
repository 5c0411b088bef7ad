"""Reads for review: disputed clusters, the review page and its statistics (reviewers; after
consensus).

Other experts' boxes are read here only for images whose consensus exists (the review page
refuses the others before calling anything below that returns members or expert boxes)."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Avg, Count, Exists, Max, Min, OuterRef, Q, QuerySet
from django.db.models.functions import TruncDate, TruncWeek
from django.utils import timezone

from annotation import access
from annotation.bethesda import BETHESDA
from annotation.consensus import REASONS
from annotation.models import (
    Assignment,
    AuditEntry,
    Cluster,
    Dataset,
    ExpertAnnotation,
    ExpertBox,
    ExpertReliability,
    Image,
)


def _reviewer_may_resolve_own() -> bool:
    return settings.REVIEWERS_MAY_RESOLVE_OWN_IMAGES


def _has_reason(reason: str) -> Q:
    """Cluster.reasons (a JSON list of at most three codes) holds ``reason``: an index lookup per
    position works on PostgreSQL and SQLite alike (JSON containment does not on SQLite)."""
    return Q(*[Q(**{f"reasons__{i}": reason}) for i in range(len(REASONS))], _connector=Q.OR)


def _voted(grade: str) -> Q:
    """Some expert gave ``grade`` to the cluster (its share of the vote is above 0)."""
    return Q(**{f"votes__{BETHESDA.index(grade)}__gt": 0})


def _own_images(reviewer) -> Exists:
    return Exists(ExpertAnnotation.objects.filter(image=OuterRef("image_id"), annotator=reviewer))


def _consensus_hidden_from(user) -> list[int]:
    """Images with disputes whose consensus ``user`` may not see now (annotation.access: a
    pending vote); none for a reviewer who sees everything (no query per image)."""
    if access.sees_everything(user):
        return []
    disputed = Image.objects.filter(pk__in=Cluster.objects.filter(status=Cluster.Status.DISPUTED).values("image_id"))
    return [pk for pk, view in access.image_views(user, disputed).items() if not view.consensus]


def disputed_clusters(*, reviewer=None, reason: str = "", grade: str = "", dataset: Dataset | None = None) -> QuerySet:
    """Disputed clusters, narrowed by a dispute reason, a grade some expert gave and a dataset.

    With ``reviewer``, clusters on images that reviewer annotated are left out unless
    REVIEWERS_MAY_RESOLVE_OWN_IMAGES (another reviewer must resolve those), and so are clusters
    whose consensus the access rule hides from them (they may still vote on the image)."""
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
    return Cluster.objects.filter(pk=pk).select_related("image", "image__dataset", "resolved_by")


def image_clusters(image: Image) -> QuerySet:
    return Cluster.objects.filter(image=image).order_by("id")


def reviewer_annotated(image: Image, reviewer) -> bool:
    return ExpertAnnotation.objects.filter(image=image, annotator=reviewer).exists()


def image_audit(image_id: int) -> QuerySet:
    """Every audit entry of an image, newest first. The review page shows each on its own
    object: the cluster whose id it was written with (while that cluster existed), else the
    image's history (annotation.review_figures.audit_rows)."""
    return AuditEntry.objects.filter(image_id=image_id).select_related("actor").order_by("-created_at", "-id")


def pending_extra_experts(image: Image) -> QuerySet:
    """Extra experts a reviewer asked for who have not submitted yet and whose hold has not lapsed."""
    return Assignment.objects.filter(image=image, extra=True, status=Assignment.Status.ACTIVE,
                                     expires_at__gte=timezone.now()).select_related("annotator")


def users_by_id(ids) -> dict:
    return {u.pk: u for u in get_user_model().objects.filter(pk__in=list(ids))}


def datasets_with_clusters() -> QuerySet[Dataset]:
    """Every dataset with ``cluster_count`` (ordered by name)."""
    return Dataset.objects.annotate(cluster_count=Count("images__clusters", distinct=True)).order_by("name")


def stored_reliabilities(dataset: Dataset) -> dict:
    """{user id: ExpertReliability} stored for the dataset (services.update_reliability)."""
    return {r.user_id: r for r in ExpertReliability.objects.filter(dataset=dataset)}


def model_box_acceptance(dataset: Dataset) -> list[dict]:
    """Per expert who saved boxes on the dataset: boxes in all, model pre-annotations accepted
    unchanged and model boxes they edited (ExpertBox.prediction_model / prediction_changed),
    ordered by user id: [{user_id, boxes, accepted, edited}]."""
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
