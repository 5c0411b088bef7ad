"""Reviewer pages: the disputed-cluster queue, the review page, the agreement dashboard.

Views check the role, read through ``annotation.selectors``, write through one
``annotation.services`` call and render one template (its named partial for htmx requests).

Blind rule: the review page shows every expert's boxes of an image, which is allowed only once
the image's consensus exists (``Image.consensus_at``); clusters of other images answer 403.
Own images: a reviewer who annotated an image does not see its disputes in the queue (unless
REVIEWERS_MAY_RESOLVE_OWN_IMAGES); its review page opens read-only and says why.
"""

from __future__ import annotations

import math
from datetime import datetime
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
from annotation.bethesda import BETHESDA, DESCRIPTIONS
from annotation.consensus import REASONS
from annotation.geometry import Box, iou
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
#: Experts' colours on the overlay: bright on a stained smear, distinct from one another.
EXPERT_COLOURS = ("#22d3ee", "#facc15", "#f472b6", "#a3e635", "#60a5fa", "#fb923c", "#c084fc", "#f8fafc")
#: A model prediction is the model's opinion on a cluster when it overlaps it by this IoU.
MODEL_IOU = 0.3


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


def _tag(x: float, y: float, w: float, h: float, text: str, font: float, width: int, height: int,
         below: bool = False) -> dict:
    """A label tag for a box, in image pixels: above the box (inside when no room), or below."""
    tag_h = font * 1.4
    tag_w = font * (0.62 * len(text) + 0.9)
    if below:
        bottom = y + h
        tag_y = bottom if bottom + tag_h <= height else bottom - tag_h
    else:
        tag_y = y - tag_h if y >= tag_h else y
    tag_x = min(max(0.0, x), max(0.0, width - tag_w))
    return {"tag_x": tag_x, "tag_y": tag_y, "tag_w": tag_w, "tag_h": tag_h,
            "text_x": tag_x + font * 0.45, "text_y": tag_y + tag_h * 0.74}


def _layer(expert_boxes: list[dict], predictions: list[dict], cluster, *, font: float, width: int, height: int) -> dict:
    """Boxes with their tags for one view. The cluster's members are tagged side by side in a
    row above the cluster (one expert's tag never hides another's); boxes outside the cluster
    carry no tag (their label is in their tooltip); model predictions are tagged below."""
    members = [b for b in expert_boxes if b["member"]]
    widths = [font * (0.62 * len(b["text"]) + 0.9) for b in members]
    gap = font * 0.3
    row = sum(widths) + gap * max(0, len(widths) - 1)
    x = min(cluster.x, max(0.0, width - row))
    boxes = []
    for b in expert_boxes:
        if b["member"]:
            tag = _tag(x, cluster.y, cluster.width, cluster.height, b["text"], font, width, height)
            x += tag["tag_w"] + gap
            boxes.append({**b, **tag, "tagged": True})
        else:
            boxes.append({**b, "tagged": False})
    return {
        "font": font,
        "boxes": boxes,
        "preds": [{**p, **_tag(p["x"], p["y"], p["w"], p["h"], p["text"], font, width, height, below=True)}
                  for p in predictions],
    }


def _close_up(cluster, width: int, height: int) -> dict:
    """A region around the cluster, with the image's aspect ratio, at least 3x the cluster."""
    aspect = width / height
    region_w = max(cluster.width * 3.0, cluster.height * 3.0 * aspect, width * 0.18)
    region_w = min(region_w, float(width))
    region_h = min(region_w / aspect, float(height))
    cx, cy = cluster.x + cluster.width / 2, cluster.y + cluster.height / 2
    x = min(max(0.0, cx - region_w / 2), width - region_w)
    y = min(max(0.0, cy - region_h / 2), height - region_h)
    return {"x": x, "y": y, "w": region_w, "h": region_h}


def _change(entry) -> list[str]:
    """Before -> after of an audit entry, in words."""
    before, after = entry.before or {}, entry.after or {}
    parts = []
    if "assigned_to" in after:
        held = ""
        if after.get("held_until"):
            held = f", held for them until {format_when(datetime.fromisoformat(after['held_until']))}"
        parts.append(f"assigned to {after['assigned_to']}{held}")
    if before.get("status") != after.get("status") and after.get("status"):
        parts.append(f"{before.get('status', '—')} → {after['status']}")
    if before.get("label") != after.get("label") and after.get("label"):
        parts.append(f"{before.get('label', '—')} → {after['label']}")
    box_keys = ("x", "y", "width", "height")
    if all(k in before and k in after for k in box_keys) and any(before[k] != after[k] for k in box_keys):
        def text(d):
            return f"({d['x']:.0f}, {d['y']:.0f}) {d['width']:.0f}×{d['height']:.0f}"
        parts.append(f"box {text(before)} → {text(after)}")
    return parts


