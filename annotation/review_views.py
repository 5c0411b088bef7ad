"""Reviewer pages: the disputed-cluster queue, the review page, the agreement dashboard.

Views check the role, read through ``annotation.selectors``, write through one
``annotation.services`` call and render one template (its named partial for htmx requests).

Blind rule: the review page shows every expert's boxes of an image, which is allowed only once
the image's consensus exists (``Image.consensus_at``); clusters of other images answer 403.
Own images: a reviewer who annotated an image does not see its disputes in the queue (unless
REVIEWERS_MAY_RESOLVE_OWN_IMAGES); its review page opens read-only and says why.

A decision's POST is read by ``annotation.forms.ReviewDecisionForm``; the review page's overlay,
vote table and audit rows are built in ``annotation.review_figures``.
"""

from __future__ import annotations

import math
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.timesince import timesince
from django.views.decorators.http import require_GET, require_http_methods

from annotation import access, review_decisions, selectors, services
from annotation import review_figures as figures
from annotation.bethesda import BETHESDA, DESCRIPTIONS
from annotation.consensus import REASONS
from annotation.forms import ReviewDecisionForm
from cytoloop import charts
from cytoloop.roles import Role, role_required
from cytoloop.templatetags.cytoloop_dates import format_when

PAGE_SIZE = 25
SORTS = {"risk": "Riskiest first", "oldest": "Oldest first"}
REASON_TEXT = {
    "label_split": "label split",
    "too_few_experts": "too few experts",
    "weak_overlap": "weak overlap",
}
REASON_HELP = {
    "label_split": "the experts gave different grades and no grade has a majority",
    "too_few_experts": "fewer experts than the quorum drew this cluster",
    "weak_overlap": "the experts' boxes overlap poorly",
}


def _query(**params) -> str:
    kept = {k: v for k, v in params.items() if v not in ("", None, 1, "1")}
    return "?" + urlencode(kept) if kept else ""


def _age(moment) -> str:
    now = timezone.now()
    if (now - moment).total_seconds() < 60:
        return "just now"
    return timesince(moment, now, depth=1) + " ago"


def _member_labels(cluster) -> list[tuple[str, int]]:
    counts = {label: 0 for label in BETHESDA}
    for member in cluster.members:
        counts[member["label"]] += 1
    return [(label, n) for label, n in counts.items() if n]


# ---------------------------------------------------------------------------------------------
# The disputed queue


@role_required(Role.REVIEWER)
@require_GET
def disputes(request):
    reason = request.GET.get("reason", "")
    reason = reason if reason in REASONS else ""
    grade = request.GET.get("grade", "")
    grade = grade if grade in BETHESDA else ""
    sort = request.GET.get("sort", "risk")
    sort = sort if sort in SORTS else "risk"
    dataset = None
    if request.GET.get("dataset"):
        dataset = selectors.dataset_by_name(request.GET["dataset"]).first()
    dataset_name = dataset.name if dataset else ""

    clusters = selectors.disputed_clusters(reviewer=request.user, reason=reason, grade=grade, dataset=dataset)
    clusters = selectors.order_disputes(clusters, sort).select_related("image", "image__dataset")
    page = Paginator(clusters, PAGE_SIZE).get_page(request.GET.get("page"))
    for cluster in page.object_list:
        if not cluster.image.thumbnail:
            services.ensure_thumbnail(image=cluster.image)
    facets = selectors.dispute_facets(reviewer=request.user, reason=reason, grade=grade, dataset=dataset)

    base = reverse("review:disputes")
    state = {"reason": reason, "grade": grade, "dataset": dataset_name, "sort": sort if sort != "risk" else ""}

    def link(**change) -> str:
        return base + _query(**{**state, **change})

    reason_links = [{"value": "", "text": "Any reason", "count": None}] + [
        {"value": r, "text": REASON_TEXT[r], "count": facets["reason"][r], "title": REASON_HELP[r]} for r in REASONS
    ]
    grade_links = [{"value": "", "text": "Any grade", "count": None}] + [
        {"value": g, "text": g, "count": facets["grade"][g], "title": f"some expert called it {DESCRIPTIONS[g]}"}
        for g in BETHESDA
    ]
    dataset_links = [{"value": "", "text": "All datasets", "count": sum(n for _, n in facets["dataset"])}] + [
        {"value": name, "text": name, "count": n} for name, n in facets["dataset"]
    ]
    if dataset_name and dataset_name not in [name for name, _ in facets["dataset"]]:
        dataset_links.append({"value": dataset_name, "text": dataset_name, "count": 0})
    for links, key, current in ((reason_links, "reason", reason), (grade_links, "grade", grade),
                                (dataset_links, "dataset", dataset_name)):
        for item in links:
            item["url"] = link(**{key: item["value"], "page": ""})
            item["active"] = item["value"] == current
    sort_links = [{"value": s, "text": t, "url": link(sort=s if s != "risk" else "", page=""), "active": s == sort}
                  for s, t in SORTS.items()]

    rows = []
    for cluster in page.object_list:
        rows.append({
            "cluster": cluster,
            "image": cluster.image,
            "labels": _member_labels(cluster),
            "not_drawn": max(0, cluster.n_experts - cluster.n_experts_found),
            "reasons": [{"code": r, "text": REASON_TEXT.get(r, r), "title": REASON_HELP.get(r, "")}
                        for r in cluster.reasons],
            "age": _age(cluster.created_at),
            "url": reverse("review:cluster", args=[cluster.pk]),
        })
    context = {
        "rows": rows,
        "page": page,
        "pages": {
            "previous": link(page=page.previous_page_number()) if page.has_previous() else None,
            "next": link(page=page.next_page_number()) if page.has_next() else None,
        },
        "matching": page.paginator.count,
        "filtered": bool(reason or grade or dataset_name),
        "reason_links": reason_links,
        "grade_links": grade_links,
        "dataset_links": dataset_links,
        "sort_links": sort_links,
        "sort": sort,
        "hidden_own": facets["hidden_own"],
    }
    if request.htmx:
        return render(request, "review/disputes.html#queue", context)
    return render(request, "review/disputes.html", context)


