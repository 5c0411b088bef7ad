"""Expert reliability on a dataset's stored clusters (consensus may weight by it)."""

from __future__ import annotations

from django.db import transaction

from annotation.agreement import agreement_with_consensus, confusion_against, dawid_skene
from annotation.models import Dataset, ExpertReliability
from annotation.selectors import cluster_label_matrix


def update_reliability(*, dataset: Dataset) -> list:
    """Each expert's agreement with consensus, confusion against it, and Dawid-Skene reliability
    on this dataset's clusters (stored; consensus may weight by it)."""
    labels, consensus, experts, _ = cluster_label_matrix(dataset)
    if not experts or len(labels) == 0:
        return []
    ds = dawid_skene(labels)
    agree = agreement_with_consensus(labels, consensus)
    rows = []
    with transaction.atomic():
        for j, user_id in enumerate(experts):
            confusion = confusion_against(labels[:, j], consensus).tolist()
            row, _ = ExpertReliability.objects.update_or_create(
                dataset=dataset, user_id=user_id,
                defaults={"reliability": float(ds.reliability[j]) if ds.reliability[j] == ds.reliability[j] else 0.0,
                          "agreement": float(agree[j]) if agree[j] == agree[j] else 0.0,
                          "n_clusters": int((labels[:, j] >= 0).sum()), "confusion": confusion},
            )
            rows.append(row)
    return rows