def _audit_rows(cluster, others) -> tuple[list[dict], list[dict]]:
    """The image's audit entries split by the object each was written about: this cluster's own
    (written with its id, while it existed), and the rest of the image's history, each labelled
    with its object (another cluster, the image, or a cluster since replaced by a recomputed
    consensus, whose id no current cluster carries)."""
    current = {c.pk: c for c in others}
    own, history = [], []
    for entry in selectors.image_audit(cluster.image_id):
        row = {"entry": entry, "change": _change(entry)}
        if entry.cluster_id == cluster.pk and entry.created_at >= cluster.created_at:
            own.append(row)
            continue
        target = current.get(entry.cluster_id)
        if entry.cluster_id is None:
            row["about"] = {"text": "the image"}
        elif target is not None and entry.created_at >= target.created_at:
            row["about"] = {"text": f"cluster #{target.pk}", "url": reverse("review:cluster", args=[target.pk])}
        else:
            row["about"] = {"text": f"cluster #{entry.cluster_id}, since replaced by a recomputed consensus"}
        history.append(row)
    return own, history


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
    member_boxes = {m["box"] for m in cluster.members}
    member_by_expert = {m["expert"]: m for m in cluster.members}
    font = max(image.width, image.height) / 55
    experts, boxes = [], []
    for index, annotation in enumerate(annotations, start=1):
        colour = EXPERT_COLOURS[(index - 1) % len(EXPERT_COLOURS)]
        member = member_by_expert.get(annotation.annotator_id)
        own_boxes = list(annotation.boxes.all())
        experts.append({
            "index": index,
            "colour": colour,
            "user": annotation.annotator,
            "name": annotation.annotator.get_full_name() or annotation.annotator.get_username(),
            "label": member["label"] if member else None,
            "boxes": len(own_boxes),
            "origin": annotation.get_origin_display(),
        })
        for b in own_boxes:
            boxes.append({"expert": index, "colour": colour, "label": b.label, "member": b.pk in member_boxes,
                          "x": b.x, "y": b.y, "w": b.width, "h": b.height, "text": f"E{index} {b.label}",
                          "title": f"E{index} ({experts[-1]['name']}): {b.label}"})
    # draw the cluster's members last, so that they are on top, in expert order
    boxes.sort(key=lambda b: (b["member"], b["expert"]))
    cluster_box = cluster.as_box()
    predictions = []
    for p in selectors.image_predictions(image):
        overlap = iou(cluster_box, p.as_box())
        if overlap >= MODEL_IOU:
            predictions.append({"label": p.label, "score": p.score, "iou": overlap, "model": p.model_version,
                                "x": p.x, "y": p.y, "w": p.width, "h": p.height,
                                "text": f"model {p.label}" + (f" {p.score:.2f}" if p.score is not None else "")})
    region = _close_up(cluster, image.width, image.height)
    pad = font * 0.35
    close_font = max(region["w"], region["h"]) / 38
    vote_counts = dict.fromkeys(BETHESDA, 0)
    for m in cluster.members:
        vote_counts[m["label"]] += 1
    votes = [{"label": lab, "share": float(cluster.votes[i]) if i < len(cluster.votes) else 0.0,
              "count": vote_counts[lab], "hotkey": i + 1, "description": DESCRIPTIONS[lab]}
             for i, lab in enumerate(BETHESDA)]
    for v in votes:
        v["percent"] = round(100 * v["share"], 1)
    others = [c for c in selectors.image_clusters(image) if c.pk != cluster.pk]
    audit, history = _audit_rows(cluster, others)
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
        "full": _layer(boxes, predictions, cluster, font=font, width=image.width, height=image.height),
        "close": _layer(boxes, predictions, cluster, font=close_font, width=image.width, height=image.height),
        "highlight": {"x": max(0.0, cluster.x - pad), "y": max(0.0, cluster.y - pad),
                      "w": min(cluster.width + 2 * pad, image.width - max(0.0, cluster.x - pad)),
                      "h": min(cluster.height + 2 * pad, image.height - max(0.0, cluster.y - pad))},
        "region": region,
        "handle": max(region["w"], region["h"]) / 70,
        "predictions": predictions,
        "votes": votes,
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