# ---------------------------------------------------------------------------------------------
# The review page


def _facts(cluster) -> review_decisions.ClusterFacts:
    return review_decisions.ClusterFacts(
        pk=cluster.pk, status=cluster.status, label=cluster.label,
        votes=tuple(m["label"] for m in cluster.members), n_experts=cluster.n_experts, risk=cluster.risk,
        decided_by=cluster.resolved_by.get_username() if cluster.resolved_by else "",
        decided_at=format_when(cluster.resolved_at),
        stamp=cluster.resolved_at.isoformat() if cluster.resolved_at else "",
    )


class NeedsConfirmation(Exception):
    """The decision is refused until the reviewer confirms ``statement`` (posting ``token``)."""

    def __init__(self, statement: str, token: str):
        super().__init__(statement)
        self.statement, self.token = statement, token


def _review_context(request, cluster, *, error: str = "", values: dict | None = None,
                    confirm: dict | None = None) -> dict:
    changing = bool(confirm) or request.GET.get("change") == "1"
    image = cluster.image
    annotations = list(selectors.visible_annotations(request.user, image))
    annotations.sort(key=lambda a: a.annotator_id)
    experts, boxes = figures.expert_overlay(annotations, cluster)
    predictions = figures.model_opinions(cluster, selectors.image_predictions(image))
    font = max(image.width, image.height) / 55
    region = figures.close_up(cluster, image.width, image.height)
    pad = font * 0.35
    close_font = max(region["w"], region["h"]) / 38
    others = [c for c in selectors.image_clusters(image) if c.pk != cluster.pk]
    audit, history = figures.audit_rows(cluster, others)
    own_image = not settings.REVIEWERS_MAY_RESOLVE_OWN_IMAGES and selectors.reviewer_annotated(image, request.user)
    next_cluster = selectors.next_disputed_cluster(reviewer=request.user, exclude_pk=cluster.pk)
    just_decided = None
    previous = request.GET.get("from", "")
    if previous.isdigit() and int(previous) != cluster.pk:
        just_decided = selectors.cluster_for_review(int(previous)).first()
    from_preview = image.format == "TIFF" and services.ensure_thumbnail(image=image)
    box_values = values or {"x": f"{cluster.x:.1f}", "y": f"{cluster.y:.1f}",
                            "width": f"{cluster.width:.1f}", "height": f"{cluster.height:.1f}",
                            "label": cluster.label, "note": ""}
    return {
        "cluster": cluster,
        "image": image,
        "dataset": image.dataset,
        "image_url": image.thumbnail.url if from_preview else image.file.url,
        "from_preview": from_preview,
        "experts": experts,
        "full": figures.layer(boxes, predictions, cluster, font=font, width=image.width, height=image.height),
        "close": figures.layer(boxes, predictions, cluster, font=close_font, width=image.width, height=image.height),
        "highlight": {"x": max(0.0, cluster.x - pad), "y": max(0.0, cluster.y - pad),
                      "w": min(cluster.width + 2 * pad, image.width - max(0.0, cluster.x - pad)),
                      "h": min(cluster.height + 2 * pad, image.height - max(0.0, cluster.y - pad))},
        "region": region,
        "handle": max(region["w"], region["h"]) / 70,
        "predictions": predictions,
        "votes": figures.vote_rows(cluster),
        "not_drawn": [e for e in experts if e["label"] is None],
        "reasons": [{"code": r, "text": REASON_TEXT.get(r, r), "title": REASON_HELP.get(r, "")} for r in cluster.reasons],
        "audit": audit,
        "history": history,
        "decided": cluster.status in review_decisions.DECIDED,
        "changing": changing,
        "locked": own_image or (cluster.status in review_decisions.DECIDED and not changing),
        "confirm": confirm,
        "own_image": own_image,
        "pending_experts": list(selectors.pending_extra_experts(image)),
        "next_url": reverse("review:cluster", args=[next_cluster.pk]) if next_cluster else None,
        "just_decided": just_decided,
        "others": others,
        "classes": BETHESDA,
        "error": error,
        "values": box_values,
        "age": _age(cluster.created_at),
    }


