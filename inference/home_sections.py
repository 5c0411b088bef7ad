"""Home sections the inference app owns (cytoloop.home): prediction jobs queued or running,
and the current ranking round of each dataset. A fixed number of queries."""

from __future__ import annotations

from django.urls import reverse

from cytoloop.home import section
from cytoloop.roles import Role
from inference.models import PredictionJob, RankingRound

RUNNING = 5


@section(key="inference", role=Role.ADMIN, template="home/inference.html", order=40)
def inference(request) -> dict:
    active = PredictionJob.objects.filter(status__in=[PredictionJob.Status.QUEUED, PredictionJob.Status.RUNNING])
    jobs = list(active.select_related("dataset").order_by("-created_at", "-id")[:RUNNING])
    rounds = list(RankingRound.objects.filter(active=True).select_related("dataset").order_by("-created_at", "-id")[:RUNNING])
    return {
        "count": active.count(),
        "jobs": jobs,
        "jobs_url": reverse("inference:index") + "#jobs",
        "rounds": [{"round": r, "url": reverse("inference:round", args=[r.pk])} for r in rounds],
        "rounds_url": reverse("inference:rounds"),
    }