def _confirmed(request, cluster, decision: review_decisions.Decision) -> None:
    """Raise NeedsConfirmation unless ``decision`` needs none or was posted with the token of
    the statement it needs (see annotation.review_decisions). A reviewer who may not decide on
    this image is not asked: the service refuses them."""
    if not settings.REVIEWERS_MAY_RESOLVE_OWN_IMAGES and selectors.reviewer_annotated(cluster.image, request.user):
        return
    facts = _facts(cluster)
    statement = review_decisions.confirmation(facts, decision)
    if statement is None:
        return
    expected = review_decisions.token(facts, decision)
    if request.POST.get("confirm", "") != expected:
        raise NeedsConfirmation(statement, expected)


def _decide(request, cluster) -> str:
    """Run the one service the posted action asks for; returns what was done, in words.

    Raises ReviewRefused / AnnotationRejected (the services' refusals) or ValueError (a form
    that cannot be read) without changing anything."""
    action = request.POST.get("action", "")
    note = request.POST.get("note", "").strip()
    reviewer = request.user
    if action == "label":
        label = request.POST.get("label", "")
        if label not in BETHESDA:
            raise ValueError("Choose one of the six Bethesda classes.")
        _confirmed(request, cluster, review_decisions.Decision("label", label))
        services.resolve_cluster(cluster=cluster, reviewer=reviewer, label=label, comment=note)
        return f"resolved as {label}"
    if action == "box":
        label = request.POST.get("label", "") or cluster.label
        try:
            numbers = [float(request.POST.get(k, "")) for k in ("x", "y", "width", "height")]
        except ValueError:
            raise ValueError("The box needs four numbers: x, y, width and height (in image pixels).") from None
        if not all(math.isfinite(n) for n in numbers):
            raise ValueError("The box's x, y, width and height must be finite numbers.")
        if label not in BETHESDA:
            raise ValueError("Choose one of the six Bethesda classes.")
        _confirmed(request, cluster, review_decisions.Decision("box", label, tuple(numbers)))
        services.resolve_cluster(cluster=cluster, reviewer=reviewer, label=label,
                                 box=Box(*numbers, label=label), comment=note)
        return f"resolved with an adjusted box as {label}"
    if action == "reject":
        _confirmed(request, cluster, review_decisions.Decision("reject"))
        services.reject_cluster(cluster=cluster, reviewer=reviewer, comment=note)
        return "rejected (not a lesion)"
    if action == "expert":
        assignment = services.request_another_expert(image=cluster.image, reviewer=reviewer, comment=note,
                                                     cluster=cluster)
        return (f"sent to one more expert ({assignment.annotator.get_username()}), held for them until "
                f"{format_when(assignment.expires_at)}; after that any pathologist who has not annotated "
                "it may take it")
    if action == "comment":
        services.comment_on_cluster(cluster=cluster, reviewer=reviewer, text=request.POST.get("text", ""))
        return "commented"
    raise ValueError("Unknown action.")


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
    width, height = 760, 240
    left, right, top, bottom = 52, 16, 14, 42
    inner_w, inner_h = width - left - right, height - top - bottom
    n = len(points)
    step = inner_w / max(n - 1, 1)
    out = []
    for i, p in enumerate(points):
        x = left + (i * step if n > 1 else inner_w / 2)
        y = top + (1.0 - p["share"]) * inner_h
        label = p["start"].strftime("%d %b") if series["unit"] == "day" else "wk " + p["start"].strftime("%d %b")
        out.append({**p, "x": x, "y": y, "label": label, "percent": round(100 * p["share"]), "value_y": y - 10})
    every = max(1, math.ceil(n / 10))
    ticks = [{"y": top + (1 - v / 100) * inner_h, "text": f"{v}%"} for v in (0, 25, 50, 75, 100)]
    for t in ticks:
        t["text_y"] = t["y"] + 4
    return {
        "width": width, "height": height, "left": left, "right": width - right, "top": top,
        "bottom": top + inner_h, "label_x": left - 8, "xlabel_y": top + inner_h + 20, "points": out, "xlabels": [p for i, p in enumerate(out) if i % every == 0],
        "ticks": ticks, "path": " ".join(f"{'M' if i == 0 else 'L'}{p['x']:.1f},{p['y']:.1f}" for i, p in enumerate(out)),
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
    links = [{"text": d.name, "count": d.cluster_count, "url": base + _query(dataset=d.name),
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