def _confirmed(request, cluster, form: ReviewDecisionForm) -> None:
    """Raise NeedsConfirmation unless the posted decision needs none or was posted with the token
    of the statement it needs (see annotation.review_decisions). A reviewer who may not decide on
    this image is not asked: the service refuses them."""
    decision = form.decision()
    if decision is None:
        return
    if not settings.REVIEWERS_MAY_RESOLVE_OWN_IMAGES and selectors.reviewer_annotated(cluster.image, request.user):
        return
    facts = _facts(cluster)
    statement = review_decisions.confirmation(facts, decision)
    if statement is None:
        return
    expected = review_decisions.token(facts, decision)
    if form.cleaned_data["confirm"] != expected:
        raise NeedsConfirmation(statement, expected)


def _decide(request, cluster) -> str:
    """Run the one service the posted action asks for; returns what was done, in words.

    Raises ReviewRefused / AnnotationRejected (the services' refusals) or ValueError (a form
    that cannot be read: ReviewDecisionForm's message) without changing anything."""
    form = ReviewDecisionForm(request.POST, cluster=cluster)
    if not form.is_valid():
        raise ValueError(form.error_text())
    _confirmed(request, cluster, form)
    data = form.cleaned_data
    action, label, note, reviewer = data["action"], data["label"], data["note"], request.user
    if action == "label":
        services.resolve_cluster(cluster=cluster, reviewer=reviewer, label=label, comment=note)
        return f"resolved as {label}"
    if action == "box":
        services.resolve_cluster(cluster=cluster, reviewer=reviewer, label=label, box=data["box"], comment=note)
        return f"resolved with an adjusted box as {label}"
    if action == "reject":
        services.reject_cluster(cluster=cluster, reviewer=reviewer, comment=note)
        return "rejected (not a lesion)"
    if action == "expert":
        assignment = services.request_another_expert(image=cluster.image, reviewer=reviewer, comment=note,
                                                     cluster=cluster)
        return (f"sent to one more expert ({assignment.annotator.get_username()}), held for them until "
                f"{format_when(assignment.expires_at)}; after that any pathologist who has not annotated "
                "it may take it")
    services.comment_on_cluster(cluster=cluster, reviewer=reviewer, text=data["text"])  # "comment"
    return "commented"


def _confirm_verb(action: str, label: str, change: bool) -> str:
    if action == "reject":
        verb = "reject it as not a lesion"
    elif action == "box":
        verb = f"resolve it as {label} with this box"
    else:
        verb = f"decide {label}"
    return ("Yes, change the decision: " if change else "Yes, ") + verb


