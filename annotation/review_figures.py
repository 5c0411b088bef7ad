"""What the review page draws and lists, built from the rows the view read: the image overlay
(every expert's boxes with their tags, the model's opinion, the close-up region), the vote table
and the audit trail split into this cluster's rows and the image's history.

The charts of the agreement dashboard are not here (they stay with the dashboard view).
"""

from __future__ import annotations

from datetime import datetime

from django.urls import reverse

from annotation import selectors
from annotation.bethesda import BETHESDA, DESCRIPTIONS
from annotation.geometry import iou
from cytoloop.templatetags.cytoloop_dates import format_when

#: Experts' colours on the overlay: bright on a stained smear, distinct from one another.
EXPERT_COLOURS = ("#22d3ee", "#facc15", "#f472b6", "#a3e635", "#60a5fa", "#fb923c", "#c084fc", "#f8fafc")
#: A model prediction is the model's opinion on a cluster when it overlaps it by this IoU.
MODEL_IOU = 0.3


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


def layer(expert_boxes: list[dict], predictions: list[dict], cluster, *, font: float, width: int, height: int) -> dict:
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


def close_up(cluster, width: int, height: int) -> dict:
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


def audit_rows(cluster, others) -> tuple[list[dict], list[dict]]:
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


def expert_overlay(annotations, cluster) -> tuple[list[dict], list[dict]]:
    """The experts (numbered E1.. in the order given, each with a colour and the label they gave
    the cluster) and every box they drew, the cluster's members last (drawn on top)."""
    member_boxes = {m["box"] for m in cluster.members}
    member_by_expert = {m["expert"]: m for m in cluster.members}
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
    return experts, boxes


def model_opinions(cluster, predictions) -> list[dict]:
    """The model's predictions that overlap the cluster by MODEL_IOU or more."""
    cluster_box = cluster.as_box()
    out = []
    for p in predictions:
        overlap = iou(cluster_box, p.as_box())
        if overlap >= MODEL_IOU:
            out.append({"label": p.label, "score": p.score, "iou": overlap, "model": p.model_version,
                        "x": p.x, "y": p.y, "w": p.width, "h": p.height,
                        "text": f"model {p.label}" + (f" {p.score:.2f}" if p.score is not None else "")})
    return out


def vote_rows(cluster) -> list[dict]:
    """One row per Bethesda class: its vote share (and percent), how many experts gave it, its hotkey."""
    vote_counts = dict.fromkeys(BETHESDA, 0)
    for m in cluster.members:
        vote_counts[m["label"]] += 1
    votes = [{"label": lab, "share": float(cluster.votes[i]) if i < len(cluster.votes) else 0.0,
              "count": vote_counts[lab], "hotkey": i + 1, "description": DESCRIPTIONS[lab]}
             for i, lab in enumerate(BETHESDA)]
    for v in votes:
        v["percent"] = round(100 * v["share"], 1)
    return votes
