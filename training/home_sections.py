"""Home sections the training app owns (cytoloop.home): training runs queued or running, and
the promoted model versions. A fixed number of queries."""

from __future__ import annotations

from django.urls import reverse

from cytoloop.home import section
from cytoloop.roles import Role
from training.models import TrainingRun
from training.selectors import promoted_versions

RUNNING = 5


@section(key="training", role=Role.ADMIN, template="home/training.html", order=20)
def training(request) -> dict:
    active = TrainingRun.objects.filter(status__in=[TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING])
    runs = list(active.order_by("-created_at", "-id")[:RUNNING])
    promoted = list(promoted_versions().values())
    return {
        "count": active.count(),
        "runs": [{"run": r, "url": reverse("training:run", args=[r.pk])} for r in runs],
        "runs_url": reverse("training:runs"),
        "promoted": [{"version": v, "url": reverse("training:model", args=[v.pk])} for v in promoted],
        "models_url": reverse("training:models"),
    }