@role_required(Role.REVIEWER)
@require_http_methods(["GET", "POST"])
def cluster(request, pk: int):
    cluster = get_object_or_404(selectors.cluster_for_review(pk))
    view = access.image_view(request.user, cluster.image)
    if cluster.image.consensus_at is None or not view.consensus:
        return render(request, "review/cluster.html", {"denied": True, "cluster": cluster, "why": view.why},
                      status=403)
    if request.method == "GET":
        return render(request, "review/cluster.html", _review_context(request, cluster))

    was_decided = cluster.status in review_decisions.DECIDED
    try:
        done = _decide(request, cluster)
    except NeedsConfirmation as ask:
        fields = [(k, v) for k in ("action", "label", "x", "y", "width", "height", "note")
                  if (v := request.POST.get(k)) is not None]
        confirm = {"statement": ask.statement, "token": ask.token, "fields": fields,
                   "verb": _confirm_verb(request.POST.get("action", ""), request.POST.get("label", ""), was_decided)}
        context = _review_context(request, cluster, confirm=confirm)
        return render(request, "review/cluster.html", context, status=409)
    except (services.ReviewRefused, services.AnnotationRejected, ValueError) as exc:
        error = "; ".join(getattr(exc, "errors", None) or [str(exc)])
        values = None
        if request.POST.get("action") == "box":
            values = {k: request.POST.get(k, "") for k in ("x", "y", "width", "height", "label", "note")}
        context = _review_context(request, cluster, error=error, values=values)
        return render(request, "review/cluster.html", context, status=400)
    where = f"Cluster #{cluster.pk} on {cluster.image.original_name}"
    if request.POST.get("action") == "comment":
        messages.success(request, f"{where}: your comment is in the audit trail.")
        return redirect(reverse("review:cluster", args=[cluster.pk]) + "#audit")
    if was_decided:
        messages.success(request, f"{where}: decision changed, now {done}. The earlier one is in the audit trail.")
        return redirect(reverse("review:cluster", args=[cluster.pk]) + "#decision")
    following = selectors.next_disputed_cluster(reviewer=request.user, exclude_pk=cluster.pk)
    if following is None:
        messages.success(request, f"{where}: {done}. No disputed cluster is left for you.")
        return redirect("review:disputes")
    messages.success(request, f"{where}: {done}. Here is the riskiest dispute left.")
    return redirect(reverse("review:cluster", args=[following.pk]) + _query(**{"from": cluster.pk}))


# ---------------------------------------------------------------------------------------------
# The agreement dashboard


def _heatmap(confusion: list[list[int]]) -> dict:
    """A 6x6 confusion heatmap (rows: consensus, columns: the expert), each row shaded by the
    share of the consensus class the expert gave each label."""
    cell, left, top = 34, 62, 64
    cells = []
    for r, row in enumerate(confusion):
        total = sum(row)
        for c, count in enumerate(row):
            share = count / total if total else 0.0
            cells.append({
                "x": left + c * cell, "y": top + r * cell, "size": cell - 2,
                "opacity": round(0.08 + 0.92 * share, 3) if count else 0.0,
                "kind": "hit" if r == c else "miss",
                "count": count, "dark": share > 0.5,
                "tx": left + c * cell + (cell - 2) / 2, "ty": top + r * cell + (cell - 2) / 2 + 4,
                "title": f"consensus {BETHESDA[r]}, expert said {BETHESDA[c]}: {count}"
                         + (f" ({100 * share:.0f}% of {BETHESDA[r]})" if total else ""),
            })
    axis = [{"label": lab, "col_x": left + i * cell + (cell - 2) / 2 + 3, "col_y": top - 6,
             "row_x": left - 6, "row_y": top + i * cell + (cell - 2) / 2 + 4} for i, lab in enumerate(BETHESDA)]
    height = top + 6 * cell + 4
    return {"cells": cells, "axis": axis, "left": left, "top": top, "cell": cell,
            "width": left + 6 * cell + 4, "height": height, "row_title_y": height - 4}


def _line_plot(series: dict) -> dict | None:
    """Share of clusters agreed per day (or week): points and axes of an SVG line plot."""
    points = series["points"]
    if not points:
        return None
    frame = charts.Frame(width=760, height=240, left=52, right=16, top=14, bottom=42)
    n = len(points)
    out = []
    for i, p in enumerate(points):
        x, y = frame.x(i / (n - 1) if n > 1 else 0.5), frame.y(p["share"])
        label = p["start"].strftime("%d %b") if series["unit"] == "day" else "wk " + p["start"].strftime("%d %b")
        out.append({**p, "x": x, "y": y, "label": label, "percent": round(100 * p["share"]), "value_y": y - 10})
    every = max(1, math.ceil(n / 10))
    ticks = [{**t, "text": f"{round(100 * t['share'])}%"} for t in charts.y_ticks(frame, (0, 0.25, 0.5, 0.75, 1))]
    return {
        **frame.box(), "label_x": frame.left - 8, "xlabel_y": frame.top + frame.inner_h + 20, "points": out,
        "xlabels": [p for i, p in enumerate(out) if i % every == 0],
        "ticks": ticks, "path": charts.line_path((p["x"], p["y"]) for p in out),
        "unit": series["unit"], "show_values": n <= 16,
    }


def _kappa_class(value) -> str:
    if value is None:
        return "na"
    if value >= 0.8:
        return "high"
    if value >= 0.6:
        return "good"
    if value >= 0.4:
        return "fair"
    return "low"


