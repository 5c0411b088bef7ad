"""Home sections the annotation app owns (registered with cytoloop.home, found by name):
the pathologist's queue, the reviewer's riskiest disputes, and the admin's images by state,
disputes and import jobs. Each builder runs a fixed number of queries."""

from __future__ import annotations

from django.urls import reverse
from django.utils import timezone

from annotation import selectors
from annotation.image_states import STATES, state_counts
from annotation.models import Assignment, Cluster, ImportJob
from cytoloop.home import section
from cytoloop.roles import Role, has_role

#: disputes listed on a reviewer's home (the queue page has them all)
TOP_DISPUTES = 5
RUNNING_JOBS = 5


@section(key="queue", role=Role.PATHOLOGIST, template="home/queue.html", order=10)
def queue(request) -> dict:
    user = request.user
    progress = selectors.queue_progress(annotator=user)
    current = (
        Assignment.objects.filter(annotator=user, status=Assignment.Status.ACTIVE, expires_at__gte=timezone.now())
        .select_related("image", "image__dataset").first()
    )
    # what the queue page says too: the images still to do, the one held now included
    waiting = progress.get("waiting", progress["remaining"] + (1 if current else 0))
    total = progress["done"] + progress["skipped"] + waiting
    return {
        **progress,
        "waiting": waiting,
        "total": total,
        "percent": round(100 * progress["done"] / total) if total else 0,
        "current": current,
        "current_url": reverse("annotate:annotate", args=[current.image_id]) if current else "",
        "queue_url": reverse("annotate:queue"),
        "next_url": reverse("annotate:next"),
    }


def _votes(cluster) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for member in cluster.members:
        counts[member["label"]] = counts.get(member["label"], 0) + 1
    return sorted(counts.items(), key=lambda kv: -kv[1])


@section(key="disputes", role=Role.REVIEWER, template="home/disputes.html", order=10)
def disputes(request) -> dict:
    clusters = selectors.disputed_clusters(reviewer=request.user)
    top = list(selectors.order_disputes(clusters).select_related("image", "image__dataset")[:TOP_DISPUTES])
    return {
        "waiting": clusters.count(),
        "queue_url": reverse("review:disputes"),
        "top": [{"cluster": c, "votes": _votes(c), "url": reverse("review:cluster", args=[c.pk])} for c in top],
    }


@section(key="images", role=Role.ADMIN, template="home/images.html", order=10)
def images(request) -> dict:
    counts = state_counts()
    listing = reverse("lab:images")
    n_disputes = Cluster.objects.filter(status=Cluster.Status.DISPUTED).count()
    return {
        "states": [{"key": k, "text": text, "count": counts[k], "url": f"{listing}?state={k}"}
                   for k, text in STATES.items()],
        "total": sum(counts.values()),
        "all_url": listing,
        "disputes": n_disputes,
        # admins who are not reviewers cannot open the queue: the agreement dashboard counts them too
        "disputes_url": reverse("review:disputes") if has_role(request.user, Role.REVIEWER)
        else reverse("review:dashboard"),
    }


@section(key="imports", role=Role.ADMIN, template="home/imports.html", order=30)
def imports(request) -> dict:
    running = ImportJob.objects.filter(status__in=[ImportJob.Status.QUEUED, ImportJob.Status.RUNNING])
    jobs = list(running.select_related("dataset").order_by("-id")[:RUNNING_JOBS])
    return {
        "count": running.count(),
        "jobs": [{"job": j, "url": reverse("annotation:import_job", args=[j.pk])} for j in jobs],
        "list_url": reverse("annotation:import"),
    }
