"""Agreement statistics on a dataset's stored clusters (rejected clusters left out)."""

from __future__ import annotations

import math

import numpy as np

from annotation import agreement
from annotation.bethesda import BETHESDA
from annotation.models import Cluster, Dataset


def cluster_label_matrix(dataset: Dataset):
    """Items (non-rejected clusters) x experts label matrix (-1 = the expert did not draw it, or
    only accepted the model's box there),
    the consensus label of each cluster, and the experts' user ids (column order)."""
    clusters = list(
        Cluster.objects.filter(image__dataset=dataset).exclude(status=Cluster.Status.REJECTED)
        .values_list("members", "label", "created_at", "status")
    )
    # a model box an expert accepted unchanged is the model's vote, not the expert's: left out
    # of the expert's agreement (as if not labelled by them)
    experts = sorted({m["expert"] for members, *_ in clusters for m in members if not m.get("model_vote")})
    column = {e: j for j, e in enumerate(experts)}
    labels = np.full((len(clusters), len(experts)), -1, dtype=np.int64)
    consensus = np.full(len(clusters), -1, dtype=np.int64)
    for i, (members, label, _, _) in enumerate(clusters):
        for m in members:
            if not m.get("model_vote"):
                labels[i, column[m["expert"]]] = BETHESDA.index(m["label"])
        consensus[i] = BETHESDA.index(label)
    return labels, consensus, experts, clusters


def dataset_agreement(dataset: Dataset) -> dict:
    """Every agreement statistic of the dataset's stored clusters (annotation.agreement on
    cluster_label_matrix; rejected clusters left out).

    experts: user ids (column order); per_expert: agreement with consensus, clusters labelled,
    confusion against consensus (rows consensus, columns the expert), Dawid-Skene reliability
    (None when it cannot be estimated); fleiss: kappa over the clusters every one of the
    dataset's N experts drew (None when undefined) and how many; alpha: Krippendorff's ordinal
    alpha (None when undefined); pairwise: {(i, j): quadratic-weighted Cohen's kappa, shared}."""
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