def _dashboard_context(request, datasets) -> dict:
    chosen = request.POST.get("dataset") or request.GET.get("dataset", "")
    dataset = next((d for d in datasets if d.name == chosen), None)
    if dataset is None:
        dataset = next((d for d in datasets if d.cluster_count), datasets[0] if datasets else None)
    base = reverse("review:dashboard")
    links = [{"text": d.name, "value": d.name, "count": d.cluster_count, "url": base + _query(dataset=d.name),
              "active": dataset is not None and d.pk == dataset.pk} for d in datasets]
    context = {"dataset": dataset, "dataset_links": links, "stats": None}
    if dataset is None:
        return context
    stats = selectors.dataset_agreement(dataset)
    stored = selectors.stored_reliabilities(dataset)
    users = selectors.users_by_id(stats["experts"])
    experts = []
    for index, row in enumerate(stats["per_expert"], start=1):
        user = users.get(row["user_id"])
        saved = stored.get(row["user_id"])
        experts.append({
            **row,
            "index": index,
            "name": (user.get_full_name() or user.get_username()) if user else f"user {row['user_id']}",
            "stored": saved,
            "shown_reliability": saved.reliability if saved else row["reliability"],
            "agreement_percent": None if row["agreement"] is None else 100 * row["agreement"],
            "heatmap": _heatmap(row["confusion"]),
        })
    pairwise = []
    for i, a in enumerate(experts):
        cells = []
        for j, b in enumerate(experts):
            if i == j:
                cells.append({"self": True})
                continue
            found = stats["pairwise"].get((min(i, j), max(i, j)), {"kappa": None, "shared": 0})
            cells.append({**found, "tone": _kappa_class(found["kappa"]), "other": b["name"], "pair": f"{i}-{j}"})
        pairwise.append({"expert": a, "cells": cells})
    classes = selectors.class_cluster_stats(dataset)
    for row in classes:
        row["description"] = DESCRIPTIONS[row["label"]]
    over_time = selectors.agreement_over_time(dataset)
    total = sum(p["clusters"] for p in over_time["points"])
    agreed = sum(p["agreed"] for p in over_time["points"])
    # automation bias: how often each expert took the model's box as it was
    acceptance = selectors.model_box_acceptance(dataset)
    index_of = {e["user_id"]: e["index"] for e in experts}
    helped_users = selectors.users_by_id([r["user_id"] for r in acceptance])
    model_help = []
    for row in acceptance:
        user = helped_users.get(row["user_id"])
        model_help.append({
            **row, "index": index_of.get(row["user_id"]),
            "name": (user.get_full_name() or user.get_username()) if user else f"user {row['user_id']}",
            "accepted_percent": 100 * row["accepted"] / row["boxes"] if row["boxes"] else None,
            "offered": row["accepted"] + row["edited"],
        })
    context.update({
        "model_help": model_help,
        "model_help_any": any(r["offered"] for r in model_help),
        "stats": stats,
        "experts": experts,
        "pairwise": pairwise,
        "classes": classes,
        "plot": _line_plot(over_time),
        "over_time": over_time,
        "all_clusters": total,
        "agreed_share": agreed / total if total else None,
        "open_disputes": selectors.disputed_clusters(dataset=dataset).count(),
        "stored_at": max((e["stored"].computed_at for e in experts if e["stored"]), default=None),
        "missing_stored": sum(1 for e in experts if not e["stored"]),
        "fleiss_tone": _kappa_class(stats["fleiss"]),
        "alpha_tone": _kappa_class(stats["alpha"]),
    })
    return context


@role_required(Role.REVIEWER, Role.ADMIN)
@require_http_methods(["GET", "POST"])
def dashboard(request):
    datasets = list(selectors.datasets_with_clusters())
    if request.method == "POST":
        dataset = get_object_or_404(selectors.dataset_by_name(request.POST.get("dataset", "")))
        rows = services.update_reliability(dataset=dataset)
        if rows:
            messages.success(request, f"Reliability of {len(rows)} expert{'s' if len(rows) != 1 else ''} on "
                                      f"{dataset.name} recomputed (Dawid-Skene) and stored.")
        else:
            messages.info(request, f"{dataset.name} has no clusters yet: nothing to compute.")
        return redirect(reverse("review:dashboard") + _query(dataset=dataset.name))
    context = _dashboard_context(request, datasets)
    if request.htmx:
        return render(request, "review/dashboard.html#agreement", context)
    return render(request, "review/dashboard.html", context)
